"""Exact pruning of dominated strategies.

Strategy t' of node v dominates t when, whatever its neighbours choose, switching v
from t to t' never costs more:

    cost[t'] - cost[t] + sum over v's edges of max_n (E[n, t'] - E[n, t]) <= 0

and t' uses no more memory, its edges' resharded copies included (whatever the
neighbours choose). Dropping t keeps the optimum. On our problems most
strategies of a node are dominated (a layout no neighbour wants), so the ILP shrinks
several-fold. Runs on a problem without follows (merge.reduce_problem's output).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .problem import Problem

_EPS = 1e-15  # seconds: ties are broken towards the lower strategy index


@dataclasses.dataclass(frozen=True)
class Pruning:
    problem: Problem
    keep: tuple[np.ndarray, ...]  # per node, the original indices of its remaining strategies

    def expand(self, choice) -> np.ndarray:
        return np.array([self.keep[i][int(c)] for i, c in enumerate(np.asarray(choice).reshape(-1))], dtype=np.int64)


def _incident(p: Problem) -> list[list[tuple[int, bool]]]:
    out: list[list[tuple[int, bool]]] = [[] for _ in range(p.num_nodes)]
    for e, (u, v) in enumerate(np.asarray(p.edges).reshape(-1, 2)):
        out[int(u)].append((e, True))  # v's strategies index columns; u is the row side
        out[int(v)].append((e, False))
    return out


def _worst(mats, s: int) -> np.ndarray:
    """[t', t]: the most switching from t to t' can add over these (neighbour, node) matrices."""
    worst = np.zeros((s, s))
    for m in mats:
        worst += (m[:, :, None] - m[:, None, :]).max(axis=0)
    return worst


def _dominated(costs, mems, mats, mem_mats=()) -> np.ndarray:
    """Boolean mask of strategies to drop; ``mats`` (``mem_mats``: edge memory) are
    (neighbour, this node) matrices."""
    s = len(costs)
    worst = _worst(mats, s)
    dom = (costs[:, None] - costs[None, :] + worst <= _EPS) & (mems[:, None] + _worst(mem_mats, s) <= mems[None, :])
    np.fill_diagonal(dom, False)
    drop = np.zeros(s, dtype=bool)
    for t in sorted(range(s), key=lambda t: (costs[t], t)):
        # t goes if a strategy still kept dominates it (ties: the earlier in this order stays)
        if any(dom[k, t] and not drop[k] and (not dom[t, k] or (costs[k], k) < (costs[t], t)) for k in np.nonzero(dom[:, t])[0]):
            drop[t] = True
    return drop


def prune_dominated(p: Problem, max_rounds: int = 4) -> Pruning:
    assert not p.follows, "prune after merge.reduce_problem"
    keep = [np.arange(len(c)) for c in p.node_costs]
    incident = _incident(p)
    edges = np.asarray(p.edges).reshape(-1, 2)
    for _ in range(max_rounds):
        changed = False
        for v in range(p.num_nodes):
            if len(keep[v]) <= 1:
                continue
            mats, mem_mats = [], []
            for e, v_is_row in incident[v]:
                u, w = int(edges[e][0]), int(edges[e][1])
                pairs = [(p.edge_costs[e], mats)] + ([(p.edge_memory[e], mem_mats)] if e in p.edge_memory else [])
                for matrix, out in pairs:
                    m = np.asarray(matrix)[np.ix_(keep[u], keep[w])]
                    out.append(m.T if v_is_row else m)  # rows: the neighbour, columns: v
            drop = _dominated(np.asarray(p.node_costs[v])[keep[v]], np.asarray(p.node_memory[v])[keep[v]],
                              mats, mem_mats)
            if drop.any():
                keep[v] = keep[v][~drop]
                changed = True
        if not changed:
            break
    pruned = Problem(
        node_costs=[np.asarray(c)[k] for c, k in zip(p.node_costs, keep)],
        node_memory=[np.asarray(m)[k] for m, k in zip(p.node_memory, keep)],
        edges=edges.copy(),
        edge_costs=[np.asarray(m)[np.ix_(keep[int(u)], keep[int(v)])] for m, (u, v) in zip(p.edge_costs, edges)],
        memory_budget=p.memory_budget,
        names=p.names,
        edge_memory={e: np.asarray(m)[np.ix_(keep[int(edges[e][0])], keep[int(edges[e][1])])]
                     for e, m in p.edge_memory.items()},
    )
    return Pruning(pruned, tuple(keep))
