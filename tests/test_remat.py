"""jax.checkpoint regions are inlined for planning and re-run as checkpoints: the
compiled step recomputes them in the backward pass as plain jax.jit would."""

import jax
import jax.numpy as jnp
import numpy as np

import shardsearch as ss
from shardsearch.trace import trace
from test_numerics import SLOW_COMPUTE


def _layer(x, w):
    return jnp.tanh(jnp.tanh(x @ w) @ w)


def _unrolled(ws, x):
    for w in ws:
        x = jax.checkpoint(_layer)(x, w)
    return jnp.sum(x**2)


def _scanned(ws, x):
    x, _ = jax.lax.scan(lambda x, w: (jax.checkpoint(_layer)(x, w), None), x, ws)
    return jnp.sum(x**2)


def _check(loss, ws, x, barriers=None):
    grad = jax.grad(loss)
    assert trace(grad, (ws, x)).remats  # the regions are seen
    step = ss.auto(grad, mesh=(2, 4), cluster=SLOW_COMPUTE, cache=False)
    ours, ref = step.lower(ws, x).as_text(), jax.jit(grad).lower(ws, x).as_text()
    # the recomputation is kept: as many barriers against CSE as plain jit emits
    assert ours.count("optimization_barrier") == ref.count("optimization_barrier")
    if barriers is not None:
        assert ref.count("optimization_barrier") == barriers
    got, want = step(ws, x), jax.jit(grad)(ws, x)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_checkpointed_layers_are_recomputed_after_sharding():
    ws = [jnp.eye(64) * 0.5 + 0.01 * i for i in range(3)]
    _check(_unrolled, ws, jnp.ones((32, 64)), barriers=3)  # one per backward layer


def test_checkpoint_inside_a_scan():
    ws = jnp.stack([jnp.eye(64) * 0.5 + 0.01 * i for i in range(3)])
    _check(_scanned, ws, jnp.ones((32, 64)))
