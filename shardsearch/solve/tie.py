"""Tie nodes together: every node of a group takes the same strategy (repeated layers).

The tied problem has one node per group: its costs and memory are the sums over the
members, and every edge is re-pointed at the groups (an edge inside one group becomes
a self-edge, which merge.py folds onto the diagonal). Any choice of the tied problem,
expanded, costs exactly what the tied problem says, so the solver's optimum over tied
choices is exact; tying only narrows the choice (copies cannot differ).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .problem import Problem, ProblemError


@dataclasses.dataclass(frozen=True)
class Tied:
    problem: Problem
    group: np.ndarray  # group index of each original node

    def expand(self, tied_choice) -> np.ndarray:
        return np.asarray(tied_choice, dtype=np.int64)[self.group]


def usable_labels(problem: Problem, labels: np.ndarray) -> np.ndarray:
    """Labels with every group whose members differ in strategy count split up again."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    counts = np.array([len(c) for c in problem.node_costs])
    for lab in np.unique(labels):
        members = np.flatnonzero(labels == lab)
        if len(members) > 1 and len(set(counts[members])) > 1:
            labels[members] = members
    return labels


def tie_problem(problem: Problem, labels: np.ndarray) -> Tied:
    """Group the nodes with equal ``labels``; follows must already be resolved."""
    if problem.follows:
        raise ProblemError("tie_problem needs a problem without follows (reduce it first)")
    labels = usable_labels(problem, labels)
    uniq, group = np.unique(labels, return_inverse=True)
    first = np.full(len(uniq), -1, dtype=np.int64)
    for i in range(len(group) - 1, -1, -1):
        first[group[i]] = i
    costs = [np.zeros_like(np.asarray(problem.node_costs[i], dtype=np.float64)) for i in first]
    memory = [np.zeros_like(np.asarray(problem.node_memory[i], dtype=np.float64)) for i in first]
    for i, g in enumerate(group):
        costs[g] = costs[g] + problem.node_costs[i]
        memory[g] = memory[g] + problem.node_memory[i]
    edges = np.asarray(problem.edges, dtype=np.int64).reshape(-1, 2)
    names = [problem.names[i] for i in first] if problem.names else None
    tied = Problem(costs, memory, group[edges] if len(edges) else edges, list(problem.edge_costs),
                   problem.memory_budget, names=names, edge_memory=dict(problem.edge_memory))
    return Tied(tied, group)
