"""The search's call into ``compare``: solver settings and the plan's own pricing."""

from __future__ import annotations

import time

import numpy as np

from cost_model.mesh import MeshShape
from shardsearch.compare.baselines import Alternative
from shardsearch.compare.complete import compare
from shardsearch.graph import NodeKind, OpGraph
from shardsearch.memory import carried_args, memory_breakdown
from shardsearch.solve import solve
from shardsearch.costs import CostTables
from shardsearch.solve.problem import Problem
from shardsearch.strategies import Strategy

# The recipes share what is left of the search's time limit, each at least this long.
MIN_SOLVE_S = 1.0


def price_recipes(graph: OpGraph, per_node: list[list[Strategy]], problem: Problem, costs: CostTables, *,
                  mesh: MeshShape, memory_budget: float | None, config, ties, log,
                  time_left_s: float) -> tuple[Alternative, ...]:
    """``plan.alternatives()``: each recipe completed by the solver within the time the
    search has left (``time_left_s``, shared by the recipes, at least ``MIN_SOLVE_S`` each)."""
    from shardsearch.plan import _collective_memory_s, _resharded_operands

    if mesh.size <= 1:
        return ()
    start = time.perf_counter()

    def complete(sub: Problem):
        sol = solve(sub, time_limit_s=max(MIN_SOLVE_S, time_left_s / 3), num_workers=config.num_workers,
                    seed=config.seed, backend=config.solver.value, ties=ties)
        return sol.choice, sol.status

    def split_compute(choice: np.ndarray) -> float:
        own = float(sum(costs.compute[i][c] for i, c in enumerate(choice)))
        return own + _collective_memory_s(problem, costs, choice)

    def peak_bytes(chosen: list[Strategy]) -> float:
        flat_in = tuple(chosen[n].out_specs[0] for n in graph.input_nodes)
        outs = {n.id: chosen[n.id].out_specs for n in graph.nodes if n.kind is NodeKind.OP}
        return memory_breakdown(graph, flat_in, outs, mesh, node_operand_specs=_resharded_operands(graph, chosen),
                                donated=frozenset(carried_args(graph))).peak_bytes

    found = compare(graph, per_node, problem, mesh=mesh, solve=complete, split_compute=split_compute,
                    peak_bytes=peak_bytes, memory_budget=memory_budget)
    if log:
        log(f"priced {', '.join(a.name for a in found)} for comparison in {time.perf_counter() - start:.2f} s")
    return found
