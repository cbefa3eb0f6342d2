"""Pins, plan files and checkpoints on the MLP of the getting-started page."""

import os
import sys
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")  # 8 fake devices
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))  # the repository's examples/

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import shardsearch as ss  # noqa: E402
from examples.train_mlp import init_mlp, make_train_step  # noqa: E402

optimizer = optax.adam(1e-3)
train_step = make_train_step(optimizer)
params = init_mlp(jax.random.PRNGKey(0), [256] * 4)
opt_state = optimizer.init(params)
x = jax.random.normal(jax.random.PRNGKey(1), (512, 256))
batch = (x, np.tanh(x))
folder = tempfile.mkdtemp()

# Pins: fix some layouts (a keystr path of the argument tuple, or a regex over such paths);
# the search completes the rest around them.
pins = {"[0][0]['w']": P(None, "model"), r"\[2\]\[.\]": P("data")}
step = ss.auto(train_step, mesh=(2, 4), pins=pins, donate_argnums=(0, 1))
plan = step.plan_for(params, opt_state, batch)
assert dict(zip(plan.in_paths, plan.flat_in_specs))["args[0][0]['w']"] == ((), ("model",))

# Plan files: save once, apply anywhere without searching again.
plan.save(os.path.join(folder, "plan.json"))
same = ss.Plan.load(os.path.join(folder, "plan.json")).apply(train_step, donate_argnums=(0, 1))
params, opt_state, loss = same(params, opt_state, batch)

# Checkpoints: save the sharded state; restore it laid out by another plan (another mesh).
ss.save_checkpoint(os.path.join(folder, "ckpt"), (params, opt_state))
step_4x2 = ss.auto(train_step, mesh=(4, 2))
plan_4x2 = step_4x2.plan_for(params, opt_state, batch)
params, opt_state = ss.restore_checkpoint(os.path.join(folder, "ckpt"), (params, opt_state), plan=plan_4x2,
                                          argnum=(0, 1))
params, opt_state, loss = step_4x2(params, opt_state, batch)
print(f"loss after a step on the 4x2 mesh: {float(loss):.4f}")
