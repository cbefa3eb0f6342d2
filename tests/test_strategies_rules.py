"""Strategy rules added so that no primitive of a training step is left replicated by default.

Each rule is checked the way tests/test_strategies_more.py checks the older ones: every
strategy runs on every device of a fake mesh, from its local blocks plus its collectives,
and each device must end with its block of what the unsharded equation computes.
"""

import jax
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


# ---- ragged_dot_general: the forward pass and both gradients ------------------------------------

def _ragged(x, w, sizes):
    return jax.lax.ragged_dot(x, w, sizes)


@pytest.mark.parametrize("mesh", MESHES)
@pytest.mark.parametrize("mode", ["non-contracting", "contracting", "lhs gradient"])
def test_ragged_dot_blocks(mode, mesh):
    x, w, sizes = jnp.zeros((12, 8)), jnp.zeros((3, 8, 6)), jnp.array([5, 0, 7], jnp.int32)
    grads = jax.grad(lambda x, w: _ragged(x, w, sizes).sum(), argnums=(0, 1))
    f, which = {"non-contracting": (lambda x, w: _ragged(x, w, sizes), 0), "contracting": (grads, 1),
                "lhs gradient": (grads, 2)}[mode]
    op, e = traced("ragged_dot_general", f, x, w, which=which)
    op, e = _with_group_sizes(op, e, sizes)
    strats = simulate(op, e, mesh)
    rdn = op.params["ragged_dot_dimension_numbers"]
    (ragged,) = rdn.lhs_ragged_dimensions
    for s in strats:  # the ragged dim, the groups and their sizes never split
        assert not s.in_specs[0][ragged] and not any(s.in_specs[2])
        assert all(not s.in_specs[1][g] for g in rdn.rhs_group_dimensions)
    assert len(strats) > 1 or mesh.size == 3


def _with_group_sizes(op, e, sizes):
    """The simulation draws its own integer inputs: make it use real group sizes (a literal)."""
    import numpy as np

    from jax.extend import core as jcore

    lit = jcore.Literal(np.asarray(sizes), e.invars[2].aval)
    return op, e.replace(invars=[*e.invars[:2], lit])


@pytest.mark.parametrize("case", ["cholesky", "lu", "qr", "eigh", "triangular_solve", "fft", "irfft"])
def test_batched_linalg_splits_only_the_batch(case):
    mesh = MESHES[0]
    a = jnp.zeros((8, 2, 4, 4))
    f = {"cholesky": jnp.linalg.cholesky, "lu": lambda a: jax.lax.linalg.lu(a)[0],
         "qr": lambda a: jnp.linalg.qr(a)[1], "eigh": lambda a: jnp.linalg.eigh(a)[0],
         "triangular_solve": lambda a: jax.lax.linalg.triangular_solve(a, a, left_side=True),
         "fft": lambda a: jnp.fft.fft2(a).real, "irfft": lambda a: jnp.fft.irfft(a.astype(jnp.complex64))}[case]
    prim = {"irfft": "fft"}.get(case, case)
    op, e = traced(prim, f, a)
    strats = simulate(op, e, mesh)
    batch = 3 if case == "irfft" else 2
    assert {s.out_specs[0][0] for s in strats} >= {("data",), ("model",), ("data", "model")}
    for s in strats:
        for spec in s.in_specs + s.out_specs:
            assert not any(spec[batch:]), s.name
