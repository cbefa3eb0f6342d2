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

    # summed one term at a time in node and edge order (the figures the solver compares)
    # over Python ints: a deep model has tens of thousands of nodes and edges
    ch, ok = choice.tolist(), valid.tolist()
    node_cost = memory = 0.0
    for i in np.flatnonzero(valid).tolist():
        node_cost += float(problem.node_costs[i][ch[i]])
        memory += float(problem.node_memory[i][ch[i]])

    edge_cost = 0.0
    edges = np.asarray(problem.edges).reshape(-1, 2)
    us, vs = edges[:, 0].tolist(), edges[:, 1].tolist()
    for mat, u, v in zip(problem.edge_costs, us, vs):
        if ok[u] and ok[v]:
            edge_cost += float(mat[ch[u], ch[v]])
    for e, mm in sorted(problem.edge_memory.items()):
        u, v = us[e], vs[e]
        if ok[u] and ok[v]:
            memory += float(mm[ch[u], ch[v]])

    for v, (u, mapping) in sorted(problem.follows.items()):
        if ok[u] and ok[v] and ch[v] != mapping[ch[u]]:
            violations.append(
                f"{problem.label(v)} has strategy {choice[v]} but follows {problem.label(u)}, "
                f"whose strategy {choice[u]} requires {int(mapping[choice[u]])}")

    budget = problem.memory_budget
    if budget is not None and memory > budget:
        violations.append(f"memory {memory:.6g} bytes exceeds the budget {budget:.6g} bytes "
                          f"by {memory - budget:.6g} bytes")
    return CostBreakdown(node_cost, edge_cost, node_cost + edge_cost, memory, tuple(violations))
