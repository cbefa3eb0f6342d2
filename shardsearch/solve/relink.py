"""Path relinking between two plans: from one within the memory budget towards a cheaper
one over it, taking the other's choices one unit at a time while the budget holds.

The Lagrangian search (lagrange.py) ends with a plan over the budget and a dearer one
within it, found at nearby prices; with repeated layers tied, memory moves in big steps
between priced optima, so the plans in between are never an optimum of any price. A
unit is a set of nodes that switch together and keep the plan valid: every node whose
follows-root has the same label (repeated layers' copies share one), followers included.
Each step takes the switch that saves the most seconds and still fits (deltas over the
units' nodes and incident edges only), until none saves anything.
"""

from __future__ import annotations

import numpy as np

from .evaluate import evaluate
from .merge import resolve_follows
from .problem import Problem


def relink(problem: Problem, fits: np.ndarray, over: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """A plan within ``problem.memory_budget`` no dearer than ``fits`` (which must fit),
    built by moving towards ``over``; ``labels``: a label per node (repeated layers)."""
    budget = float(problem.memory_budget)
    root, _ = resolve_follows(problem)
    key = np.asarray(root) if labels is None else np.asarray(labels)[root]
    current, target = np.array(fits, dtype=np.int64), np.asarray(over, dtype=np.int64)
    edges = np.asarray(problem.edges, dtype=np.int64).reshape(-1, 2)
    incident: list[list[int]] = [[] for _ in range(problem.num_nodes)]
    for e, (u, v) in enumerate(edges):
        incident[u].append(e)
        if v != u:
            incident[v].append(e)
    units: dict[int, np.ndarray] = {}
    for k in np.unique(key[current != target]):
        units[int(k)] = np.flatnonzero(key == k)

    def delta(nodes: np.ndarray) -> tuple[float, float]:
        """(seconds, bytes) that switching ``nodes`` to ``target`` adds."""
        new = current.copy()
        new[nodes] = target[nodes]
        cost = mem = 0.0
        for i in nodes:
            cost += problem.node_costs[i][new[i]] - problem.node_costs[i][current[i]]
            mem += problem.node_memory[i][new[i]] - problem.node_memory[i][current[i]]
        for e in {e for i in nodes for e in incident[i]}:
            u, v = edges[e]
            cost += problem.edge_costs[e][new[u], new[v]] - problem.edge_costs[e][current[u], current[v]]
            if e in problem.edge_memory:
                mm = problem.edge_memory[e]
                mem += mm[new[u], new[v]] - mm[current[u], current[v]]
        return float(cost), float(mem)

    used = evaluate(problem, current).memory
    while units:
        moves = [(delta(nodes), k) for k, nodes in sorted(units.items())]
        fitting = [((cost, mem), k) for (cost, mem), k in moves if cost < -1e-15 and used + mem <= budget]
        if not fitting:
            break
        (cost, mem), k = min(fitting, key=lambda m: (m[0][0], m[1]))
        current[units[k]] = target[units[k]]
        used += mem
        del units[k]
    return current
