"""Two all-reduced partial sums added together are all-reduced once (XLA's AllReduceReassociate).

A weight used twice (GPT's tied embedding: the input lookup and the output projection)
gets its gradient as the sum of two partial sums, one per use; under data parallelism
each is all-reduced by its own operator's strategy. XLA rewrites
``add(all-reduce(a), all-reduce(b))`` into ``all-reduce(add(a, b))`` when both reduce over
the same devices in the same layout (a transpose between them is folded first; the apply
leaves no pin there, ``apply.executable.implied_by_transpose``), so the earlier one's
all-reduce is never paid: compiled for two H100 nodes, gpt-medium-bf16's data-parallel
program all-reduces the 105 MB embedding gradient once, and a plan priced with both
all-reduces (0.23 ms more) preferred a layout for BERT's that reduces inside a node
after gathering the activations' gradient across nodes, judged 5% slower.

The saving depends on both operators' strategies, so it is an edge between them: the
earlier operator's all-reducing strategies carry their collectives' price on that edge
(their node row keeps the rest), paid unless the later one all-reduces the same bytes over
the same axes into the same layout.
"""

from __future__ import annotations

import numpy as np

from cost_model import CollectiveKind
from shardsearch.graph import NodeKind, OpGraph, ValueRef
from shardsearch.strategies import Strategy

_SUMS = ("add_any", "add")
_PASS = ("transpose",)  # layout-only readers XLA folds before reassociating


def _source(graph: OpGraph, users, ref) -> tuple[int, tuple[int, ...]] | None:
    """(the operator a summand comes from through single-reader transposes, the permutation
    from its result's dims to the summand's), or None."""
    if not isinstance(ref, ValueRef) or ref.index != 0:
        return None
    perm: tuple[int, ...] | None = None
    node = graph.nodes[ref.node]
    while node.kind is NodeKind.OP and node.primitive in _PASS and len(users[node.id]) == 1:
        step = tuple(node.params["permutation"])
        perm = step if perm is None else tuple(perm[p] for p in step)
        src = node.inputs[0]
        if not isinstance(src, ValueRef) or src.index != 0 or len(users[src.node]) != 1:
            return None
        node = graph.nodes[src.node]
    if node.kind is not NodeKind.OP or len(node.outputs) != 1:
        return None
    rank = len(node.outputs[0].shape)
    return node.id, perm if perm is not None else tuple(range(rank))


def summed_pairs(graph: OpGraph, candidates: set[int]) -> list[tuple[int, int, tuple, tuple]]:
    """(earlier, later, earlier's permutation, later's) per sum of two operators of
    ``candidates`` (off the critical path: their all-reduces are independent), each read
    by the sum alone (through transposes), run once per step."""
    users = graph.users()
    out = []
    for node in graph.nodes:
        if node.kind is not NodeKind.OP or node.primitive not in _SUMS or len(node.inputs) != 2 or node.trips > 1:
            continue
        got = [_source(graph, users, r) for r in node.inputs]
        if None in got or got[0][0] == got[1][0]:
            continue
        (a, pa), (b, pb) = sorted(got)
        if a in candidates and b in candidates and graph.nodes[a].trips == graph.nodes[b].trips == 1 \
                and all(len(users[i]) == 1 for i in (a, b)):
            out.append((a, b, pa, pb))
    return out


def _reduced(s: Strategy, perm: tuple) -> tuple | None:
    """(all-reduce axes and bytes, result layout in the sum's dims) of a strategy whose only
    collectives are all-reduces, else None."""
    if not s.collectives or any(c.kind is not CollectiveKind.ALL_REDUCE for c in s.collectives):
        return None
    spec = s.out_specs[0]
    return (tuple(sorted((tuple(c.axes), c.nbytes) for c in s.collectives)), tuple(spec[p] for p in perm))


def merge_edges(graph: OpGraph, strategies: list[list[Strategy]], comm: list[np.ndarray],
                candidates: set[int]) -> tuple[list[np.ndarray], list[tuple[int, int, np.ndarray]]]:
    """``comm`` with the earlier summand's all-reducing strategies relieved of their price,
    and the edges (earlier, later, seconds per strategy pair) that charge it back unless
    the later summand's strategy all-reduces alike (see the module doc)."""
    comm = list(comm)  # rows are shared between repeated layers: replaced, never written in place
    edges = []
    for a, b, pa, pb in summed_pairs(graph, candidates):
        mine = [_reduced(s, pa) for s in strategies[a]]
        theirs = [_reduced(s, pb) for s in strategies[b]]
        if not any(m is not None and m in theirs for m in mine):
            continue
        price = np.where([m is not None for m in mine], comm[a], 0.0)
        comm[a] = comm[a] - price
        same = np.array([[m is not None and m == t for t in theirs] for m in mine])
        edges.append((a, b, np.where(same, 0.0, price[:, None])))
    return comm, edges
