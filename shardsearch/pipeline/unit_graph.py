"""A set of a graph's nodes as an OpGraph of its own, to price it (numpy only).

Unlike ``subgraph.extract`` (a stage's program, which must run whole), a piece to price
may cut regions: a layer unit's backward can start inside a remat region. So
``subgraph(graph, nodes) -> SubGraph`` finds the piece's inputs and outputs itself and
drops the regions it cuts: the chosen nodes in graph order, renumbered; every
value they read from outside becomes an INPUT node (once per value), and every value of
theirs that outside nodes or the step's results read is an output. An input that the
subgraph also makes the next value of (a parameter and its update) is aliased to that
output, as the step's own arguments are. Regions (loops, remat, cond, while) whose nodes
are all inside come along renumbered; the others are dropped (their nodes are planned
as plain operators: a loop body keeps its trip count). Stage costs (``stage_costs.py``)
plan one layer unit, or one stage, of a step this way on a submesh.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

from shardsearch.graph import Cond, LiteralValue, Loop, NodeKind, OpGraph, OpNode, Remat, ValueRef, While


@dataclasses.dataclass(frozen=True)
class SubGraph:
    graph: OpGraph
    node_map: dict  # original node id -> subgraph node id (inputs made for outside values excluded)
    inputs: tuple[ValueRef, ...]  # per subgraph argument: the original value it stands for
    outputs: tuple[ValueRef, ...]  # per subgraph output: the original value


def subgraph(graph: OpGraph, nodes: Iterable[int]) -> SubGraph:
    keep = sorted(set(nodes))
    inside = set(keep)
    outside_reads = set()
    users = graph.users()  # from the piece's own nodes: a unit is a small share of a deep model
    for i in keep:
        for c, j in users[i]:
            if c not in inside:
                outside_reads.add((i, graph.nodes[c].inputs[j].index))
    outside_reads |= {(r.node, r.index) for r in graph.outputs if isinstance(r, ValueRef) and r.node in inside}

    new_nodes: list[OpNode] = []
    node_map: dict[int, int] = {}
    made: dict[ValueRef, ValueRef] = {}  # outside value -> its input node's output
    inputs: list[ValueRef] = []
    input_ids: list[int] = []

    def operand(r):
        if isinstance(r, LiteralValue):
            return r
        if r.node in node_map:
            return ValueRef(node_map[r.node], r.index)
        if r not in made:
            src = graph.nodes[r.node]
            nid = len(new_nodes)
            kind = src.kind if src.kind is not NodeKind.OP else NodeKind.INPUT
            if kind is NodeKind.CONST:
                new_nodes.append(dataclasses.replace(src, id=nid, trips=1))
            else:
                new_nodes.append(OpNode(nid, NodeKind.INPUT, "input", {}, (), (graph.info(r),),
                                        f"{src.label or src.primitive} #{r.node}[{r.index}]"))  # unique: pins name it
                inputs.append(r)
                input_ids.append(nid)
            made[r] = ValueRef(nid)
        return made[r]

    for i in keep:
        n = graph.nodes[i]
        ins = tuple(operand(r) for r in n.inputs)
        nid = len(new_nodes)
        node_map[i] = nid
        new_nodes.append(dataclasses.replace(n, id=nid, inputs=ins))
    outputs = tuple(ValueRef(node, k) for node, k in sorted(outside_reads))
    aliases = _aliases(graph, outputs, inputs)
    regions = _regions(graph, inside, node_map, made)
    sub = OpGraph(new_nodes, tuple(ValueRef(node_map[r.node], r.index) for r in outputs), tuple(input_ids),
                  tuple(new_nodes[i].label for i in input_ids), tuple(f"out{k}" for k in range(len(outputs))),
                  None, None, aliases, *regions)
    return SubGraph(sub, node_map, tuple(inputs), outputs)


def _aliases(graph: OpGraph, outputs, inputs) -> tuple[int | None, ...]:
    """Output k is the next value of subgraph argument i when the step says so."""
    arg_of_node = {n: i for i, n in enumerate(graph.input_nodes)}
    next_of: dict[ValueRef, int] = {}
    for ref, arg in zip(graph.outputs, graph.output_aliases or (None,) * len(graph.outputs)):
        if arg is not None and isinstance(ref, ValueRef):
            next_of[ref] = arg
    position = {r.node: k for k, r in enumerate(inputs) if r.node in arg_of_node}
    out = []
    for r in outputs:
        arg = next_of.get(r)
        out.append(position.get(graph.input_nodes[arg]) if arg is not None else None)
    used, result = set(), []
    for a in out:  # one output per argument
        result.append(a if a is not None and a not in used else None)
        if a is not None:
            used.add(a)
    return tuple(result)


def _regions(graph: OpGraph, inside: set, m: dict, made: dict):
    """The regions all of whose nodes are inside, renumbered; a value a region reads from
    outside maps to the input node made for it."""

    def ids(xs):
        return tuple(m[x] for x in xs)

    def ref(r):
        if isinstance(r, LiteralValue):
            return r
        return ValueRef(m[r.node], r.index) if r.node in m else made[r]

    def known(refs) -> bool:
        return all(isinstance(r, LiteralValue) or r.node in m or r in made for r in refs)

    def keep(region, refs=()) -> bool:
        return set(region.members) <= inside and known(refs)

    loops = tuple(Loop(x.length, x.reverse, x.unroll, ids(x.slices), ids(x.carries), ids(x.body),
                       tuple(map(ref, x.carry_out)), tuple(map(ref, x.ys)), ids(x.outs), ids(x.stacks))
                  for x in graph.loops if keep(x, x.carry_out + x.ys))
    remats = tuple(Remat(ids(x.members), tuple(map(ref, x.inputs)), tuple(map(ref, x.outputs)), x.prevent_cse,
                         x.policy, x.payload)
                   for x in graph.remats if keep(x, x.inputs + x.outputs))
    conds = tuple(Cond(ref(x.index), tuple(map(ids, x.branches)), tuple(tuple(map(ref, r)) for r in x.results),
                       ids(x.merges))
                  for x in graph.conds if keep(x, (x.index,) + tuple(r for b in x.results for r in b)))
    whiles = tuple(While(ids(x.carries), ids(x.cond), ref(x.pred), ids(x.body), tuple(map(ref, x.carry_out)),
                         ids(x.outs))
                   for x in graph.whiles if keep(x, (x.pred,) + x.carry_out))
    return loops, remats, conds, whiles
