"""A Haiku model: hk.transform gives pure init/apply functions; plan the step over params."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")  # 8 fake devices

import haiku as hk  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import shardsearch as ss  # noqa: E402

net = hk.without_apply_rng(hk.transform(lambda x: hk.nets.MLP([256, 256, 64])(x)))
optimizer = optax.sgd(0.05, momentum=0.9)


def train_step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(lambda p: jnp.mean((net.apply(p, x) - y) ** 2))(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


x = jax.random.normal(jax.random.PRNGKey(1), (256, 64))
y = jnp.sin(x)
params = net.init(jax.random.PRNGKey(0), x)  # {'mlp/~/linear_0': {'w': ..., 'b': ...}, ...}
opt_state = optimizer.init(params)

step = ss.auto(train_step, mesh=(2, 4))
plan = step.plan_for(params, opt_state, x, y)
print(plan.summary().splitlines()[2])
print(plan.partition_spec_source(0, name="param_specs"))  # the layouts as code to paste
new_params, _, loss = step(params, opt_state, x, y)
want = jax.jit(train_step)(params, opt_state, x, y)
for got, ref in zip(jax.tree_util.tree_leaves(new_params), jax.tree_util.tree_leaves(want[0])):
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
print(f"loss {float(loss):.4f}, matches jax.jit")
