"""All-reduces on the critical path that XLA's combiner merges with the one before them.

XLA's AllReduceCombiner walks the program in order and merges each all-reduce into the
group before it when neither depends on the other (same reduction, dtype and devices),
so only a chain of dependent all-reduces keeps its launches apart. The gradient
all-reduces off the critical path are priced so already (``combined_share``); the ones on
it are not: a batch norm's backward pass reduces its output gradient two or three ways
(sums over the batch that the input gradient needs), independently of each other, and
XLA all-reduces them as one. Compiled for 8 x H100, wresnet at the medium widths with one
block per stage, data parallel: 85 such all-reduces planned at a launch each, 62 in the
program, every one of them tiny (the launch is the price): the plan was over-priced by a
fifth of its communication.

An all-reduce independent of the critical-path all-reduce before it (program order) pays
no launch of its own when that one all-reduces too, over the same axes in the same dtype.
The saving depends on both operators' strategies, so it is an edge between them: the
later operator's all-reducing strategies carry their launch latency on it (their node row
keeps the bandwidth), paid unless the earlier one all-reduces alike.
"""

from __future__ import annotations

import numpy as np

from cost_model import Cluster, CollectiveKind, MeshShape, collective_cost
from shardsearch.graph import NodeKind, OpGraph
from shardsearch.strategies import Strategy


def _reaches(users, start: int, target: int) -> bool:
    """Whether ``target`` reads (transitively) what ``start`` computes (readers come after
    what they read, so the walk stops at ``target``'s id)."""
    seen, todo = {start}, [start]
    while todo:
        for u, _ in users[todo.pop()]:
            if u == target:
                return True
            if u < target and u not in seen:
                seen.add(u)
                todo.append(u)
    return False


def _signature(s: Strategy) -> tuple | None:
    """The all-reduce axes of a strategy whose only collectives are all-reduces."""
    if not s.collectives or any(c.kind is not CollectiveKind.ALL_REDUCE for c in s.collectives):
        return None
    return tuple(sorted({tuple(c.axes) for c in s.collectives}))


def combined_pairs(graph: OpGraph, strategies: list[list[Strategy]], off_path: set[int]) -> list[tuple[int, int]]:
    """(earlier, later) per two consecutive operators on the critical path (not in
    ``off_path``) run once per step that can all-reduce, of one result dtype, the later
    not reading the earlier's result."""
    users = graph.users()
    cands = [n.id for n in graph.nodes if n.kind is NodeKind.OP and n.id not in off_path and n.trips == 1
             and len(n.outputs) == 1 and any(_signature(s) is not None for s in strategies[n.id])]
    return [(a, b) for a, b in zip(cands, cands[1:])
            if graph.nodes[a].outputs[0].dtype == graph.nodes[b].outputs[0].dtype and not _reaches(users, a, b)]


def combine_edges(graph: OpGraph, strategies: list[list[Strategy]], cluster: Cluster, mesh: MeshShape,
                  comm: list[np.ndarray], off_path: set[int]) -> tuple[list[np.ndarray], list[tuple]]:
    """``comm`` with the later operator of each ``combined_pairs`` pair relieved of its
    all-reduces' launch latency, and the edges (earlier, later, seconds per strategy pair)
    that charge it back unless the earlier one all-reduces alike (see the module doc)."""
    comm = list(comm)  # rows are shared between repeated layers: replaced, never written in place
    no_latency = cluster.with_latency_share(0.0)
    edges = []
    for a, b in combined_pairs(graph, strategies, off_path):
        mine = [_signature(s) for s in strategies[b]]
        theirs = [_signature(s) for s in strategies[a]]
        launch = np.array([sum(collective_cost(cluster, mesh, c) - collective_cost(no_latency, mesh, c)
                               for c in s.collectives) if sig is not None else 0.0
                           for s, sig in zip(strategies[b], mine)])
        if not launch.any():
            continue
        comm[b] = comm[b] - launch
        same = np.array([[t is not None and t == m for m in mine] for t in theirs])
        edges.append((a, b, np.where(same, 0.0, launch[None, :])))
    return comm, edges
