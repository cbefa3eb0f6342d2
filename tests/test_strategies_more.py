"""Strategy rules of conv, gather / scatter, windowed, whole-dim and random ops, on real jaxprs.

Each op is traced with jax and turned into an OpView as ``per_node`` does. Then every
strategy runs on every device of a fake mesh: the equation's primitive on the device's
blocks (whole slices shrunk to the block; a lookup or scatter masked to the rows the
device holds; a scatter's operand added on one device per reduction group), then the
strategy's collectives. Each device must end with its block of the unsharded result.
"""

import functools
import math

import jax
import jax.numpy as jnp
import jax.extend.random  # not imported by `import jax`: threefry_2x32 below
import numpy as np
import pytest
from jax import lax

from cost_model.mesh import MeshShape
from shardsearch.strategies import OpView, strategies_for
from test_strategies import AR, MESH, RS, _block, _check_valid, _coords, _index, find

MESHES = [MESH, MeshShape(("a", "b"), (2, 2)), MeshShape(("x",), (3,))]
R2, R3, R4 = ((),) * 2, ((),) * 3, ((),) * 4
D, M = ("data",), ("model",)


# ---- from a jaxpr to an OpView, and a block simulation ------------------------------------

def _np_dtype(aval):
    try:
        return np.dtype(aval.dtype)
    except TypeError:  # a key array: shardsearch's trace cannot carry these yet
        return np.dtype("uint32")


def _eqns(jaxpr):
    for e in jaxpr.eqns:
        if e.primitive.name == "jit":
            yield from _eqns(e.params["jaxpr"].jaxpr)
        else:
            yield e


def traced(prim, f, *args, which=0):
    """The OpView and equation of the ``which``-th ``prim`` equation of ``f``'s jaxpr."""
    e = [e for e in _eqns(jax.make_jaxpr(f)(*args).jaxpr) if e.primitive.name == prim][which]
    ins, outs = [v.aval for v in e.invars], [v.aval for v in e.outvars]
    op = OpView(prim, dict(e.params), tuple(tuple(a.shape) for a in ins), tuple(map(_np_dtype, ins)),
                tuple(tuple(a.shape) for a in outs), tuple(map(_np_dtype, outs)))
    return op, e


def _is_key(x):
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _np(x):
    return np.asarray(jax.random.key_data(x) if _is_key(x) else x)


def _index_map(e):
    dn = e.params["dimension_numbers"]
    return dn.start_index_map if e.primitive.name == "gather" else dn.scatter_dims_to_operand_dims


def _inputs(e, rng):
    """Small integers (sums stay exact), indices in range, random keys; literals as they are."""
    xs = []
    for i, v in enumerate(e.invars):
        if hasattr(v, "val"):
            xs.append(v.val)
            continue
        a = v.aval
        if _is_key(a):
            keys = jax.random.split(jax.random.key(int(rng.integers(1 << 16))), max(math.prod(a.shape), 1))
            xs.append(keys.reshape(a.shape))
        elif np.issubdtype(a.dtype, np.integer):
            gathers = e.primitive.name == "gather" or e.primitive.name.startswith("scatter")
            high = min(e.invars[0].aval.shape[d] for d in _index_map(e)) if gathers and i == 1 else 7
            xs.append(rng.integers(0, high, a.shape).astype(a.dtype))
        else:
            xs.append(rng.integers(-4, 5, a.shape).astype(a.dtype))
    return xs


def _bind(e, xs, params):
    out = e.primitive.bind(*xs, **params)
    return [_np(y) for y in (out if e.primitive.multiple_results else [out])]


def _local(e, op, s, mesh, coord, blocks):
    """One device's share of equation ``e`` under strategy ``s``, as the rules describe it."""
    params, prim, blocks = dict(e.params), e.primitive.name, list(blocks)
    if "slice_sizes" in params:  # a dim sliced whole is sliced whole from the block
        params["slice_sizes"] = tuple(b if n == f else n for n, f, b in
                                      zip(params["slice_sizes"], op.in_shapes[0], blocks[0].shape))
    if prim == "gather" or prim.startswith("scatter"):
        imap = _index_map(e)
        axes = s.in_specs[0][imap[0]]
        if len(imap) == 1 and axes:  # rows split: only the rows held here; others read 0 / dropped
            blocks[1] = blocks[1] - _index(axes, mesh, coord) * blocks[0].shape[imap[0]]
            params["mode"] = type(params["mode"]).FILL_OR_DROP
            if prim == "gather":
                params["fill_value"] = 0
        if prim.startswith("scatter") and any(coord[a] for c in s.collectives for a in c.axes):
            blocks[0] = np.zeros_like(blocks[0])  # the operand is added once per reduction group
    return _bind(e, blocks, params)


def simulate(op, e, mesh, seed=0):
    """Every strategy, run from local blocks plus its collectives, gives each device its block."""
    strats, ruled = strategies_for(op, mesh)
    assert ruled
    _check_valid(op, strats, mesh)
    xs = _inputs(e, np.random.default_rng(seed))
    want = _bind(e, xs, e.params)
    for s in strats:
        on_out = {a for spec in s.out_specs for d in spec for a in d}  # an all-reduce sliced onto it too
        scattered = {a for c in s.collectives if c.kind is RS or set(c.axes) <= on_out for a in c.axes}
        pre = [tuple(tuple(a for a in d if a not in scattered) for d in spec) for spec in s.out_specs]
        for p, spec in zip(pre, s.out_specs):  # the scattered axes sit minor: blocks nest
            assert all(o[:len(q)] == q for q, o in zip(p, spec)), s.name
        red = {a for c in s.collectives for a in c.axes}
        local = []
        for coord in _coords(mesh):
            blocks = [_block(x, spec, mesh, coord) if spec else x for x, spec in zip(xs, s.in_specs)]
            local.append((coord, _local(e, op, s, mesh, coord, blocks)))
        for coord, _ in local:
            group = [v for c, v in local if all(c[a] == coord[a] for a in mesh.axis_names if a not in red)]
            for k, w in enumerate(want):
                got = functools.reduce(np.add, [v[k] for v in group])
                np.testing.assert_allclose(got, _block(w, pre[k], mesh, coord), rtol=1e-5, atol=1e-5,
                                           err_msg=s.name)
    return strats


def specs_of(strats):
    return {(s.in_specs, s.out_specs) for s in strats}


# ---- gather / scatter -------------------------------------------------------------------------

EMB, IDS = jnp.zeros((32, 16)), jnp.zeros((8, 12), jnp.int32)


def _lookup(e, i):
    return jnp.take(e, i, axis=0)


def test_embedding_gather_strategies():
    op, e = traced("gather", _lookup, EMB, IDS)
    strats, ruled = strategies_for(op, MESH)
    assert ruled and op.in_shapes == ((32, 16), (8, 12, 1))
    dp = find(strats, [R2, (D, (), ())], (D, (), ()))
    assert dp.collectives == () and dp.flops == 4 * 12 * 16
    assert find(strats, [((), M), R3], ((), (), M)).collectives == ()
    vocab = find(strats, [(M, ()), (D, (), ())], (D, (), ()))
    assert [(c.kind, c.axes, c.nbytes) for c in vocab.collectives] == [(AR, M, 4 * 12 * 16 * 4)]
    # XLA emits reduce-scatter as all-reduce + slice: only the all-reduce is offered.
    assert all(c.kind is not RS for s in strats for c in s.collectives)
    # A table read is only the rows looked up: the replicated gather does not read 32 x 16.
    assert strats[0].bytes_accessed == (8 * 12 + 2 * 8 * 12 * 16) * 4
    assert len(strats) < 80
    odd, _ = traced("gather", _lookup, EMB, jnp.zeros((6, 12), jnp.int32))  # 6 rows never take model
    assert all("model" not in s.in_specs[1][0] for s in strategies_for(odd, MESH)[0])


@pytest.mark.parametrize("mesh", MESHES)
@pytest.mark.parametrize("case", ["take", "index", "take_along_axis", "columns", "point"])
def test_gather_blocks(case, mesh):
    logits, labels = jnp.zeros((8, 12, 24)), jnp.zeros((8, 12), jnp.int32)
    x, idx = jnp.zeros((12, 24)), jnp.zeros((6,), jnp.int32)
    f, args = {
        "take": (_lookup, (EMB, IDS)),
        "index": (lambda e, i: e[i], (EMB, IDS)),
        "take_along_axis": (lambda l, y: jnp.take_along_axis(l, y[..., None], axis=-1), (logits, labels)),
        "columns": (lambda x, i: x[:, i], (x, idx)),
        "point": (lambda x, i: x[i, 3], (x, idx)),
    }[case]
    op, e = traced("gather", f, *args)
    strats = simulate(op, e, mesh)
    if case == "point":  # two indexed dims: the operand stays whole
        assert all(s.in_specs[0] == R2 for s in strats)
    else:
        assert len(strats) > 1


def test_cross_entropy_gather_is_data_and_vocab_parallel():
    op, e = traced("gather", lambda l, y: jnp.take_along_axis(l, y[..., None], axis=-1),
                   jnp.zeros((8, 12, 24)), jnp.zeros((8, 12), jnp.int32))
    strats, _ = strategies_for(op, MESH)
    assert find(strats, [(D, (), ()), (D, (), (), ())], (D, (), ())).collectives == ()
    s = find(strats, [(D, (), M), (D, (), (), ())], (D, (), ()))
    assert [(c.kind, c.axes) for c in s.collectives] == [(AR, M)]


def _embedding_grad(e, i):
    return jax.grad(lambda e: _lookup(e, i).sum())(e)


def test_embedding_gradient_scatter_add():
    op, e = traced("scatter-add", _embedding_grad, EMB, IDS)
    strats, ruled = strategies_for(op, MESH)
    assert ruled and op.in_shapes == ((32, 16), (8, 12, 1), (8, 12, 16))
    dp = find(strats, [R2, (D, (), ()), (D, (), ())], R2)
    assert [(c.kind, c.axes, c.nbytes) for c in dp.collectives] == [(AR, D, 32 * 16 * 4)]
    assert all(c.kind is not RS for s in strats for c in s.collectives)
    embed = find(strats, [((), M), R3, ((), (), M)], ((), M))
    assert embed.collectives == ()
    rows = find(strats, [(M, ()), R3, R3], (M, ()))  # each device applies the updates to its rows
    assert rows.collectives == ()
    both = find(strats, [((), M), (D, (), ()), (D, (), M)], ((), M))
    assert [(c.kind, c.axes, c.nbytes) for c in both.collectives] == [(AR, D, 32 * 4 * 4)]


@pytest.mark.parametrize("mesh", MESHES)
@pytest.mark.parametrize("case", ["embedding", "take_along_axis", "set"])
def test_scatter_blocks(case, mesh):
    if case == "embedding":
        op, e = traced("scatter-add", _embedding_grad, EMB, IDS)
    elif case == "take_along_axis":
        loss = lambda l, y: jnp.take_along_axis(l, y[..., None], axis=-1).sum()
        op, e = traced("scatter-add", jax.grad(loss), jnp.zeros((8, 12, 24)), jnp.zeros((8, 12), jnp.int32))
    else:
        op, e = traced("scatter", lambda x, i, u: x.at[i].set(u), EMB, jnp.arange(8) * 3, jnp.zeros((8, 16)))
    strats = simulate(op, e, mesh)
    assert len(strats) > 2 or mesh.size == 3  # 3 divides few of these dims
    if case == "set":  # an overwrite is never a partial sum
        assert all(not s.collectives for s in strats)


# ---- conv ---------------------------------------------------------------------------------------

X, W = jnp.zeros((8, 16, 6, 6)), jnp.zeros((32, 16, 3, 3))


def _conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME")


def test_conv_batch_out_and_in_channel_splits():
    op, _ = traced("conv_general_dilated", _conv, X, W)
    strats, ruled = strategies_for(op, MESH)
    full = 2.0 * 8 * 32 * 6 * 6 * 16 * 9
    batch = find(strats, [(D, (), (), ()), R4], (D, (), (), ()))
    assert batch.collectives == () and batch.flops == full / 2
    out_ch = find(strats, [R4, (M, (), (), ())], ((), M, (), ()))
    assert out_ch.collectives == () and out_ch.flops == full / 4
    in_ch = find(strats, [((), M, (), ()), ((), M, (), ())], R4)
    assert [(c.kind, c.axes, c.nbytes) for c in in_ch.collectives] == [(AR, M, 8 * 32 * 36 * 4)]
    assert in_ch.flops == full / 4
    assert find(strats, [(D, (), (), ()), (M, (), (), ())], (D, M, (), ())).flops == full / 8
    b_in = find(strats, [(D, M, (), ()), ((), M, (), ())], (D, (), (), ()))
    assert [(c.kind, c.axes, c.nbytes) for c in b_in.collectives] == [(AR, M, 4 * 32 * 36 * 4)]
    for s in strats:  # spatial dims never split
        assert not any(spec[2] or spec[3] for spec in s.in_specs + s.out_specs)
    assert strats[0].flops == full and len(strats) < 64


def _conv_nhwc(x, w):
    return lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_conv_weight_gradient_is_data_parallel_with_all_reduce():
    grad = jax.grad(lambda x, w: _conv_nhwc(x, w).sum(), argnums=1)
    op, _ = traced("conv_general_dilated", grad, jnp.zeros((8, 6, 6, 16)), jnp.zeros((3, 3, 16, 32)), which=1)
    assert op.out_shapes == ((3, 3, 16, 32),) and op.params["batch_group_count"] == 1
    strats, _ = strategies_for(op, MESH)
    s = find(strats, [(D, (), (), ()), (D, (), (), ())], R4)  # x and dy split on the batch
    assert [(c.kind, c.axes, c.nbytes) for c in s.collectives] == [(AR, D, 3 * 3 * 16 * 32 * 4)]


@pytest.mark.parametrize("mesh", MESHES)
@pytest.mark.parametrize("case", ["nchw", "forward", "input_grad", "weight_grad", "grouped"])
def test_conv_blocks(case, mesh):
    x, w = jnp.zeros((12, 6, 6, 8)), jnp.zeros((3, 3, 8, 12))
    if case == "nchw":
        op, e = traced("conv_general_dilated", _conv, jnp.zeros((12, 8, 5, 5)), jnp.zeros((12, 8, 3, 3)))
    elif case == "grouped":
        f = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", feature_group_count=2,
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
        op, e = traced("conv_general_dilated", f, x, jnp.zeros((3, 3, 4, 12)))
    else:
        which = {"forward": 0, "weight_grad": 1, "input_grad": 2}[case]
        grad = jax.grad(lambda x, w: _conv_nhwc(x, w).sum(), argnums=(0, 1))
        op, e = traced("conv_general_dilated", grad, x, w, which=which)
    strats = simulate(op, e, mesh)
    if case == "grouped":  # only the batch splits
        assert all(not any(spec[1:]) for s in strats for spec in s.in_specs + s.out_specs)
    elif mesh.size == 8:
        assert any(s.collectives for s in strats) and len(strats) > 10


def test_conv_with_batch_groups_stays_replicated():
    # The weight gradient of a depthwise conv groups the batch: batch_group_count > 1.
    depthwise = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", feature_group_count=8,
                                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
    grad = jax.grad(lambda x, w: depthwise(x, w).sum(), argnums=1)
    op, _ = traced("conv_general_dilated", grad, jnp.zeros((8, 6, 6, 8)), jnp.zeros((3, 3, 1, 8)), which=1)
    assert op.params["batch_group_count"] > 1
    strats, ruled = strategies_for(op, MESH)
    assert ruled and len(strats) == 1 and strats[0].flops > math.prod(op.out_shapes[0])


# ---- ops that keep some dims whole -------------------------------------------------------------

V = jnp.zeros((8, 6, 12, 4))
_whole_cases = {
    "dynamic_slice": (lambda x: lax.dynamic_slice(x, (0, 2, 0, 1), (x.shape[0], 3, x.shape[2], 2)), {1, 3}),
    "dynamic_update_slice": (lambda x: lax.dynamic_update_slice(x, jnp.ones((8, 2, 12, 4)), (0, 1, 0, 0)), {1}),
    "pad": (lambda x: jnp.pad(x, ((0, 0), (1, 2), (0, 0), (0, 0))), {1}),
    "rev": (lambda x: lax.rev(x, (0, 2)), {0, 2}),
    "cumsum": (lambda x: jnp.cumsum(x, axis=2), {2}),
    "cummax": (lambda x: lax.cummax(x, axis=0, reverse=True), {0}),
    "cumlogsumexp": (lambda x: lax.cumlogsumexp(x, axis=1), {1}),
    "reduce_window_max": (lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"),
                          {1, 2}),
    "reduce_window_sum": (lambda x: lax.reduce_window(x, 0.0, lax.add, (1, 3, 1, 1), (1, 1, 1, 1), "SAME"), {1}),
    "reduce_window": (lambda x: lax.reduce_window(x, 1.0, lax.mul, (1, 1, 2, 1), (1, 1, 1, 1), "VALID"), {2}),
    "select_and_scatter_add": (jax.grad(lambda x: lax.reduce_window(
        x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID").sum()), {1, 2}),
    "sort": (lambda x: lax.sort((x, x * 2), dimension=1, num_keys=1), {1}),
    "top_k": (lambda x: lax.top_k(x, 2), {3}),
    "split": (lambda x: jnp.split(x, 3, axis=2), {2}),
    "clamp": (lambda x: lax.clamp(-1.0, x, 1.0), set()),
}


@pytest.mark.parametrize("mesh", MESHES)
@pytest.mark.parametrize("prim", sorted(_whole_cases))
def test_whole_dim_ops(prim, mesh):
    f, whole = _whole_cases[prim]
    op, e = traced(prim, f, V)
    strats = simulate(op, e, mesh)
    assert len(strats) > 1 or mesh.size == 3  # 3 divides only dims 1 and 2
    for s in strats:
        for spec in s.in_specs + s.out_specs:
            assert not spec or not any(spec[d] for d in whole), s.name
    if mesh == MESH:  # every dim not in ``whole`` is split somewhere
        split = {d for s in strats for d, axes in enumerate(s.out_specs[0]) if axes}
        assert split == {d for d in range(4) if d not in whole and V.shape[d] % 2 == 0}


# ---- random numbers ------------------------------------------------------------------------

KEYS = jax.random.split(jax.random.key(0), 8)
_random_cases = {
    "random_bits": (jax.vmap(lambda k: jax.random.bits(k, (3, 2))), KEYS),
    "random_split": (jax.vmap(lambda k: jax.random.split(k, 3)), KEYS),
    "random_fold_in": (jax.vmap(lambda k: jax.random.fold_in(k, 7)), KEYS),
    "random_unwrap": (jax.random.key_data, KEYS),
    "random_wrap": (jax.random.wrap_key_data, jnp.zeros((8, 2), jnp.uint32)),
    "threefry2x32": (lambda k, x: jax.extend.random.threefry_2x32(k, x), jnp.zeros((2,), jnp.uint32)),
}


@pytest.mark.parametrize("mesh", MESHES[:2])
@pytest.mark.parametrize("prim", sorted(_random_cases))
def test_random_ops(prim, mesh):
    f, *args = _random_cases[prim]
    if prim == "threefry2x32":
        args.append(jnp.zeros((16,), jnp.uint32))
    op, e = traced(prim, f, *args)
    strats = simulate(op, e, mesh)
    assert len(strats) > 1
    for s in strats:  # the generated / key-data dims stay whole
        for spec, shape in zip(s.in_specs + s.out_specs, op.in_shapes + op.out_shapes):
            assert not any(spec[1:]) or prim == "threefry2x32", s.name


def test_random_bits_from_one_key_is_replicated():
    op, _ = traced("random_bits", lambda k: jax.random.bits(k, (8, 4)), KEYS[0])
    assert len(strategies_for(op, MESH)[0]) == 1


# ---- strategy counts -------------------------------------------------------------------------

def test_strategy_counts_on_a_2d_mesh():
    gather = strategies_for(traced("gather", _lookup, jnp.zeros((1024, 64)), jnp.zeros((8, 128), jnp.int32))[0], MESH)
    conv = strategies_for(traced("conv_general_dilated", _conv, jnp.zeros((8, 16, 32, 32)),
                                 jnp.zeros((32, 16, 3, 3)))[0], MESH)
    print(f"embedding gather: {len(gather[0])} strategies, 3x3 conv: {len(conv[0])} strategies")
    assert 10 < len(gather[0]) < 80 and 10 < len(conv[0]) < 64
