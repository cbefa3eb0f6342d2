"""Tests of the per-operator strategy rules (plain data, no jax).

Besides hand-checked cases, a numpy simulation runs every strategy of random ops on
every device of a fake mesh (local blocks in, the op's collectives applied) and checks
that each device ends with exactly its block of the unsharded result.
"""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cost_model.collectives import CollectiveKind
from cost_model.mesh import MeshShape, local_bytes, replicated
from shardsearch.strategies import OpView, enumerate_specs, strategies_for
from shardsearch.strategies.dot import without_reduce_scatter

AR, RS = CollectiveKind.ALL_REDUCE, CollectiveKind.REDUCE_SCATTER
MESH = MeshShape(("data", "model"), (2, 4))
F32 = np.dtype("float32")
I64 = np.dtype("int64")
MATMUL = (((1,), (0,)), ((), ()))


def view(prim, params, in_shapes, out_shapes, dtype=F32):
    return OpView(prim, params, tuple(map(tuple, in_shapes)), (dtype,) * len(in_shapes),
                  tuple(map(tuple, out_shapes)), (dtype,) * len(out_shapes))


def dot_view(lhs, rhs, dn, out, dtype=F32):
    return view("dot_general", {"dimension_numbers": dn, "precision": None,
                                "preferred_element_type": None, "out_sharding": None}, [lhs, rhs], [out], dtype)


def find(strats, ins, out):
    hits = [s for s in strats if s.in_specs == tuple(ins) and s.out_specs == (out,)]
    assert len(hits) == 1, f"expected one strategy {ins} -> {out}, got {[s.name for s in hits]}"
    return hits[0]


# ---- enumerate_specs ------------------------------------------------------------------

def test_enumerate_specs_respects_divisibility_and_orders():
    specs = enumerate_specs((8, 6), MESH)
    assert specs[0] == ((), ())
    assert all("model" not in d1 for _, d1 in specs)  # 6 is never split by 4
    assert ((), ("data",)) in specs
    assert (("data", "model"), ()) in specs and (("model", "data"), ()) in specs
    assert len(specs) == 7 and len(set(specs)) == 7
    # Two dims of 8: 3 x 3 placements, plus the second order of the two shared-dim ones.
    assert len(enumerate_specs((8, 8), MESH)) == 11
    assert enumerate_specs((6,), MESH) == [((),), (("data",),)]
    assert enumerate_specs((3, 5), MESH) == [((), ())]
    assert enumerate_specs((), MESH) == [()]
    assert enumerate_specs((8, 8), MESH) == enumerate_specs((8, 8), MESH)  # deterministic


def test_enumerate_specs_skips_size_one_axes():
    mesh = MeshShape(("a", "b"), (1, 4))
    assert enumerate_specs((8,), mesh) == [((),), (("b",),)]


# ---- dot_general ----------------------------------------------------------------------

def _matmul(B=16, K=32, N=64):
    op = dot_view((B, K), (K, N), MATMUL, (B, N))
    strats, ok = strategies_for(op, MESH)
    assert ok
    return op, strats


def test_dot_data_parallel_column_and_2d():
    op, strats = _matmul()
    full = 2.0 * 16 * 32 * 64
    dp = find(strats, [(("data",), ()), ((), ())], (("data",), ()))
    assert dp.collectives == () and dp.flops == full / 2
    assert dp.bytes_accessed == (8 * 32 + 32 * 64 + 8 * 64) * 4
    col = find(strats, [((), ()), ((), ("model",))], ((), ("model",)))
    assert col.collectives == () and col.flops == full / 4
    both = find(strats, [(("data",), ()), ((), ("model",))], (("data",), ("model",)))
    assert both.collectives == () and both.flops == full / 8


def test_dot_row_split_all_reduces_or_reduce_scatters_onto_an_output_dim():
    op, strats = _matmul()
    ins = [((), ("model",)), (("model",), ())]
    row = find(strats, ins, ((), ()))
    assert [(c.kind, c.axes) for c in row.collectives] == [(AR, ("model",))]
    assert row.collectives[0].nbytes == 16 * 64 * 4  # local output: not split
    assert row.flops == 2.0 * 16 * 32 * 64 / 4
    # the sums reduce-scattered onto an output dim (FSDP's weight gradients): XLA emits an
    # all-reduce and a slice, which the GPU compiler makes one reduce-scatter; priced as
    # the all-reduce, dropped for clusters without a GPU target
    scattered = find(strats, ins, (("model",), ()))
    assert "[RS(model)]" in scattered.name and scattered.collectives == row.collectives
    assert scattered.flops == row.flops and scattered.bytes_accessed < row.bytes_accessed
    assert not [s for s in strats if s.in_specs == tuple(ins) and s.out_specs == (((), ("data",)),)]  # other axes
    assert all(c.kind is not RS for s in strats for c in s.collectives)
    kept = without_reduce_scatter([strats])[0]
    assert scattered not in kept and row in kept and len(kept) == 19


def test_dot_one_dim_over_both_axes_in_both_orders():
    op, strats = _matmul()
    for axes in [("data", "model"), ("model", "data")]:
        s = find(strats, [(axes, ()), ((), ())], (axes, ()))
        assert s.flops == 2.0 * 16 * 32 * 64 / 8
        k = find(strats, [((), axes), (axes, ())], ((), ()))
        assert k.collectives[0].kind is AR and set(k.collectives[0].axes) == {"data", "model"}


def test_dot_batch_dim_einsum():
    # [b,m,k] x [b,k,n] -> [b,m,n]
    op = dot_view((8, 6, 12), (8, 12, 5), (((2,), (1,)), ((0,), (0,))), (8, 6, 5))
    strats, _ = strategies_for(op, MESH)
    s = find(strats, [(("model",), (), ()), (("model",), (), ())], (("model",), (), ()))
    assert s.collectives == () and s.flops == 2.0 * 8 * 6 * 12 * 5 / 4
    # m = 6 and n = 5 never take the model axis.
    assert not any("model" in s.in_specs[0][1] or "model" in s.in_specs[1][2] for s in strats)


def test_dot_strategy_count_and_no_duplicates():
    _, strats = _matmul()
    keys = [(s.in_specs, s.out_specs) for s in strats]
    # one per placement of the axes on (m, n, k), and per contracting split one per output
    # dim it can be reduce-scattered onto
    assert len(keys) == len(set(keys)) == 19 + 12  # (12 contracting splits onto a free m or n)
    assert strats[0].name == "RxR @ RxR -> RxR" and strats[0].collectives == ()
    # A 2-D mesh keeps a 4-dim attention einsum in the tens.
    op = dot_view((8, 4, 16, 32), (8, 4, 16, 32), (((3,), (3,)), ((0, 1), (0, 1))), (8, 4, 16, 16))
    assert len(strategies_for(op, MESH)[0]) < 100


def test_dot_flops_divide_by_devices_doing_distinct_work():
    op, strats = _matmul()
    full = 2.0 * 16 * 32 * 64
    for s in strats:
        axes = {a for spec in s.in_specs for d in spec for a in d}
        assert s.flops == full / MESH.group_size(sorted(axes))


# ---- other families ---------------------------------------------------------------------

def test_reshape_keeps_leading_splits_only():
    op = view("reshape", {"new_sizes": (128,), "dimensions": None, "sharding": None}, [(8, 16)], [(128,)])
    strats, ok = strategies_for(op, MESH)
    assert ok
    assert find(strats, [(("data",), ())], (("data",),))
    assert find(strats, [(("model", "data"), ())], (("model", "data"),))
    assert not any(s.in_specs[0][1] for s in strats)  # a split on dim 1 is never kept
    back = view("reshape", {"new_sizes": (8, 16), "dimensions": None}, [(128,)], [(8, 16)])
    strats, _ = strategies_for(back, MESH)
    assert find(strats, [(("data",),)], (("data",), ()))
    assert not any(s.out_specs[0][1] for s in strats)


def test_reduce_sum_over_split_dim_all_reduces():
    op = view("reduce_sum", {"axes": (1,), "out_sharding": None}, [(16, 32)], [(16,)])
    strats, _ = strategies_for(op, MESH)
    s = find(strats, [(("data",), ("model",))], (("data",),))
    assert [(c.kind, c.axes, c.nbytes) for c in s.collectives] == [(AR, ("model",), 8 * 4)]
    keep = find(strats, [(("data",), ())], (("data",),))
    assert keep.collectives == ()


def test_argmax_never_splits_reduced_dim():
    op = view("argmax", {"axes": (1,), "index_dtype": I64}, [(16, 32)], [(16,)])
    strats, _ = strategies_for(op, MESH)
    assert len(strats) == len(enumerate_specs((16,), MESH))
    assert all(not s.in_specs[0][1] and not s.collectives for s in strats)


def test_broadcast_bias():
    op = view("broadcast_in_dim", {"shape": (32, 16), "broadcast_dimensions": (1,), "sharding": None},
              [(16,)], [(32, 16)])
    strats, _ = strategies_for(op, MESH)
    assert find(strats, [(("model",),)], (("data",), ("model",)))
    assert find(strats, [((),)], (("data",), ()))
    assert len(strats) == len(enumerate_specs((32, 16), MESH))
    op = view("broadcast_in_dim", {"shape": (32, 16), "broadcast_dimensions": (0, 1), "sharding": None},
              [(1, 16)], [(32, 16)])
    strats, _ = strategies_for(op, MESH)
    assert find(strats, [((), ("model",))], (("data",), ("model",)))  # the size-1 dim stays whole


def test_elementwise_scalars_and_broadcast_dims():
    op = view("add", {}, [(8, 1), (8, 16), ()], [(8, 16)])
    strats, _ = strategies_for(op, MESH)
    s = find(strats, [(("data",), ()), (("data",), ("model",)), ()], (("data",), ("model",)))
    assert s.flops == 4 * 4


def test_slice_and_concatenate_keep_changed_dim_whole():
    op = view("slice", {"start_indices": (0, 2), "limit_indices": (8, 10), "strides": None}, [(8, 16)], [(8, 8)])
    strats, _ = strategies_for(op, MESH)
    assert all(not s.in_specs[0][1] for s in strats) and len(strats) == 5
    op = view("concatenate", {"dimension": 0}, [(8, 16), (8, 16)], [(16, 16)])
    strats, _ = strategies_for(op, MESH)
    assert all(not s.out_specs[0][0] and s.in_specs[0] == s.in_specs[1] == s.out_specs[0] for s in strats)


def test_unknown_primitive_is_replicated_only():
    op = view("cumsum_of_doom", {}, [(8, 16), (4,)], [(8, 16), ()])
    strats, ok = strategies_for(op, MESH)
    assert not ok and len(strats) == 1
    s = strats[0]
    assert s.in_specs == (replicated(2), replicated(1)) and s.out_specs == (replicated(2), ())
    assert s.collectives == () and s.bytes_accessed == (128 + 4 + 128 + 1) * 4


# ---- properties over random ops: divisibility and a numpy simulation ----------------------

MESHES = [MeshShape(("x",), (2,)), MeshShape(("x",), (4,)), MeshShape(("x",), (3,)), MESH,
          MeshShape(("a", "b"), (2, 2)), MeshShape(("a", "b"), (1, 4)), MeshShape(("a", "b"), (3, 2))]
SIZE = st.sampled_from([1, 2, 3, 4, 6, 8, 12])


def _einsum(dn, lhs_rank, rhs_rank):
    (lc, rc), (lb, rb) = dn
    letters = iter("abcdefghijklmnop")
    lhs, rhs = [None] * lhs_rank, [None] * rhs_rank
    for l, r in zip(lb, rb):
        lhs[l] = rhs[r] = next(letters)
    batch = [lhs[l] for l in lb]
    for l, r in zip(lc, rc):
        lhs[l] = rhs[r] = next(letters)
    for side in (lhs, rhs):
        for i, c in enumerate(side):
            side[i] = c or next(letters)
    lf = [lhs[i] for i in range(lhs_rank) if i not in lb and i not in lc]
    rf = [rhs[i] for i in range(rhs_rank) if i not in rb and i not in rc]
    return f"{''.join(lhs)},{''.join(rhs)}->{''.join(batch + lf + rf)}"


@st.composite
def dot_ops(draw):
    nb, nlf, nrf, nc = (draw(st.integers(0, 1)), draw(st.integers(0, 2)), draw(st.integers(0, 1)),
                        draw(st.integers(1, 2)))
    b, lf, rf, c = ([draw(SIZE) for _ in range(k)] for k in (nb, nlf, nrf, nc))
    lhs_dims = [("b", i) for i in range(nb)] + [("f", i) for i in range(nlf)] + [("c", i) for i in range(nc)]
    rhs_dims = [("b", i) for i in range(nb)] + [("c", i) for i in range(nc)] + [("g", i) for i in range(nrf)]
    lhs_dims, rhs_dims = draw(st.permutations(lhs_dims)), draw(st.permutations(rhs_dims))
    size = {"b": b, "f": lf, "g": rf, "c": c}
    pos = lambda dims, kind, n: tuple(dims.index((kind, i)) for i in range(n))
    dn = ((pos(lhs_dims, "c", nc), pos(rhs_dims, "c", nc)), (pos(lhs_dims, "b", nb), pos(rhs_dims, "b", nb)))
    lhs = [size[k][i] for k, i in lhs_dims]
    rhs = [size[k][i] for k, i in rhs_dims]
    eq = _einsum(dn, len(lhs), len(rhs))
    # Output: batch dims, then the free dims of each side in that side's order.
    out = b + [size[k][i] for k, i in lhs_dims if k == "f"] + [size[k][i] for k, i in rhs_dims if k == "g"]
    return dot_view(lhs, rhs, dn, out, I64), lambda xs, out: np.einsum(eq, *xs)


@st.composite
def reshape_ops(draw):
    factors = draw(st.lists(st.sampled_from([1, 2, 3, 4]), min_size=1, max_size=4))

    def regroup():
        cuts = sorted(draw(st.sets(st.integers(1, len(factors) - 1))) if len(factors) > 1 else [])
        parts = [factors[i:j] for i, j in zip([0] + cuts, cuts + [len(factors)])]
        shape = [math.prod(p) for p in parts]
        if draw(st.booleans()):
            shape.insert(draw(st.integers(0, len(shape))), 1)
        return shape

    a, b = regroup(), regroup()
    return (view("reshape", {"new_sizes": tuple(b), "dimensions": None}, [a], [b], I64),
            lambda xs, out: xs[0].reshape(out))


SIMPLE_KINDS = ["add", "transpose", "reduce_sum", "reduce_max", "argmax", "broadcast", "squeeze", "slice",
                "concatenate", "iota"]


@st.composite
def simple_ops(draw, kind):
    shape = draw(st.lists(SIZE, min_size=1, max_size=3))
    rank = len(shape)
    if kind == "add":
        other = [n if draw(st.booleans()) else 1 for n in shape]
        return view("add", {}, [shape, other, ()], [shape], I64), lambda xs, out: xs[0] + xs[1] + xs[2]
    if kind == "transpose":
        perm = tuple(draw(st.permutations(range(rank))))
        out = [shape[p] for p in perm]
        return view("transpose", {"permutation": perm}, [shape], [out], I64), lambda xs, o: np.transpose(xs[0], perm)
    if kind in ("reduce_sum", "reduce_max", "argmax"):
        axes = tuple(sorted(draw(st.sets(st.integers(0, rank - 1), min_size=1, max_size=1 if kind == "argmax" else rank))))
        out = [n for i, n in enumerate(shape) if i not in axes]
        fn = {"reduce_sum": lambda xs, o: xs[0].sum(axis=axes), "reduce_max": lambda xs, o: xs[0].max(axis=axes),
              "argmax": lambda xs, o: xs[0].argmax(axis=axes[0])}[kind]
        return view(kind, {"axes": axes, "index_dtype": I64}, [shape], [out], I64), fn
    if kind == "broadcast":
        out = shape + [draw(SIZE)]
        out = draw(st.permutations(out))
        bdims = tuple(sorted(draw(st.sets(st.integers(0, len(out) - 1), max_size=len(out)))))
        operand = [out[d] if draw(st.booleans()) else 1 for d in bdims]
        keep = [d if d in bdims else None for d in range(len(out))]

        def bcast(xs, o):
            expanded = [xs[0].shape[bdims.index(d)] if d is not None else 1 for d in keep]
            return np.broadcast_to(xs[0].reshape(expanded), o)

        return view("broadcast_in_dim", {"shape": tuple(out), "broadcast_dimensions": bdims, "sharding": None},
                    [operand], [out], I64), bcast
    if kind == "squeeze":
        at = draw(st.integers(0, rank))
        inp = shape[:at] + [1] + shape[at:]
        return view("squeeze", {"dimensions": (at,)}, [inp], [shape], I64), lambda xs, o: xs[0].reshape(o)
    if kind == "slice":
        starts = [draw(st.integers(0, n - 1)) for n in shape]
        limits = [draw(st.integers(s + 1, n)) for s, n in zip(starts, shape)]
        out = [l - s for s, l in zip(starts, limits)]
        changed = [i for i in range(rank) if out[i] != shape[i]]

        def sl(xs, o):
            return xs[0][tuple(slice(starts[i], limits[i]) if i in changed else slice(None) for i in range(rank))]

        return view("slice", {"start_indices": tuple(starts), "limit_indices": tuple(limits), "strides": None},
                    [shape], [out], I64), sl
    if kind == "concatenate":
        dim = draw(st.integers(0, rank - 1))
        other = shape[:dim] + [draw(SIZE)] + shape[dim + 1:]
        out = shape[:dim] + [shape[dim] + other[dim]] + shape[dim + 1:]
        return (view("concatenate", {"dimension": dim}, [shape, other], [out], I64),
                lambda xs, o: np.concatenate(xs, axis=dim))
    dim = draw(st.integers(0, rank - 1))
    return (view("iota", {"dtype": I64, "shape": tuple(shape), "dimension": dim, "sharding": None}, [], [shape], I64),
            None)


def _coords(mesh):
    for c in itertools.product(*(range(n) for n in mesh.axis_sizes)):
        yield dict(zip(mesh.axis_names, c))


def _index(axes, mesh, coord):
    i = 0
    for a in axes:
        i = i * mesh.axis_size(a) + coord[a]
    return i


def _block(x, spec, mesh, coord):
    idx = []
    for n, axes in zip(x.shape, spec):
        step = n // mesh.group_size(axes)
        i = _index(axes, mesh, coord)
        idx.append(slice(i * step, (i + 1) * step))
    return x[tuple(idx)]


def _check_valid(op, strats, mesh):
    names = {a for a, n in zip(mesh.axis_names, mesh.axis_sizes) if n > 1}
    for s in strats:
        assert len(s.in_specs) == len(op.in_shapes) and len(s.out_specs) == len(op.out_shapes)
        for shape, spec in zip(op.in_shapes + op.out_shapes, s.in_specs + s.out_specs):
            assert len(spec) == len(shape), s.name
            axes = [a for d in spec for a in d]
            assert len(axes) == len(set(axes)) and set(axes) <= names, s.name
            for n, d in zip(shape, spec):
                assert n % mesh.group_size(d) == 0, f"{s.name}: dim {n} split over {d}"
        for c in s.collectives:
            assert c.axes and set(c.axes) <= names


def _simulate(op, fn, mesh, rng):
    """Every strategy, run on every device from its local blocks, gives that device's block."""
    strats, _ = strategies_for(op, mesh)
    _check_valid(op, strats, mesh)
    if fn is None:
        return
    xs = [rng.integers(-50, 50, size=s) for s in op.in_shapes]
    want = np.asarray(fn(xs, op.out_shapes[0]))
    combine = np.maximum if op.primitive == "reduce_max" else np.add
    for s in strats:
        out_spec = s.out_specs[0]
        pre = list(out_spec)  # the output layout before a reduce-scatter
        on_out = {a for d in out_spec for a in d}
        for c in s.collectives:  # (or an all-reduce sliced onto the output: strategies/dot.py)
            if c.kind is RS or c.kind is AR and set(c.axes) <= on_out:
                pre = [tuple(a for a in d if a not in c.axes) for d in pre]
        local = {}
        for coord in _coords(mesh):
            ins = [_block(x, spec, mesh, coord) for x, spec in zip(xs, s.in_specs)]
            shape = tuple(n // mesh.group_size(d) for n, d in zip(op.out_shapes[0], pre))
            local[tuple(coord.values())] = (coord, np.asarray(fn(ins, shape)))
        red = [a for c in s.collectives for a in c.axes]
        for coord, _ in local.values():
            group = [v for c, v in local.values() if all(c[a] == coord[a] for a in mesh.axis_names if a not in red)]
            got = group[0]
            for v in group[1:]:
                got = combine(got, v)
            assert np.array_equal(got, _block(want, tuple(pre), mesh, coord)), s.name
        # The scattered axes sit minor of the pre-scatter split, so blocks nest.
        for p, o in zip(pre, out_spec):
            assert o[:len(p)] == p


@pytest.mark.parametrize("family", ["dot_general", "reshape"] + SIMPLE_KINDS)
@settings(max_examples=60, deadline=None)
@given(data=st.data(), mesh=st.sampled_from(MESHES), seed=st.integers(0, 2**16))
def test_every_strategy_is_valid_and_computes_the_right_blocks(family, data, mesh, seed):
    ops = dot_ops() if family == "dot_general" else reshape_ops() if family == "reshape" else simple_ops(family)
    op, fn = data.draw(ops)
    _simulate(op, fn, mesh, np.random.default_rng(seed))


def test_strategy_counts_stay_small_on_2d_meshes():
    for op in [view("add", {}, [(8, 16, 32)] * 2, [(8, 16, 32)]),
               view("reshape", {"new_sizes": (8, 16, 32), "dimensions": None}, [(128, 32)], [(8, 16, 32)]),
               dot_view((8, 16, 32), (32, 64), (((2,), (0,)), ((), ())), (8, 16, 64))]:
        assert len(strategies_for(op, MESH)[0]) < 64
