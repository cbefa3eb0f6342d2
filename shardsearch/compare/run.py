"""The search's call into ``compare``: solver settings and the plan's own pricing."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from cost_model.mesh import MeshShape
from shardsearch.compare.baselines import RECIPES, Alternative
from shardsearch.compare.complete import compare, completed
from shardsearch.graph import NodeKind, OpGraph
from shardsearch.memory import carried_args, memory_breakdown
from shardsearch.solve import solve
from shardsearch.costs import CostTables
from shardsearch.costs.gathers import GatherPricing, settle
from shardsearch.costs.copies import copy_labels, shared_reads
from shardsearch.solve.problem import Problem
from shardsearch.strategies import Strategy

# The recipes share what is left of the search's time limit, each at least this long.
MIN_SOLVE_S = 1.0


def price_recipes(graph: OpGraph, per_node: list[list[Strategy]], problem: Problem, costs: CostTables, *,
                  mesh: MeshShape, memory_budget: float | None, config, ties, log, time_left_s: float,
                  copies_for: frozenset = frozenset(),
                  rebuild: Callable[[frozenset, GatherPricing | None], tuple[Problem, CostTables]] | None = None
                  ) -> tuple[Alternative, ...]:
    """``plan.alternatives()``: each recipe completed by the solver within the time the
    search has left (``time_left_s``, shared by the recipes, at least ``MIN_SOLVE_S`` each).
    As in the search, values a completion reads twice in one new layout get one shared copy
    (``rebuild``: the problem with copies for those values, and the latency share of the
    recipe's own hidden reshards) and it is completed again, so a recipe costs what the
    search pinned to it would find. ``ties``: the graph's tie labels."""
    from shardsearch.plan import _collective_memory_s, _resharded_operands

    if mesh.size <= 1:
        return ()
    start = time.perf_counter()
    deadline = start + max(MIN_SOLVE_S * len(RECIPES), time_left_s)
    costs_of = {id(problem): costs}

    def solver(tables: CostTables):
        def run(sub: Problem):
            sol = solve(sub, time_limit_s=max(MIN_SOLVE_S, time_left_s / 3), num_workers=config.num_workers,
                        seed=config.seed, backend=config.solver.value,
                        ties=None if ties is None else copy_labels(ties, tables.copies))
            return sol.choice, sol.status
        return run

    def complete(keep):
        current, tables, copies = problem, costs, copies_for
        share, tried = None, set()  # the hidden reshards' latency share, settled per recipe as in the search
        while True:
            choice, status = completed(current, keep, solver(tables))
            new = shared_reads(tables.reads, current.edge_costs, choice) if rebuild is not None else frozenset()
            gathers = settle(tables.hidden_reshards, choice)
            resettle = rebuild is not None and gathers.members > 0 and gathers.signature() not in tried and (
                share is None or not gathers.same_price(share))
            if not new and not resettle or time.perf_counter() >= deadline:
                return current, choice, status
            tried.add(gathers.signature())
            copies, share = copies | new, gathers if resettle else share
            current, tables = rebuild(copies, share)
            costs_of[id(current)] = tables

    def split_compute(priced: Problem, choice: np.ndarray) -> float:
        tables = costs_of[id(priced)]
        own = float(sum(tables.compute[i][c] for i, c in enumerate(choice)))
        return own + _collective_memory_s(priced, tables, choice)

    def peak_bytes(chosen: list[Strategy]) -> float:
        flat_in = tuple(chosen[n].out_specs[0] for n in graph.input_nodes)
        outs = {n.id: chosen[n.id].out_specs for n in graph.nodes if n.kind is NodeKind.OP}
        return memory_breakdown(graph, flat_in, outs, mesh, node_operand_specs=_resharded_operands(graph, chosen),
                                donated=frozenset(carried_args(graph))).peak_bytes

    found = compare(graph, per_node, mesh=mesh, complete=complete, split_compute=split_compute,
                    peak_bytes=peak_bytes, memory_budget=memory_budget)
    if log:
        log(f"priced {', '.join(a.name for a in found)} for comparison in {time.perf_counter() - start:.2f} s")
    return found
