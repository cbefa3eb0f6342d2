"""Reductions: a split reduced dim leaves partial results that are all-reduced."""

from __future__ import annotations

from cost_model.collectives import Collective, CollectiveKind
from cost_model.mesh import MeshShape, local_bytes

from shardsearch.strategies.base import OpView, Strategy, register
from shardsearch.strategies.specs import enumerate_specs, io_bytes, local_elements, spec_name


def _reduce(op: OpView, mesh: MeshShape, split_reduced_ok: bool) -> list[Strategy]:
    shape, out_shape = op.in_shapes[0], op.out_shapes[0]
    axes = {int(a) % max(len(shape), 1) for a in op.params["axes"]}
    result = []
    for spec in enumerate_specs(shape, mesh):
        partial = tuple(a for d in sorted(axes) for a in spec[d])
        if partial and not split_reduced_ok:
            continue
        out = tuple(d for i, d in enumerate(spec) if i not in axes)
        colls = ()
        name = f"{spec_name(spec)} -> {spec_name(out)}"
        if partial:
            partial = tuple(a for a in mesh.axis_names if a in partial)  # a set: mesh order
            nbytes = local_bytes(out_shape, op.out_dtypes[0].itemsize, out, mesh)
            colls = (Collective(CollectiveKind.ALL_REDUCE, partial, nbytes),)
            name += f" [AR({','.join(partial)})]"
        outs = (out,) * len(op.out_shapes)
        result.append(Strategy(name, (spec,), outs, colls, local_elements(shape, spec, mesh),
                               io_bytes(op, (spec,), outs, mesh)))
    return result


@register("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or", "reduce_xor")
def reduce_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    return _reduce(op, mesh, split_reduced_ok=True)


@register("argmax", "argmin")
def arg_reduce_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    # The index of the winner is not a sum of partial results: keep the reduced dim whole.
    return _reduce(op, mesh, split_reduced_ok=False)


@register("reduce")
def generic_reduce_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    """lax.reduce with a computation of its own (variadic: n arrays and n init scalars):
    nothing says the computation combines partial results, so the reduced dims stay whole."""
    n = len(op.out_shapes)
    shape, axes = op.in_shapes[0], {int(a) for a in op.params["dimensions"]}
    if any(tuple(s) != tuple(shape) for s in op.in_shapes[:n]) or any(op.in_shapes[n:]):
        return []
    result = []
    for spec in enumerate_specs(tuple(1 if d in axes else m for d, m in enumerate(shape)), mesh):
        ins = (spec,) * n + ((),) * n
        outs = (tuple(a for d, a in enumerate(spec) if d not in axes),) * n
        result.append(Strategy(f"reduce {spec_name(spec)}", ins, outs, (), n * local_elements(shape, spec, mesh),
                               io_bytes(op, ins, outs, mesh)))
    return result
