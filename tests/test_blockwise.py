"""Operators XLA's partitioner replicates (apply/blockwise.py) run on each device's block.

``lax.top_k`` lowers to a TopK custom call that XLA's SPMD partitioner does not split:
without the shard_map, a batch-split operand is all-gathered and every device sorts the
whole tensor, which the plan never priced.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

import shardsearch as ss
from test_numerics import SLOW_COMPUTE


def _route(x, w):
    gates, experts = jax.lax.top_k(jax.nn.softmax(x @ w, axis=-1), 2)
    return gates.sum(-1), experts


def test_batch_split_top_k_runs_blockwise_without_a_gather():
    x = jax.random.normal(jax.random.key(0), (16, 8, 32))
    w = jax.random.normal(jax.random.key(1), (32, 8))
    step = ss.auto(_route, mesh=(2, 4), cluster=SLOW_COMPUTE, pins={"[0]": P(("data", "model")), "[1]": P()})
    plan = step.plan_for(x, w)
    (top_k,) = [n for n, p in plan.node_primitive.items() if p == "top_k"]
    assert plan.node_out_specs[top_k][0][0] == ("data", "model")  # planned on each device's block
    hlo = step.lower(x, w).compile().as_text()
    assert "all-gather" not in hlo and "TopK" in hlo
    got, want = step(x, w), jax.jit(_route)(x, w)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    np.testing.assert_array_equal(got[1], want[1])
