"""The seams of control flow planned inline: a scan planned once (trace/jaxpr.py,
graph.Loop), a while loop (graph.While), a cond's branches (graph.Cond).

scan_slice   xs [length, ...] -> one iteration's slice [...]: any layout of the slice,
             with the stacked dim whole (each iteration reads its own row locally).
scan_stack   one iteration's output [...] -> ys [length, ...]: the same, reversed.
scan_carry, scan_out   the loop-carried value entering the body / leaving the loop:
             identities (the carry keeps its layout from iteration to iteration; the
             solver charges the body's next-carry -> carry resharding per iteration).
while_carry, while_out  the same for a while loop (while_out reads the carry itself).
cond_merge   the branches' results for one output of a cond -> the output: every
             branch hands its result over in the output's layout, so the output has
             one layout whichever branch ran. It moves nothing: the branch that runs
             writes the output buffer.
"""

from __future__ import annotations

from cost_model.mesh import MeshShape

from shardsearch.strategies.base import OpView, Strategy, register
from shardsearch.strategies.specs import enumerate_specs, io_bytes, spec_name


@register("scan_slice", "scan_stack")
def stacked_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    slicing = op.primitive == "scan_slice"
    row = op.out_shapes[0] if slicing else op.in_shapes[0]
    result = []
    for spec in enumerate_specs(row, mesh):
        stacked = ((),) + spec
        ins, outs = ((stacked,), (spec,)) if slicing else ((spec,), (stacked,))
        result.append(Strategy(f"{spec_name(ins[0])} -> {spec_name(outs[0])}", ins, outs, (), 0.0,
                               io_bytes(op, ins, outs, mesh) / 2))
    return result


@register("scan_carry", "scan_out", "while_carry", "while_out")
def carry_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    return [Strategy(spec_name(s), (s,), (s,), (), 0.0, 0.0) for s in enumerate_specs(op.in_shapes[0], mesh)]


@register("cond_merge")
def merge_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    return [Strategy(spec_name(s), (s,) * len(op.in_shapes), (s,), (), 0.0, 0.0)
            for s in enumerate_specs(op.out_shapes[0], mesh)]
