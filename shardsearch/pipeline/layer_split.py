"""A scan over layers split between stages: each stage's view of it (numpy only).

When a ``StageAssignment`` splits a scan over layers (``loop_splits``; its nodes and the
once-per-step work on layer-stacked values are ``SPLIT``), stage s runs the iterations
``[start, stop)`` of every split loop (the forward loop and its backward mirror share the
layer ranges) and holds those layers of every layer-stacked value: the stacked
parameters (dim ``layer_dims[input node]``), their optimizer state and update, the
loop's stacked residuals and gradients.

``layer_split(graph, assignment) -> LayerSplit | None`` reads the split;
``restrict(parent, to_orig, stage, layers, assignment)`` gives a graph (``parent``: the
traced graph or the micro graph; ``to_orig`` maps its node ids to the traced graph's)
in which every SPLIT node works on stage ``stage``'s layers: the split loops run
``stop - start`` iterations, layer-stacked shapes have that many layers on their layer
dim (shape params rewritten), and on every stage but the first a loop runs (the last,
for a reverse scan: the backward pass), each carry starts from a new input node: the
carry the previous stage's iterations ended with. ``restrict`` returns those input nodes
as ``{ValueRef: (the loop's scan_out value in the traced graph, the stage it comes from)}``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

from shardsearch.graph import NodeKind, OpGraph, OpNode, TensorInfo, ValueRef
from shardsearch.pipeline.assignment import SPLIT, StageAssignment
from shardsearch.pipeline.micro_graph import Rebound, rewrite_params

UNEVEN = "the split loops of a stage assignment must give every stage the same layers; got {splits}"


@dataclasses.dataclass(frozen=True)
class LayerSplit:
    ranges: Mapping[int, tuple[int, int]]  # stage -> [start, stop) of the layers it holds (non-empty)
    num_layers: int
    layer_dims: Mapping[int, int]  # traced-graph node -> the layer dim of its outputs (SPLIT nodes outside loops)
    loops: tuple[int, ...]  # the split loops, indices into the traced graph's loops

    def count(self, stage: int) -> int:
        a, b = self.ranges[stage]
        return b - a

    def order(self, reverse: bool) -> list[int]:
        """The stages in the order a loop runs its iterations through them."""
        stages = sorted(self.ranges, key=lambda s: self.ranges[s][0])
        return stages[::-1] if reverse else stages


def layer_split(graph: OpGraph, assignment: StageAssignment) -> LayerSplit | None:
    if not assignment.loop_splits:
        return None
    iterations = {tuple(ls.iterations) for ls in assignment.loop_splits}
    if len(iterations) != 1:
        raise ValueError(UNEVEN.format(splits=assignment.loop_splits))
    its = assignment.loop_splits[0].iterations
    return LayerSplit({s: tuple(r) for s, r in enumerate(its) if r[1] > r[0]},
                      graph.loops[assignment.loop_splits[0].loop].length, dict(assignment.layer_dims),
                      tuple(ls.loop for ls in assignment.loop_splits))


def _layer_dim(node: OpNode, orig: int, layers: LayerSplit) -> int | None:
    if orig in layers.layer_dims:
        return layers.layer_dims[orig]
    return 0 if node.primitive == "scan_stack" else None


def restrict(parent: OpGraph, to_orig: Callable[[int], int | None], stage: int, layers: LayerSplit,
             assignment: StageAssignment) -> tuple[OpGraph, dict[ValueRef, tuple[ValueRef, int]]]:
    count = layers.count(stage)
    split = lambda p: (o := to_orig(p)) is not None and assignment.node_stage[o] == SPLIT  # noqa: E731
    nodes: list[OpNode] = []
    for node in parent.nodes:
        if not split(node.id):
            nodes.append(node)
            continue
        new_in = tuple(r.info if not isinstance(r, ValueRef) else nodes[r.node].outputs[r.index] for r in node.inputs)
        old_in = tuple(parent.info(r) for r in node.inputs)
        d = _layer_dim(node, to_orig(node.id), layers)
        outs = tuple(o if d is None else TensorInfo(o.shape[:d] + (count,) + o.shape[d + 1:], o.dtype)
                     for o in node.outputs)
        if outs == node.outputs and new_in == old_in and "length" not in node.params:
            nodes.append(node)
            continue
        shapes = (tuple(i.shape for i in old_in), tuple(i.shape for i in new_in),
                  tuple(o.shape for o in node.outputs), tuple(o.shape for o in outs))
        params = rewrite_params(node.primitive, node.params, *shapes)
        if "length" in params and node.primitive.startswith("scan_"):
            params["length"] = count
        payload = node.payload
        if payload is not None and node.kind is NodeKind.OP:
            payload = Rebound(payload.primitive, rewrite_params(node.primitive, payload.params, *shapes))
        nodes.append(dataclasses.replace(node, params=params, outputs=outs, payload=payload))
    loops, virtual = [], {}
    for loop in parent.loops:
        if not split(loop.members[0]):
            loops.append(loop)
            continue
        loops.append(dataclasses.replace(loop, length=count))
        order = layers.order(loop.reverse)
        at = order.index(stage)
        if at == 0:
            continue
        for carry, out in zip(loop.carries, loop.outs):  # start from where the previous stage ended
            ref = ValueRef(len(nodes))
            nodes.append(OpNode(ref.node, NodeKind.INPUT, "input", {}, (), nodes[carry].outputs,
                                f"carry from stage {order[at - 1]}"))
            nodes[carry] = dataclasses.replace(nodes[carry], inputs=(ref,))
            virtual[ref] = (ValueRef(to_orig(out)), order[at - 1])
    return dataclasses.replace(parent, nodes=nodes, loops=tuple(loops)), virtual
