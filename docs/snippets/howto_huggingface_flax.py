"""A Hugging Face Flax model (transformers' Flax classes; no weights downloaded: a small
config built here), fine-tuned for classification."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")  # 8 fake devices

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from transformers import BertConfig, FlaxBertForSequenceClassification  # noqa: E402

import shardsearch as ss  # noqa: E402

config = BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=256, max_position_embeddings=64, num_labels=3)
model = FlaxBertForSequenceClassification(config, seed=0)  # or .from_pretrained("...")
optimizer = optax.adam(1e-3)


def train_step(params, opt_state, input_ids, labels):
    def loss_fn(p):
        logits = model(input_ids, params=p, train=False).logits  # a pure function of p
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


input_ids = jax.random.randint(jax.random.PRNGKey(1), (16, 32), 0, config.vocab_size)
labels = jax.random.randint(jax.random.PRNGKey(2), (16,), 0, config.num_labels)
params = model.params
opt_state = optimizer.init(params)

step = ss.auto(train_step, mesh=(2, 4))
print(step.plan_for(params, opt_state, input_ids, labels).summary().splitlines()[2])
_, _, loss = step(params, opt_state, input_ids, labels)
want = jax.jit(train_step)(params, opt_state, input_ids, labels)
np.testing.assert_allclose(loss, want[2], rtol=1e-4)  # Adam: compare losses
print(f"loss {float(loss):.4f}, matches jax.jit")
