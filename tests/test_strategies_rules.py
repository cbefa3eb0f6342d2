"""Strategy rules added so that no primitive of a training step is left replicated by default.

Each rule is checked the way tests/test_strategies_more.py checks the older ones: every
strategy runs on every device of a fake mesh, from its local blocks plus its collectives,
and each device must end with its block of what the unsharded equation computes.
"""

import jax.numpy as jnp
import pytest

from shardsearch.strategies import strategies_for
from test_strategies_more import MESHES, simulate, traced

V = jnp.zeros((8, 6, 12, 4))


def _whole_dims(strats, which: str):
    """Dims of the given side ('in' / 'out') that some strategy splits."""
    return {d for s in strats for spec in getattr(s, f"{which}_specs") for d, axes in enumerate(spec) if axes}


_layout_cases = {
    "stack axis 0": ("stack", lambda x: jnp.stack([x, 2 * x, x + 1]), {0}),
    "stack axis 2": ("stack", lambda x: jnp.stack([x, 2 * x], axis=2), {2}),
    "stack last": ("stack", lambda x: jnp.stack([x, -x], axis=-1), {4}),
    "unstack axis 1": ("unstack", lambda x: jnp.unstack(x, axis=1), None),
    "unstack last": ("unstack", lambda x: jnp.unstack(x, axis=-1), None),
    "tile": ("tile", lambda x: jnp.tile(x, (1, 2, 1, 3)), {1, 3}),
}


@pytest.mark.parametrize("mesh", MESHES)
@pytest.mark.parametrize("case", sorted(_layout_cases))
def test_stack_unstack_tile_blocks(case, mesh):
    prim, f, whole_out = _layout_cases[case]
    op, e = traced(prim, f, V)
    strats = simulate(op, e, mesh)
    assert len(strats) > 1
    if whole_out is not None:
        assert not _whole_dims(strats, "out") & whole_out
    if prim == "unstack":  # the unstacked dim stays whole, every other (even) dim splits
        axis = e.params["axis"] % 4
        assert axis not in _whole_dims(strats, "in")
        if mesh.size == 8:
            assert _whole_dims(strats, "in") == {0, 1, 2, 3} - {axis}


def test_stack_then_unstack_round_trip_keeps_the_batch_split():
    """Rotary embeddings stack the rotated halves and unstack them later: a data-parallel
    layout passes through both without being gathered."""
    mesh = MESHES[0]
    op, _ = traced("stack", lambda x: jnp.stack([x, x], axis=-1), V)
    dp = ((("data",),) + ((),) * 3)
    assert any(s.in_specs == (dp, dp) and s.out_specs == (dp + ((),),) for s in strategies_for(op, mesh)[0])
    op, _ = traced("unstack", lambda x: jnp.unstack(x, axis=-1), jnp.zeros((8, 6, 12, 4, 2)))
    assert any(s.in_specs == (dp + ((),),) and s.out_specs == (dp, dp) for s in strategies_for(op, mesh)[0])
