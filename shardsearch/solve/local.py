"""A fast heuristic for when the ILP is too big to finish: iterated conditional modes.

Each node in turn takes the strategy that is cheapest given its neighbours' current
strategies, until a sweep changes nothing (a local optimum). Started from a few
simple assignments; the best result is the MIP's hint and the fallback plan.
Works on a problem without follows (the reduced core); ignores the memory budget
(callers check feasibility with evaluate).
"""

from __future__ import annotations

import numpy as np

from .evaluate import evaluate
from .problem import Problem


def _sweeps(p: Problem, choice: np.ndarray, incident, max_sweeps: int) -> np.ndarray:
    edges = np.asarray(p.edges).reshape(-1, 2)
    for _ in range(max_sweeps):
        changed = False
        for v in range(p.num_nodes):
            total = np.array(p.node_costs[v], dtype=np.float64)
            for e, v_is_row in incident[v]:
                u, w = edges[e]
                m = p.edge_costs[e]
                total = total + (m[:, choice[w]] if v_is_row else m[choice[u], :])
            best = int(np.argmin(total))
            if total[best] < total[choice[v]] - 1e-15:
                choice[v] = best
                changed = True
        if not changed:
            break
    return choice


def local_search(p: Problem, starts: list[np.ndarray] | None = None, max_sweeps: int = 100) -> np.ndarray:
    incident: list[list[tuple[int, bool]]] = [[] for _ in range(p.num_nodes)]
    for e, (u, v) in enumerate(np.asarray(p.edges).reshape(-1, 2)):
        incident[int(u)].append((e, True))
        incident[int(v)].append((e, False))
    if starts is None:
        starts = [
            np.zeros(p.num_nodes, dtype=np.int64),  # strategy 0: replicated, by convention
            np.array([int(np.argmin(c)) for c in p.node_costs], dtype=np.int64),
        ]
    best, best_cost = None, np.inf
    for start in starts:
        choice = _sweeps(p, np.array(start, dtype=np.int64), incident, max_sweeps)
        cost = evaluate(p, choice).total
        if cost < best_cost:
            best, best_cost = choice, cost
    return best


def fit_memory(p: Problem, choice: np.ndarray) -> np.ndarray | None:
    """``choice`` changed node by node until the memory budget holds: each step takes the
    switch that frees the most bytes per second of cost it adds (neighbours fixed).
    None if no switch frees anything while the budget is still exceeded. The MIP needs
    a feasible start: under a binding budget it may find none of its own in time."""
    choice = np.array(choice, dtype=np.int64)
    if p.memory_budget is None:
        return choice
    mems = [np.asarray(m, dtype=np.float64) for m in p.node_memory]
    incident: list[list[tuple[int, bool]]] = [[] for _ in range(p.num_nodes)]
    edges = np.asarray(p.edges).reshape(-1, 2)
    for e, (u, v) in enumerate(edges):
        incident[int(u)].append((e, True))
        incident[int(v)].append((e, False))
    used = sum(float(m[c]) for m, c in zip(mems, choice))
    while used > p.memory_budget:
        best = None
        for v in range(p.num_nodes):
            saved = mems[v][choice[v]] - mems[v]
            if not (saved > 0).any():
                continue
            total = np.array(p.node_costs[v], dtype=np.float64)
            for e, v_is_row in incident[v]:
                u, w = edges[e]
                m = p.edge_costs[e]
                total = total + (m[:, choice[w]] if v_is_row else m[choice[u], :])
            added = np.maximum(total - total[choice[v]], 1e-15)
            ratio = np.where(saved > 0, saved / added, -np.inf)
            s = int(np.argmax(ratio))
            if best is None or ratio[s] > best[0]:
                best = (ratio[s], v, s)
        if best is None:
            return None
        _, v, s = best
        used -= mems[v][choice[v]] - mems[v][s]
        choice[v] = s
    return choice
