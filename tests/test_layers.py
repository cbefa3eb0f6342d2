"""Layer units: the forward pass cut into stage grains from the program's structure."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import shardsearch as ss  # noqa: E402
from models import gpt  # noqa: E402
from shardsearch.pipeline.layers import allowed_cuts, layer_units  # noqa: E402
from shardsearch.trace import trace  # noqa: E402

RESIDUAL = gpt.BATCH * gpt.SEQ * gpt.WIDTH * 4  # one float32 activation of the residual stream


def _boundaries(units):
    return [u.start for u in units.units[1:]]


@pytest.mark.parametrize("scan", [False, True])
def test_gpt_layers_are_units_cut_at_the_residual_stream(scan):
    case = gpt.make(layers=4, scan=scan)
    graph = trace(case.train_step, case.args)
    units = layer_units(graph)
    assert units.source == ("scan" if scan else "repeats")
    layers = [u for u in units.units if u.kind == 0]
    assert len(layers) == 4  # the embedding before, the final norm and loss after
    assert len(units) == 6
    if scan:
        assert [u.iteration for u in layers] == [0, 1, 2, 3]
    else:
        assert len({u.stop - u.start for u in layers}) == 1
    # between layers only the residual stream crosses (not the attention or MLP insides)
    assert units.cut_bytes == (RESIDUAL,) * 5


def _mlp_step(widths, marker_after=(), remat=False):
    def loss(params, batch):
        h = batch["x"]
        for i, w in enumerate(params):
            layer = lambda h, w: jnp.tanh(h @ w)  # noqa: E731
            h = (jax.checkpoint(layer) if remat else layer)(h, w)
            if i in marker_after:
                h = ss.stage_boundary(h)
        return jnp.mean((h - batch["y"]) ** 2)

    opt = optax.sgd(0.1, momentum=0.9)

    def step(params, state, batch):
        l, g = jax.value_and_grad(loss)(params, batch)
        upd, state = opt.update(g, state, params)
        return optax.apply_updates(params, upd), state, l

    keys = jax.random.split(jax.random.PRNGKey(0), len(widths))
    params = [jax.random.normal(k, (a, b)) * 0.3 for k, (a, b) in zip(keys, zip(widths[:-1], widths[1:]))]
    batch = {"x": jnp.ones((8, widths[0])), "y": jnp.zeros((8, widths[-1]))}
    return step, (params, opt.init(params), batch)


def test_marker_cuts_after_each_marked_value_and_nowhere_else():
    step, args = _mlp_step([16, 32, 32, 32, 32, 16], marker_after=(1, 3))
    graph = trace(step, args)
    units = layer_units(graph)
    assert units.source == "marker" and len(units) == 3
    names = [n.id for n in graph.nodes if n.primitive == "name"]
    assert _boundaries(units) == [i + 1 for i in names[:2]]
    assert units.cut_bytes == (8 * 32 * 4,) * 2


def test_marker_is_planned_and_keeps_numerics():
    step, args = _mlp_step([16, 32, 32, 16], marker_after=(0,))
    auto = ss.auto(step, mesh=(8,), time_limit_s=10)
    plan = auto.plan_for(*args)
    assert not plan.fallback  # the marker is an identity with a strategy rule
    got, want = auto(*args), jax.jit(step)(*args)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_no_structure_balances_and_cuts_where_few_bytes_cross():
    # wide, narrow, wide: the narrow activation (4 columns) is where a cut should go
    step, args = _mlp_step([64, 256, 4, 256, 64, 96, 48])
    graph = trace(step, args)
    units = layer_units(graph)
    assert units.source == "balanced" and len(units) >= 2
    assert min(units.cut_bytes) == 8 * 4 * 4


def test_cuts_never_split_a_remat_region():
    step, args = _mlp_step([32] * 7, remat=True)
    graph = trace(step, args)
    assert graph.remats
    units = layer_units(graph)
    assert len(units) >= 6
    for c in _boundaries(units):
        for region in graph.regions:
            assert not (min(region.members) < c <= max(region.members))
    ok = allowed_cuts(graph, units.units[-1].stop - 1)
    assert all(ok[c] for c in _boundaries(units))
