"""slice, concatenate, stack, unstack, iota: dims whose extent changes stay whole.

``stack`` puts k operands side by side along a new dim and ``unstack`` takes one apart
(jnp.stack / jnp.unstack, e.g. in rotary embeddings): the other dims keep one layout
across every operand and output, the new (or removed) dim is whole.
"""

from __future__ import annotations

from cost_model.mesh import MeshShape

from shardsearch.strategies.base import OpView, Strategy, register
from shardsearch.strategies.specs import enumerate_specs, io_bytes, local_elements, spec_name


def _specs_keeping_whole(shape, whole, mesh: MeshShape):
    """Layouts of ``shape`` that leave the dims in ``whole`` unsplit (size 1 is never split)."""
    return enumerate_specs(tuple(1 if i in whole else n for i, n in enumerate(shape)), mesh)


@register("slice")
def slice_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    shape, out_shape = op.in_shapes[0], op.out_shapes[0]
    # A dim sliced to a shorter extent would need data from other shards.
    changed = {i for i, (n, m) in enumerate(zip(shape, out_shape)) if n != m}
    return [Strategy(f"{spec_name(s)} -> {spec_name(s)}", (s,), (s,), (), 0.0, io_bytes(op, (s,), (s,), mesh))
            for s in _specs_keeping_whole(shape, changed, mesh)]


@register("concatenate")
def concatenate_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    out_shape = op.out_shapes[0]
    dim = int(op.params["dimension"])
    result = []
    for s in _specs_keeping_whole(out_shape, {dim}, mesh):
        ins = (s,) * len(op.in_shapes)
        result.append(Strategy(f"concat {spec_name(s)}", ins, (s,), (), 0.0, io_bytes(op, ins, (s,), mesh)))
    return result


@register("iota", "iota_2x32_shape", "empty")
def iota_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    """Ops that make arrays from nothing (iota, the counters of partitionable random bits, an
    uninitialized buffer): each device makes its own block. Any operands (dynamic shapes) are small."""
    shape = op.out_shapes[0]
    if any(tuple(s) != tuple(shape) for s in op.out_shapes):
        return []
    result = []
    for s in enumerate_specs(shape, mesh):
        ins, outs = tuple(((),) * len(i) for i in op.in_shapes), (s,) * len(op.out_shapes)
        result.append(Strategy(f"{op.primitive} {spec_name(s)}", ins, outs, (),
                               local_elements(shape, s, mesh) * len(outs), io_bytes(op, ins, outs, mesh)))
    return result


def _with_whole_dim(spec, axis: int):
    return spec[:axis] + ((),) + spec[axis:]


@register("stack")
def stack_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    axis = int(op.params["axis"]) % len(op.out_shapes[0])
    result = []
    for s in enumerate_specs(op.in_shapes[0], mesh):
        ins, outs = (s,) * len(op.in_shapes), (_with_whole_dim(s, axis),)
        result.append(Strategy(f"stack {spec_name(s)}", ins, outs, (), 0.0, io_bytes(op, ins, outs, mesh)))
    return result


@register("unstack")
def unstack_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    axis = int(op.params["axis"]) % len(op.in_shapes[0])
    result = []
    for s in enumerate_specs(op.out_shapes[0], mesh):
        ins, outs = (_with_whole_dim(s, axis),), (s,) * len(op.out_shapes)
        result.append(Strategy(f"unstack {spec_name(s)}", ins, outs, (), 0.0, io_bytes(op, ins, outs, mesh)))
    return result
