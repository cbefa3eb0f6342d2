"""Gradient accumulation: the same step over 4 microbatches of the batch, in one program."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")  # 8 fake devices

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import shardsearch as ss  # noqa: E402

optimizer = optax.sgd(0.1, momentum=0.9)


def train_step(params, opt_state, x, y):
    def loss_fn(p):
        h = jax.nn.relu(x @ p["w1"])
        return jnp.mean((h @ p["w2"] - y) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
params = {"w1": jax.random.normal(k1, (64, 256)) / 8, "w2": jax.random.normal(k2, (256, 64)) / 16}
opt_state = optimizer.init(params)
x = jax.random.normal(k3, (128, 64))
y = jnp.sin(x)

# The batch is cut into 4 microbatches of 32 rows; their gradients are summed in a loop
# inside the step, so the activations of one microbatch are live at a time.
step = ss.auto(train_step, mesh=(2, 4), num_microbatches=4)
plan = step.plan_for(params, opt_state, x, y)
print(plan.pipeline.describe())  # "gradient accumulation: 4 microbatches of 32 rows ..."

new_params, _, loss = step(params, opt_state, x, y)
want = jax.jit(train_step)(params, opt_state, x, y)
for got, ref in zip(jax.tree_util.tree_leaves(new_params), jax.tree_util.tree_leaves(want[0])):
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
print(f"loss {float(loss):.4f}, matches jax.jit")
