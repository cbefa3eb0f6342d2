"""A sharded step computes what plain jax.jit computes (3 steps, float32, 1e-4 relative)."""

import jax
import numpy as np
import optax
import pytest

import shardsearch as ss
from cost_model import Cluster
from helpers import assert_trees_close, concrete_mlp_args, make_train_step

# Compute so slow next to the links that even small shapes are worth splitting:
# the plans below really shard, so the comparison is not between two replicated runs.
SLOW_COMPUTE = Cluster.from_dict(
    {
        "name": "slow-compute",
        "devices_per_node": 8,
        "peak_flops": 1e9,
        "memory_bytes": 16e9,
        "hbm_bandwidth": 1e9,
        "intra_node": {"bandwidth": 1e11, "latency": 1e-7},
        "inter_node": {"bandwidth": 1e10, "latency": 1e-6},
    }
)


def run_steps(step, params, opt_state, batch, n=3):
    losses = []
    for _ in range(n):
        params, opt_state, loss = step(params, opt_state, batch)
        losses.append(float(loss))
    return params, opt_state, np.array(losses)


@pytest.mark.parametrize(
    "mesh,batch,hidden,cluster",
    [
        ((8,), 64, 32, SLOW_COMPUTE),
        ((4, 1), 64, 32, SLOW_COMPUTE),
        ((1, 4), 16, 64, SLOW_COMPUTE),
        ((2, 4), 64, 64, SLOW_COMPUTE),
        ((2, 4), 256, 128, "h100-8"),
        ((2, 4), 512, 256, "2x4-slow"),
    ],
)
def test_sharded_steps_match_jit(mesh, batch, hidden, cluster):
    optimizer = optax.adam(1e-3)
    train_step = make_train_step(optimizer)
    args = concrete_mlp_args(batch, hidden, optimizer=optimizer)
    step = ss.auto(train_step, mesh=mesh, cluster=cluster)
    plan = step.plan_for(*args)
    if cluster is SLOW_COMPUTE:
        assert any(any(d) for d in plan.flat_in_specs), "expected a plan that splits something"
    got = run_steps(step, *args)
    want = run_steps(jax.jit(train_step), *args)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-4)  # losses
    assert_trees_close(got[0], want[0])  # params
    assert_trees_close(got[1], want[1])  # optimizer state
    assert got[2][-1] < got[2][0]  # and it trains


def test_explicit_axes_mesh_from_make_mesh():
    """jax.make_mesh gives Explicit axes; shardsearch must cope."""
    optimizer = optax.sgd(0.1)
    train_step = make_train_step(optimizer)
    args = concrete_mlp_args(64, 32, layers=2, optimizer=optimizer)
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    got = run_steps(ss.auto(train_step, mesh=mesh, cluster=SLOW_COMPUTE), *args)
    want = run_steps(jax.jit(train_step), *args)
    assert_trees_close(got[0], want[0])
    np.testing.assert_allclose(got[2], want[2], rtol=1e-4)


def test_donated_arguments_still_match():
    optimizer = optax.adam(1e-3)
    train_step = make_train_step(optimizer)
    args = concrete_mlp_args(64, 32, layers=3, optimizer=optimizer)
    want = run_steps(jax.jit(train_step), *args)
    step = ss.auto(train_step, mesh=(2, 4), cluster=SLOW_COMPUTE, donate_argnums=(0, 1))
    got = run_steps(step, *args)
    assert_trees_close(got[0], want[0])
    np.testing.assert_allclose(got[2], want[2], rtol=1e-4)
