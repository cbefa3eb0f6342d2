"""A Flax linen CNN with BatchNorm, trained on 8 fake CPU devices with shardsearch."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")  # 8 fake devices

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import shardsearch as ss  # noqa: E402


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(16, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)  # running stats live in "batch_stats"
        x = nn.relu(x).mean(axis=(1, 2))
        return nn.Dense(10)(x)


model = CNN()
optimizer = optax.sgd(0.1, momentum=0.9)


def train_step(params, batch_stats, opt_state, images, labels):
    def loss_fn(p):
        logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, images, train=True,
                                      mutable=["batch_stats"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    # every returned state comes back in its argument's layout, ready for the next step
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss


images = jax.random.normal(jax.random.PRNGKey(0), (32, 16, 16, 3))
labels = jax.random.randint(jax.random.PRNGKey(1), (32,), 0, 10)
variables = model.init(jax.random.PRNGKey(2), images, train=False)
params, batch_stats = variables["params"], variables["batch_stats"]
opt_state = optimizer.init(params)

step = ss.auto(train_step, mesh=(2, 4), cluster="h100-8")  # mesh axes "data" and "model"
plan = step.plan_for(params, batch_stats, opt_state, images, labels)
print(plan.summary().splitlines()[2])  # the verdict in words: which parallelism, over which axes

new_params, new_stats, _, loss = step(params, batch_stats, opt_state, images, labels)
want = jax.jit(train_step)(params, batch_stats, opt_state, images, labels)  # the same step, one device
for got, ref in zip(jax.tree_util.tree_leaves((new_params, new_stats)), jax.tree_util.tree_leaves(want[:2])):
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
print(f"loss {float(loss):.4f}, matches jax.jit")
