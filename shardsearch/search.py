"""The whole search, stage by stage: trace -> strategies -> costs -> problem -> solve -> plan."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import numpy as np

from cost_model import Cluster, MeshShape
from shardsearch import cache
from shardsearch.compare.run import price_recipes
from shardsearch.config import SearchConfig
from shardsearch.costs import build_problem, combined_all_reduces
from shardsearch.graph import OpGraph
from shardsearch.pins import pin_strategies, resolve_pins
from shardsearch.pipeline.program import microbatched
from shardsearch.fallbacks import fallback_warning, with_fallback_saving
from shardsearch.plan import Plan, assemble_plan
from shardsearch.progress import StageLog, warn_user
from shardsearch.repeats import tie_labels
from shardsearch.solve import solve
from shardsearch.solve.evaluate import evaluate
from shardsearch.solve.problem import Solution
from shardsearch.strategies.per_node import graph_strategies
from shardsearch.trace import program_hash, trace

OVER_BUDGET = (
    "shardsearch: by the liveness model the plan peaks at {peak:.4g} bytes per device even with "
    "every carried argument donated, above memory_budget={budget:.6g} bytes. The solver's budget "
    "row is a linear proxy of that peak and can under-count (gathered copies held for the "
    "backward pass), so the step may not fit. Use more devices, rematerialize activations "
    "(jax.checkpoint), or raise memory_budget if the devices have more memory."
)


@dataclasses.dataclass(frozen=True)
class Searched:
    graph: OpGraph
    plan: Plan


def search(
    fn: Callable,
    args: Sequence[Any],
    *,
    mesh: MeshShape,
    cluster: Cluster,
    memory_budget: float | None,
    config: SearchConfig,
) -> Searched:
    log = StageLog(config.verbose)
    try:
        log("tracing")
        return _search(fn, args, mesh=mesh, cluster=cluster, memory_budget=memory_budget, config=config, log=log)
    finally:
        log.close()


def _search(fn, args, *, mesh, cluster, memory_budget, config, log) -> Searched:
    t0 = time.perf_counter()
    graph = trace(fn, args)
    phash = program_hash(graph)
    # num_microbatches > 1: the step as an accumulation over microbatches in one scan
    traced = graph
    graph, pipeline = microbatched(graph, config.num_microbatches, mesh)
    found = plan_graph(graph, phash, mesh=mesh, cluster=cluster, memory_budget=memory_budget, config=config,
                       log=log, start=t0, pipeline=pipeline)
    if config.pipeline is None:
        return found
    from shardsearch.pipeline.choose import with_pipeline  # stages: planned beside the whole-mesh plan

    return with_pipeline(found, traced, phash, mesh=mesh, cluster=cluster, memory_budget=memory_budget,
                         config=config, log=log)


def plan_graph(graph: OpGraph, phash: str, *, mesh: MeshShape, cluster: Cluster, memory_budget: float | None,
               config: SearchConfig, log=None, start: float | None = None, pipeline=None,
               cutoff: float | None = None) -> Searched:
    """The plan of a traced (or transformed) ``graph``; ``phash``: the traced program's
    hash, which the plan records (``plan.apply`` checks it); ``pipeline``: the plan's
    ``PipelinePlan`` when ``graph`` runs microbatches. One traced program is planned on
    many meshes this way (the advisor's sweep traces and hashes it once). ``cutoff``:
    seconds per step; raise ``solve.AboveCutoff`` when the solver proves no plan is
    cheaper (the first solve of the latency fixed point prices merged all-reduces lowest,
    so its bound holds for all)."""
    t0 = time.perf_counter() if start is None else start
    log = log or StageLog(False)
    pinned = resolve_pins(config.pins, graph, mesh)
    key = cache.plan_key(graph, phash, mesh, cluster, memory_budget, config)
    hit = cache.load_cached(key, phash, mesh, config)
    if hit is not None:
        if log:
            log(f"plan {key} from the cache ({cache.cache_dir()}), traced in {time.perf_counter() - t0:.2f} s")
        return Searched(graph, hit.with_trees(graph.in_tree, graph.out_tree))  # (its pipeline is the key's)
    strategies = graph_strategies(graph, mesh)
    strategies = dataclasses.replace(strategies, per_node=pin_strategies(strategies.per_node, graph, pinned))
    if log:
        n = sum(len(s) for s in strategies.per_node)
        log(f"traced {len(graph.nodes)} nodes, {n} strategies in {time.perf_counter() - t0:.2f} s")
    ties = None
    if config.tie_repeats:
        ties = tie_labels(graph, [len(s) for s in strategies.per_node])
        if log:
            log(f"repeated layers: {len(graph.nodes) - len(np.unique(ties))} nodes tied to an earlier copy")
    # The merged all-reduce of gradients pays one launch latency for all its members,
    # which depends on the plan: solve with each member paying 1/k of it, where k is
    # the number the previous solution merged, until k settles (a fixed point).
    share, seen = 1.0 / max(combined_all_reduces(graph, None, strategies.per_node), 1), set()
    edge_memo: dict = {}
    solution, earlier = None, []
    while True:
        problem, costs = build_problem(
            graph, strategies.per_node, cluster, mesh, memory_budget,
            follow=config.follow_elementwise, combined_share=share, edge_memo=edge_memo,
        )
        solution = solve(
            problem,
            # one budget for all the solves of the fixed point, at least a second each
            time_limit_s=max(1.0, config.time_limit_s - (time.perf_counter() - t0)),
            num_workers=config.num_workers,
            seed=config.seed,
            backend=config.solver.value,
            log=log,
            ties=ties,
            # a binding budget's memory price barely moves with the latency share
            multiplier=solution.multiplier if solution is not None else None,
            cutoff=cutoff if solution is None else None,
        )
        k = combined_all_reduces(graph, [strategies.per_node[i][c] for i, c in enumerate(solution.choice)])
        new_share = 1.0 / max(k, 1)
        # Settled when the plan's merged all-reduces pay one launch latency to within
        # a tenth of one (a few microseconds at most): another solve would not move it.
        # With none at all, a dearer latency only makes every other plan dearer.
        if k == 0 or abs(k * share - 1.0) <= 0.1 or k in seen:
            break
        if time.perf_counter() - t0 >= config.time_limit_s:
            break  # out of time: a solve given the one second left would do worse than this one
        seen.add(k)
        earlier.append(solution.choice)
        share = new_share
        if log:
            log(f"{k} gradient all-reduces merge into one: re-pricing their latency at 1/{k} each")
    solution = _best_of(problem, solution, earlier)
    plan = assemble_plan(
        graph,
        strategies.per_node,
        strategies.fallback,
        problem,
        costs,
        solution,
        mesh=mesh,
        cluster=cluster.name,
        program_hash=phash,
        search_s=time.perf_counter() - t0,
    )
    if config.compare:
        plan = dataclasses.replace(plan, compared=price_recipes(
            graph, strategies.per_node, problem, costs, mesh=mesh, memory_budget=memory_budget, config=config,
            ties=ties, log=log, time_left_s=config.time_limit_s - (time.perf_counter() - t0)))
    plan = dataclasses.replace(plan, pipeline=pipeline)
    plan = with_fallback_saving(plan, problem, solution.choice, lambda relaxed: solve(
        relaxed, time_limit_s=max(1.0, config.time_limit_s / 4), num_workers=config.num_workers, seed=config.seed,
        backend=config.solver.value, log=None, ties=ties))
    cache.store(key, plan, config)
    if solution.status != "OPTIMAL":
        if np.isfinite(solution.bound):
            proof = f"lower bound {solution.bound:.4g} s, gap {solution.objective - solution.bound:.3g} s"
        else:
            proof = "the ILP found no solution in time, so this is the local-search plan"
        warn_user(
            f"shardsearch: the plan is not proven optimal ({solution.status}; predicted "
            f"{solution.objective:.4g} s/step; {proof}). "
            f"Raise time_limit_s (now {config.time_limit_s}) for a better or proven plan."
        )
    peak = plan.predicted.peak_donated_bytes or plan.predicted.peak_bytes
    if memory_budget is not None and peak > memory_budget:
        warn_user(OVER_BUDGET.format(peak=peak, budget=memory_budget))
    costly = fallback_warning(plan)
    if costly:
        warn_user(costly)
    if log:
        log(f"plan ready in {time.perf_counter() - t0:.2f} s: {solution.status}, predicted {plan.predicted.total_s:.3e} s/step")
    return Searched(graph, plan)


def _best_of(problem, solution, earlier: list) -> Solution:
    """The last solve, or an earlier plan of the fixed point if it is cheaper on the last
    problem (possible only when the last solve was stopped by the time limit)."""
    for choice in earlier:
        again = evaluate(problem, choice)
        if again.feasible and again.total < solution.objective:
            solution = dataclasses.replace(solution, choice=choice, objective=again.total, status="FEASIBLE")
    return solution
