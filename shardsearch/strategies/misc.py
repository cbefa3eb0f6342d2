"""Ops that work along some dims and map the others one to one: those dims stay whole.

Every array operand and output takes one layout that leaves the op's working dims
unsplit (padded, reversed, scanned, sorted, windowed, sliced); scalar operands (pad
values, start indices, init values) are (). No communication: each device runs the op
on its block. An op whose other dims do not line up across tensors gets no rule.
"""

from __future__ import annotations

import math

from cost_model.mesh import MeshShape

from shardsearch.strategies.base import OpView, Strategy, register
from shardsearch.strategies.specs import enumerate_specs, io_bytes, local_elements, spec_name


def same_layout(op: OpView, mesh: MeshShape, whole, label: str, factor: float = 1.0) -> list[Strategy]:
    """One layout for every array operand and output, keeping the dims in ``whole`` unsplit.

    ``factor`` is the work per output element (window size, log of the sort length).
    """
    arrays = [s for s in op.in_shapes + op.out_shapes if s]
    if not arrays or any(len(s) != len(arrays[0]) for s in arrays):
        return []
    ref = []
    for d in range(len(arrays[0])):
        sizes = {s[d] for s in arrays}
        if d not in whole and len(sizes) != 1:
            return []  # an extent changes on a dim we were not told about: no rule
        ref.append(1 if d in whole else sizes.pop())  # size 1: never split
    result = []
    for spec in enumerate_specs(ref, mesh):
        ins = tuple(spec if s else () for s in op.in_shapes)
        outs = tuple(spec if s else () for s in op.out_shapes)
        work = factor * sum(local_elements(s, spec, mesh) for s in op.out_shapes if s)
        result.append(Strategy(f"{label} {spec_name(spec)}", ins, outs, (), work, io_bytes(op, ins, outs, mesh)))
    return result


@register("pad")
def pad_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    whole = {d for d, cfg in enumerate(op.params["padding_config"]) if tuple(int(c) for c in cfg) != (0, 0, 0)}
    return same_layout(op, mesh, whole, "pad")


@register("rev")
def rev_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    return same_layout(op, mesh, {int(d) for d in op.params["dimensions"]}, "rev")


@register("cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp")
def cumulative_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    return same_layout(op, mesh, {int(op.params["axis"]) % len(op.in_shapes[0])}, op.primitive)


@register("sort")
def sort_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    dim = int(op.params["dimension"]) % len(op.in_shapes[0])
    return same_layout(op, mesh, {dim}, "sort", max(1.0, math.log2(max(op.in_shapes[0][dim], 1))))


@register("top_k")
def top_k_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    rank = len(op.in_shapes[0])
    return same_layout(op, mesh, {int(op.params.get("axis", rank - 1)) % rank}, "top_k")


@register("approx_top_k")
def approx_top_k_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    rank = len(op.in_shapes[0])
    return same_layout(op, mesh, {int(op.params["reduction_dimension"]) % rank}, "approx_top_k")


@register("split")
def split_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    return same_layout(op, mesh, {int(op.params["axis"]) % len(op.in_shapes[0])}, "split")


@register("tile")
def tile_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    return same_layout(op, mesh, {d for d, r in enumerate(op.params["reps"]) if int(r) != 1}, "tile")


@register("dynamic_slice")
def dynamic_slice_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    shape, sizes = op.in_shapes[0], op.params["slice_sizes"]
    # A dim taken whole has its start clamped to 0: every device slices its own block.
    return same_layout(op, mesh, {d for d, (n, m) in enumerate(zip(shape, sizes)) if n != m}, "dynamic_slice")


@register("dynamic_update_slice")
def dynamic_update_slice_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    shape, update = op.in_shapes[0], op.in_shapes[1]
    return same_layout(op, mesh, {d for d, (n, m) in enumerate(zip(shape, update)) if n != m},
                       "dynamic_update_slice")


def _window_dims(params) -> set[int]:
    """Dims where a window reaches beyond its own element: size, stride, padding or dilation."""
    rank = len(params["window_dimensions"])
    pads = params.get("padding") or ((0, 0),) * rank
    base = params.get("base_dilation") or (1,) * rank
    return {d for d in range(rank)
            if params["window_dimensions"][d] != 1 or params["window_strides"][d] != 1
            or tuple(pads[d]) != (0, 0) or base[d] != 1}


@register("reduce_window_sum", "reduce_window_max", "reduce_window_min", "reduce_window",
          "select_and_scatter_add", "select_and_gather_add", "select_and_scatter")
def window_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    window = math.prod(op.params["window_dimensions"])
    return same_layout(op, mesh, _window_dims(op.params), op.primitive, float(window))
