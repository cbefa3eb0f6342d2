"""A Flax NNX model: split it into a graph definition and a State pytree, plan the step
over the State, merge it back when you need the module."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")  # 8 fake devices

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import shardsearch as ss  # noqa: E402


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.up = nnx.Linear(64, 256, rngs=rngs)
        self.down = nnx.Linear(256, 64, rngs=rngs)

    def __call__(self, x):
        return self.down(jax.nn.gelu(self.up(x)))


graphdef, state = nnx.split(MLP(nnx.Rngs(0)))  # state: an nnx.State, a pytree of arrays
optimizer = optax.adam(1e-3)


def train_step(state, opt_state, x, y):
    def loss_fn(s):
        return jnp.mean((nnx.merge(graphdef, s)(x) - y) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state)
    updates, opt_state = optimizer.update(grads, opt_state, state)
    return optax.apply_updates(state, updates), opt_state, loss


x = jax.random.normal(jax.random.PRNGKey(1), (128, 64))
y = jnp.tanh(x)
opt_state = optimizer.init(state)

# NNX leaves end in `.value`: a pin names the path with it (or matches it with a regex).
pins = {r"\[0\]\['up'\]\['kernel'\]\.value": P(None, "model")}
step = ss.auto(train_step, mesh=(2, 4), pins=pins)
plan = step.plan_for(state, opt_state, x, y)
print(plan.summary().splitlines()[2])
print([p for p in plan.in_paths if p.startswith("args[0]")])  # args[0]['up']['kernel'].value, ...

# The parameters' layouts as rules you can apply to any State of this model:
rules = plan.sharding_rules(0)
state_shardings = ss.apply_rules(state, rules, jax.make_mesh((2, 4), ("data", "model")))

new_state, _, loss = step(state, opt_state, x, y)
want = jax.jit(train_step)(state, opt_state, x, y)
np.testing.assert_allclose(loss, want[2], rtol=1e-4)
model = nnx.merge(graphdef, new_state)  # back to a module, its arrays sharded as planned
print(f"loss {float(loss):.4f}, matches jax.jit; up.kernel sharding {model.up.kernel[...].sharding.spec}")
