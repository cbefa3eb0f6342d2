"""An Equinox model: partition it into arrays and the rest, plan the step over the arrays."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")  # 8 fake devices

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import shardsearch as ss  # noqa: E402

model = eqx.nn.MLP(in_size=64, out_size=64, width_size=256, depth=2, key=jax.random.PRNGKey(0))
params, static = eqx.partition(model, eqx.is_array)  # arrays (a pytree) and everything else
optimizer = optax.sgd(0.05, momentum=0.9)


def train_step(params, opt_state, x, y):
    def loss_fn(p):
        net = eqx.combine(p, static)
        return jnp.mean((jax.vmap(net)(x) - y) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return eqx.apply_updates(params, updates), opt_state, loss


x = jax.random.normal(jax.random.PRNGKey(1), (256, 64))
y = jnp.sin(x)
opt_state = optimizer.init(params)

step = ss.auto(train_step, mesh=(2, 4))
print(step.plan_for(params, opt_state, x, y).summary().splitlines()[2])
new_params, _, loss = step(params, opt_state, x, y)
want = jax.jit(train_step)(params, opt_state, x, y)
for got, ref in zip(jax.tree_util.tree_leaves(new_params), jax.tree_util.tree_leaves(want[0])):
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
model = eqx.combine(new_params, static)  # the trained module
print(f"loss {float(loss):.4f}, matches jax.jit")
