"""Ops that hand their operands on unchanged, and ops whose layouts the user wrote down.

``optimization_barrier``, ``layout_constraint``, ``device_put`` (to no sharding) pass each
operand through in its own layout. ``sharding_constraint`` / ``reshard`` / ``device_put``
to a NamedSharding have the user's layout: the trace reads it into plain data (the
``shardsearch_specs`` param: per operand a spec, None where free; per dim the axes, None
where unconstrained) and the rule offers only that layout. ``shard_map`` takes and gives
its declared in_specs / out_specs (the ``shardsearch_in_specs`` / ``_out_specs`` params);
its body, collectives included, runs per device as written. ``dce_sink`` and
``inspect_sharding`` take one operand in any layout and give nothing.

A layout is honoured only on the planner's own mesh (``shardsearch_mesh``: the axis
names and sizes it was written for); otherwise the op has no strategy but replicated.
"""

from __future__ import annotations

import itertools
import math

from cost_model.mesh import MeshShape, Spec

from shardsearch.strategies.base import OpView, Strategy, register
from shardsearch.strategies.specs import enumerate_specs, fits, io_bytes, spec_name

# The trace's params (shardsearch.trace.jaxpr names them too; strategies see plain data only).
SPECS, IN_SPECS, OUT_SPECS, MESH = "shardsearch_specs", "shardsearch_in_specs", "shardsearch_out_specs", "shardsearch_mesh"

# Operands of a pass-through whose layouts are chosen jointly, at most this many
# combinations; smaller operands beyond it stay replicated (they are cheap to gather).
MAX_JOINT = 256


def _on_this_mesh(op: OpView, mesh: MeshShape) -> bool:
    """The user's layouts name axes of this mesh with the same sizes (or none at all)."""
    declared = op.params.get(MESH)
    if declared is None:
        return True
    sizes = dict(zip(mesh.axis_names, mesh.axis_sizes))
    return all(sizes.get(name) == n or n == 1 for name, n in declared)


def _meaningful(axes, mesh: MeshShape) -> tuple[str, ...]:
    """Axes of size 1 split nothing: drop them, as enumerate_specs does."""
    size = dict(zip(mesh.axis_names, mesh.axis_sizes))
    return tuple(a for a in axes if size.get(a, 1) > 1)


def _choices(shape, fixed, mesh: MeshShape) -> list[Spec]:
    """Layouts of one operand: any (fixed None), or those matching the user's constrained dims."""
    specs = enumerate_specs(shape, mesh)
    if fixed is None:
        return specs
    want = tuple(None if d is None else _meaningful(d, mesh) for d in fixed)
    want += ((),) * (len(shape) - len(want))
    return [s for s in specs if all(w is None or w == d for w, d in zip(want, s))]


def _joint(choices: list[list[Spec]], shapes, mesh: MeshShape) -> list[tuple[Spec, ...]]:
    """Combinations of per-operand layouts; beyond MAX_JOINT, the biggest operands choose."""
    order = sorted(range(len(choices)), key=lambda i: -math.prod(shapes[i]))
    free, count = set(), 1
    for i in order:
        if count * len(choices[i]) > MAX_JOINT:
            continue
        free.add(i)
        count *= len(choices[i])
    if len(free) < len(choices) and any(len(c) == 0 for i, c in enumerate(choices) if i not in free):
        return []
    per = [c if i in free else [s for s in c if not any(s)][:1] or c[:1] for i, c in enumerate(choices)]
    return list(itertools.product(*per))


@register("optimization_barrier", "layout_constraint", "device_put", "sharding_constraint", "reshard")
def pass_through_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    n = len(op.out_shapes)
    if len(op.in_shapes) < n or any(tuple(a) != tuple(b) for a, b in zip(op.in_shapes, op.out_shapes)):
        return []
    if not _on_this_mesh(op, mesh):
        return []
    fixed = op.params.get(SPECS) or (None,) * n
    choices = [_choices(op.in_shapes[k], fixed[k], mesh) for k in range(n)]
    result = []
    for specs in _joint(choices, op.in_shapes[:n], mesh):
        ins = specs + tuple(((),) * len(s) for s in op.in_shapes[n:])
        result.append(Strategy(f"{op.primitive} {', '.join(map(spec_name, specs))}", ins, specs, (), 0.0,
                               io_bytes(op, ins, specs, mesh)))
    return result


@register("dce_sink", "inspect_sharding")
def sink_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    if len(op.in_shapes) != 1 or op.out_shapes:
        return []
    return [Strategy(f"{op.primitive} {spec_name(s)}", (s,), (), (), 0.0, io_bytes(op, (s,), (), mesh))
            for s in enumerate_specs(op.in_shapes[0], mesh)]


def _declared(specs, shapes, mesh: MeshShape) -> tuple[Spec, ...] | None:
    out = []
    for spec, shape in zip(specs, shapes):
        full = tuple(_meaningful(d or (), mesh) for d in spec) + ((),) * (len(shape) - len(spec))
        if not fits(shape, full, mesh):
            return None
        out.append(full)
    return tuple(out)


@register("shard_map")
def shard_map_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    if IN_SPECS not in op.params or not _on_this_mesh(op, mesh):
        return []
    ins = _declared(op.params[IN_SPECS], op.in_shapes, mesh)
    outs = _declared(op.params[OUT_SPECS], op.out_shapes, mesh)
    if ins is None or outs is None or len(ins) != len(op.in_shapes) or len(outs) != len(op.out_shapes):
        return []
    name = f"shard_map {', '.join(map(spec_name, ins))} -> {', '.join(map(spec_name, outs))}"
    return [Strategy(name, ins, outs, (), 0.0, io_bytes(op, ins, outs, mesh))]
