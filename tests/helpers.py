"""Small models and HLO checks shared by the end-to-end tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.judge import parse_collectives
from examples.train_mlp import init_mlp, make_train_step, mlp  # noqa: F401  (one MLP: the demo's)


def abstract_mlp_args(batch, hidden, layers=6, optimizer=None):
    """ShapeDtypeStructs for (params, opt_state, batch) of an MLP stack: nothing allocated."""
    optimizer = optimizer or optax.adam(1e-3)
    params = jax.eval_shape(lambda: init_mlp(jax.random.PRNGKey(0), [hidden] * (layers + 1)))
    opt_state = jax.eval_shape(optimizer.init, params)
    xy = (jax.ShapeDtypeStruct((batch, hidden), jnp.float32),) * 2
    return params, opt_state, xy


def concrete_mlp_args(batch, hidden, layers=6, optimizer=None, seed=0):
    optimizer = optimizer or optax.adam(1e-3)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = init_mlp(k1, [hidden] * (layers + 1))
    x = jax.random.normal(k2, (batch, hidden))
    y = jnp.tanh(x @ jax.random.normal(k3, (hidden, hidden)) / hidden**0.5)
    return params, optimizer.init(params), (x, y)


def collectives(compiled_text: str, *, scalars: bool = False):
    """Collectives of compiled HLO text; scalar ones (loss, step count) left out unless asked."""
    return [c for c in parse_collectives(compiled_text) if scalars or not c.is_scalar]


def assert_trees_close(a, b, rtol=1e-4, atol=1e-6):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def draw_mesh_and_two_specs(draw, axis_size):
    """(mesh, shape, src spec, dst spec) for hypothesis: up to 3 mesh axes of sizes drawn from
    ``axis_size``; each axis goes to no dim or one dim, a random key ordering axes within a dim."""
    from cost_model import MeshShape
    from hypothesis import strategies as st

    sizes = draw(st.lists(axis_size, min_size=1, max_size=3))
    mesh = MeshShape(tuple(f"a{i}" for i in range(len(sizes))), tuple(sizes))
    shape = tuple(draw(st.lists(st.integers(1, 12), min_size=0, max_size=3)))

    def spec():
        dims = [[] for _ in shape]
        for a in mesh.axis_names:
            d = draw(st.integers(-1, len(shape) - 1))
            if d >= 0:
                dims[d].append((draw(st.integers(0, 9)), a))
        return tuple(tuple(a for _, a in sorted(d)) for d in dims)

    return mesh, shape, spec(), spec()


def primitive_without_a_rule(name: str):
    """x -> 2x as a primitive of its own, differentiable, with no strategy rule: what a new
    jax release (or a library) could add. One primitive per name, made once."""
    if name in _TEST_PRIMITIVES:
        return _TEST_PRIMITIVES[name]
    from jax.extend.core import Primitive
    from jax.interpreters import mlir

    twice_p = Primitive(name)
    twice_p.def_impl(lambda x: x * 2)
    twice_p.def_abstract_eval(lambda x: jax.core.ShapedArray(x.shape, x.dtype))
    mlir.register_lowering(twice_p, mlir.lower_fun(lambda x: x * 2, multiple_results=False))

    @jax.custom_jvp
    def twice(x):
        return twice_p.bind(x)

    twice.defjvp(lambda primals, tangents: (twice(primals[0]), 2 * tangents[0]))
    _TEST_PRIMITIVES[name] = twice
    return twice


_TEST_PRIMITIVES: dict = {}
