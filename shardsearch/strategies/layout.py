"""Ops that move or relabel dims without computing: broadcast, transpose, squeeze, reshape."""

from __future__ import annotations

import math

from cost_model.mesh import MeshShape, Spec

from shardsearch.strategies.base import OpView, Strategy, register
from shardsearch.strategies.specs import enumerate_specs, fits, io_bytes, spec_name


def _strategy(op: OpView, mesh: MeshShape, ins: tuple[Spec, ...], out: Spec) -> Strategy:
    name = f"{', '.join(spec_name(s) for s in ins)} -> {spec_name(out)}"
    return Strategy(name, ins, (out,), (), 0.0, io_bytes(op, ins, (out,), mesh))


def _with_extra_operands(op: OpView, first: Spec) -> tuple[Spec, ...]:
    """Any operands after the first (dynamic shapes) are small and stay replicated."""
    return (first,) + tuple(((),) * len(s) for s in op.in_shapes[1:])


@register("broadcast_in_dim")
def broadcast_in_dim_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    shape, out_shape = op.in_shapes[0], op.out_shapes[0]
    bdims = tuple(op.params["broadcast_dimensions"])
    result = []
    for out in enumerate_specs(out_shape, mesh):
        # An operand dim of size 1 is broadcast: its copy on every device is whole.
        spec = tuple(out[o] if n == out_shape[o] else () for n, o in zip(shape, bdims))
        result.append(_strategy(op, mesh, _with_extra_operands(op, spec), out))
    return result


@register("transpose")
def transpose_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    perm = tuple(op.params["permutation"])
    result = []
    for spec in enumerate_specs(op.in_shapes[0], mesh):
        result.append(_strategy(op, mesh, (spec,), tuple(spec[p] for p in perm)))
    return result


@register("squeeze")
def squeeze_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    rank = len(op.in_shapes[0])
    dropped = {int(d) % rank for d in op.params["dimensions"]}
    kept = [i for i in range(rank) if i not in dropped]
    result = []
    for out in enumerate_specs(op.out_shapes[0], mesh):
        spec = [()] * rank
        for i, d in zip(kept, out):
            spec[i] = d
        result.append(_strategy(op, mesh, (tuple(spec),), out))
    return result


def _groups(a: tuple[int, ...], b: tuple[int, ...]):
    """Minimal groups of consecutive dims with equal products, ignoring size-1 dims.

    Returns, per side, a map dim -> group for the dims of size > 1, and the leading
    (first size > 1) dim of each group on each side. None if the sizes do not match up.
    """
    ga, gb, lead_a, lead_b = {}, {}, [], []
    ia = [i for i, n in enumerate(a) if n != 1]
    ib = [i for i, n in enumerate(b) if n != 1]
    i = j = 0
    while i < len(ia) and j < len(ib):
        g = len(lead_a)
        lead_a.append(ia[i])
        lead_b.append(ib[j])
        pa, pb = a[ia[i]], b[ib[j]]
        ga[ia[i]], gb[ib[j]] = g, g
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb and i < len(ia):
                pa *= a[ia[i]]
                ga[ia[i]] = g
                i += 1
            elif pb < pa and j < len(ib):
                pb *= b[ib[j]]
                gb[ib[j]] = g
                j += 1
            else:
                return None
    if i < len(ia) or j < len(ib):
        return None
    return ga, gb, lead_a, lead_b


def _carry(spec: Spec, src_groups, src_lead, dst_lead, dst_shape, mesh) -> Spec | None:
    """Move each split from its group's leading dim on one side to the other's, if it fits."""
    out = [()] * len(dst_shape)
    for d, axes in enumerate(spec):
        if not axes:
            continue
        g = src_groups.get(d)
        if g is None or src_lead[g] != d:
            return None  # a split on a non-leading dim would need a reshuffle
        out[dst_lead[g]] = axes
    out = tuple(out)
    return out if fits(dst_shape, out, mesh) else None


@register("reshape")
def reshape_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    if op.params.get("dimensions") is not None:
        return []
    shape, out_shape = tuple(op.in_shapes[0]), tuple(op.out_shapes[0])
    if math.prod(shape) == 0:
        return []
    grouping = _groups(shape, out_shape)
    if grouping is None:
        return []
    ga, gb, lead_a, lead_b = grouping
    pairs = {}
    for spec in enumerate_specs(shape, mesh):
        out = _carry(spec, ga, lead_a, lead_b, out_shape, mesh)
        if out is not None:
            pairs.setdefault((spec, out), None)
    for out in enumerate_specs(out_shape, mesh):
        spec = _carry(out, gb, lead_b, lead_a, shape, mesh)
        if spec is not None:
            pairs.setdefault((spec, out), None)
    return [_strategy(op, mesh, _with_extra_operands(op, s), o) for s, o in pairs]
