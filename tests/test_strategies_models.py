"""Strategy rules that the real models of tests/models/ need (issue 4): dropout bits,
bitcasts, and the attention / normalization patterns of Flax and Equinox layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import shardsearch as ss
from shardsearch.graph import NodeKind
from shardsearch.strategies import strategies_for
from shardsearch.strategies.per_node import _op_view
from shardsearch.trace import trace
from test_numerics import SLOW_COMPUTE
from test_strategies import MESH
from test_strategies_more import MESHES, simulate, traced

D, M = ("data",), ("model",)


def traced_views(f, *args, prim):
    """(OpView, node) of every ``prim`` node of shardsearch's own trace of ``f``."""
    g = trace(f, args)
    return [(_op_view(g, n), n) for n in g.nodes if n.kind is NodeKind.OP and n.primitive == prim]


# ---- dropout: random bits and the bitcast that turns them into floats -----------------------

def _dropout_mask(key, x):
    return jax.random.bernoulli(key, 0.9, x.shape) * x


def test_partitionable_random_bits_split_the_generated_dims():
    [(op, _)] = traced_views(_dropout_mask, jax.random.PRNGKey(0), jnp.zeros((8, 16, 32)), prim="random_bits")
    strats, ruled = strategies_for(op, MESH)
    outs = {s.out_specs[0] for s in strats}
    assert ruled and ((D, M, ()) in outs and ((), (), ("data", "model")) in outs)
    assert all(s.in_specs == ((),) and not s.collectives for s in strats)  # one key, whole on every device


def test_random_bits_stay_whole_when_jax_draws_them_sequentially():
    with jax.threefry_partitionable(False):
        [(op, _)] = traced_views(_dropout_mask, jax.random.PRNGKey(0), jnp.zeros((8, 16)), prim="random_bits")
    assert len(strategies_for(op, MESH)[0]) == 1


def test_dropout_step_splits_its_bits_and_matches_jit():
    def step(w, x, key):
        return jnp.sum(_dropout_mask(key, jnp.tanh(x @ w)) ** 2)

    args = (jax.random.normal(jax.random.PRNGKey(1), (64, 64)), jax.random.normal(jax.random.PRNGKey(2), (128, 64)),
            jax.random.PRNGKey(3))
    auto = ss.auto(step, mesh=(2, 4), cluster=SLOW_COMPUTE)
    plan = auto.plan_for(*args)
    bits = [i for i, p in plan.node_primitive.items() if p == "random_bits"]
    assert bits and all(any(plan.node_out_specs[i][0]) for i in bits), plan.summary()
    np.testing.assert_allclose(float(auto(*args)), float(jax.jit(step)(*args)), rtol=1e-5)


@pytest.mark.parametrize("mesh", MESHES[:2])
@pytest.mark.parametrize("new,shape", [(jnp.float32, (8, 12)), (jnp.uint8, (8, 12)), (jnp.uint32, (8, 12, 4))])
def test_bitcast_convert_type(new, shape, mesh):
    old = jnp.uint8 if len(shape) == 3 else jnp.uint32
    op, e = traced("bitcast_convert_type", lambda x: jax.lax.bitcast_convert_type(x, new), jnp.zeros(shape, old))
    strats = simulate(op, e, mesh)
    assert len(strats) > 2
    for s in strats:  # the bytes of one wide element stay together
        for spec in s.in_specs + s.out_specs:
            assert len(spec) == 2 or not spec[2], s.name
