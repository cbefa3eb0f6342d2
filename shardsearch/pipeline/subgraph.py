"""A piece of a graph as a graph of its own (numpy only).

``extract(parent, members, inputs, outputs) -> OpGraph``: the nodes ``members`` of
``parent`` (in parent order) as a graph whose input nodes stand for the ``inputs`` (values
of ``parent`` made outside the piece, in that order) and whose outputs are ``outputs``
(values of ``parent`` the piece makes or takes as inputs). Regions wholly inside the
piece come along; one cut by the piece is an error (a stage must run a loop whole). The
piece has no pytrees (``in_tree``/``out_tree`` None) and no output aliases: plan it with
``search.plan_graph`` and run it with ``trace.eval_graph`` on flat lists.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from shardsearch.graph import Cond, LiteralValue, Loop, NodeKind, OpGraph, OpNode, Remat, ValueRef, While

CUT_REGION = ("a {kind} region (nodes {first}..{last}) is split between two programs of the pipeline; "
              "stage cuts must leave loops, conds and remat regions whole")


def _name(parent: OpGraph, ref: ValueRef) -> str:
    node = parent.nodes[ref.node]
    return node.label if node.kind is NodeKind.INPUT else f"{node.primitive} #{ref.node}[{ref.index}]"


def remap_region(region, ids, refs):
    """``region`` with node ids mapped by ``ids`` and operands by ``refs``."""
    many = lambda xs: tuple(ids[x] for x in xs)  # noqa: E731
    opnds = lambda xs: tuple(refs(x) for x in xs)  # noqa: E731
    if isinstance(region, Loop):
        return dataclasses.replace(region, slices=many(region.slices), carries=many(region.carries),
                                   body=many(region.body), carry_out=opnds(region.carry_out), ys=opnds(region.ys),
                                   outs=many(region.outs), stacks=many(region.stacks))
    if isinstance(region, Remat):
        return dataclasses.replace(region, members=many(region.members), inputs=opnds(region.inputs),
                                   outputs=opnds(region.outputs))
    if isinstance(region, Cond):
        return dataclasses.replace(region, index=refs(region.index), branches=tuple(map(many, region.branches)),
                                   results=tuple(map(opnds, region.results)), merges=many(region.merges))
    return dataclasses.replace(region, carries=many(region.carries), cond=many(region.cond), pred=refs(region.pred),
                               body=many(region.body), carry_out=opnds(region.carry_out), outs=many(region.outs))


def extract(parent: OpGraph, members: Sequence[int], inputs: Sequence[ValueRef],
            outputs: Sequence[ValueRef]) -> OpGraph:
    nodes: list[OpNode] = []
    new: dict[ValueRef, ValueRef] = {}
    for ref in inputs:
        info = parent.info(ref)
        new[ref] = ValueRef(len(nodes))
        nodes.append(OpNode(len(nodes), NodeKind.INPUT, "input", {}, (), (info,), _name(parent, ref)))
    ids: dict[int, int] = {}

    def refs(r):
        if isinstance(r, LiteralValue):
            return r
        if r in new:
            return new[r]
        if r.node in ids:
            return ValueRef(ids[r.node], r.index)
        raise KeyError(f"{_name(parent, r)} is read by the piece but neither made in it nor one of its inputs")

    for n in sorted(members):
        node = parent.nodes[n]
        ids[n] = len(nodes)
        nodes.append(dataclasses.replace(node, id=ids[n], inputs=tuple(refs(r) for r in node.inputs)))
    kept: dict[type, list] = {Loop: [], Remat: [], Cond: [], While: []}
    inside = set(members)
    for region in parent.regions:
        count = sum(m in inside for m in region.members)
        if count == len(region.members):
            kept[type(region)].append(remap_region(region, ids, refs))
        elif count:
            raise ValueError(CUT_REGION.format(kind=type(region).__name__, first=region.members[0],
                                               last=region.members[-1]))
    return OpGraph(
        nodes=nodes,
        outputs=tuple(refs(r) for r in outputs),
        input_nodes=tuple(range(len(inputs))),
        in_paths=tuple(nodes[i].label for i in range(len(inputs))),
        out_paths=tuple(f"out[{k}] {_name(parent, r)}" if isinstance(r, ValueRef) else f"out[{k}]"
                        for k, r in enumerate(outputs)),
        in_tree=None,
        out_tree=None,
        output_aliases=(None,) * len(outputs),
        loops=tuple(kept[Loop]),
        remats=tuple(kept[Remat]),
        conds=tuple(kept[Cond]),
        whiles=tuple(kept[While]),
    )
