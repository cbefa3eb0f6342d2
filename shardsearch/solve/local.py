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
