"""The solver's own evaluator: the cost of any assignment, and what it breaks.

Independent of the ILP and of the reductions on purpose, so tests can check both against
it (and brute force), and so a Plan's predicted cost is computed one way only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .problem import Problem


@dataclasses.dataclass(frozen=True)
class CostBreakdown:
    node_cost: float  # seconds: sum of the chosen strategies' costs
    edge_cost: float  # seconds: sum of the chosen entries of every edge matrix
    total: float  # node_cost + edge_cost
    memory: float  # bytes per device: the chosen strategies' and resharded copies' memory
    violations: tuple[str, ...]  # empty when the assignment is feasible

    @property
    def feasible(self) -> bool:
        return not self.violations


def evaluate(problem: Problem, choice) -> CostBreakdown:
    """Price `choice` (one strategy index per node) on `problem`.

    Out-of-range indices are reported as violations and contribute nothing to the sums
    (there is no cost to look up), so check `violations` before trusting `total`.
    """
    choice = np.asarray(choice).reshape(-1)
    n = problem.num_nodes
    violations: list[str] = []
    if len(choice) != n:
        violations.append(f"choice has {len(choice)} entries for {n} nodes")
        choice = np.concatenate([choice[:n], np.full(max(n - len(choice), 0), -1)])
    choice = choice.astype(np.int64)

    sizes = np.array([len(c) for c in problem.node_costs], dtype=np.int64)
    valid = (choice >= 0) & (choice < sizes)
    for i in np.flatnonzero(~valid)[:10]:
        violations.append(f"{problem.label(i)}: strategy {choice[i]} outside 0..{sizes[i] - 1}")
    if (~valid).sum() > 10:
        violations.append(f"... and {(~valid).sum() - 10} more out-of-range strategies")

    node_cost = memory = 0.0
    for i in np.flatnonzero(valid):
        node_cost += float(problem.node_costs[i][choice[i]])
        memory += float(problem.node_memory[i][choice[i]])

    edge_cost = 0.0
    edges = np.asarray(problem.edges).reshape(-1, 2)
    for e, (u, v) in enumerate(edges):
        if valid[u] and valid[v]:
            edge_cost += float(problem.edge_costs[e][choice[u], choice[v]])
    for e, mm in sorted(problem.edge_memory.items()):
        u, v = edges[e]
        if valid[u] and valid[v]:
            memory += float(mm[choice[u], choice[v]])

    for v, (u, mapping) in sorted(problem.follows.items()):
        if valid[u] and valid[v] and choice[v] != mapping[choice[u]]:
            violations.append(
                f"{problem.label(v)} has strategy {choice[v]} but follows {problem.label(u)}, "
                f"whose strategy {choice[u]} requires {int(mapping[choice[u]])}")

    budget = problem.memory_budget
    if budget is not None and memory > budget:
        violations.append(f"memory {memory:.6g} bytes exceeds the budget {budget:.6g} bytes "
                          f"by {memory - budget:.6g} bytes")
    return CostBreakdown(node_cost, edge_cost, node_cost + edge_cost, memory, tuple(violations))
