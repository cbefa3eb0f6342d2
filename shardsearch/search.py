"""The whole search, stage by stage: trace -> strategies -> costs -> problem -> solve -> plan."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import time
from typing import Any, Callable, Sequence

import numpy as np

from cost_model import Cluster, MeshShape
from shardsearch import cache
from shardsearch.compare.run import price_recipes
from shardsearch.config import SearchConfig
from shardsearch.costs import build_problem, combined_all_reduces
from shardsearch.costs.gathers import GatherPricing, settle
from shardsearch.costs.copies import copy_labels, shared_reads
from shardsearch.errors import MemoryBudgetError, MicrobatchError
from shardsearch.fallbacks import fallback_warning, with_fallback_saving
from shardsearch.fit import Attempt, NoFit, arguments_floor, donated_args, fit, no_fit_error, step_peak
from shardsearch.graph import OpGraph
from shardsearch.memory.buffers import duplicating_cheap_ops
from shardsearch.memory.combine import off_critical_path
from shardsearch.memory.splitk import SplitK, splitting_gemms
from shardsearch.memory import carried_args
from shardsearch.pins import pin_strategies, resolve_pins
from shardsearch.pipeline.microbatch import split_microbatches
from shardsearch.pipeline.program import micro_remat_choices, microbatched
from shardsearch.plan import Plan, assemble_plan, plan_layouts, plan_memory
from shardsearch.progress import StageLog, warn_user
from shardsearch.remat import POLICIES as REMAT_POLICIES
from shardsearch.remat import choices as remat_choices
from shardsearch.remat import remat_graph
from shardsearch.repeats import tie_labels
from shardsearch.solve import solve
from shardsearch.solve.evaluate import evaluate
from shardsearch.solve.lagrange import memory_only_multiplier, priced_problem
from shardsearch.solve.problem import Problem, Solution
from shardsearch.strategies.dot import without_reduce_scatter
from shardsearch.strategies.per_node import graph_strategies
from shardsearch.trace import program_hash, trace


# The share of time_limit_s a least-memory solve gets (the floor the fit tightens towards).
FLOOR_SHARE = 0.2


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
    donate_argnums: tuple[int, ...] = (),
) -> Searched:
    """``donate_argnums``: the positional arguments whose buffers the caller donates
    (the budget is checked against the peak with their buffers reused)."""
    log = StageLog(config.verbose)
    try:
        log("tracing")
        with duplicating_cheap_ops(cluster.gpu_target is not None), _collector_paused(), \
                splitting_gemms(SplitK.for_target(cluster.gpu_target)):
            return _search(fn, args, mesh=mesh, cluster=cluster, memory_budget=memory_budget, config=config,
                           log=log, donate_argnums=donate_argnums)
    finally:
        log.close()


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off for the search, as it was after. The search
    holds a few million long-lived objects (the graph, strategies, priced tables) and
    makes little cyclic garbage, so each full collection rescans them for nothing: 3.5 of
    20.6 s CPU for the 96-layer GPT-350M-width step (benchmarks.plan_time; peak RSS
    1.0 GB either way). Reference counting still frees everything else at once."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _search(fn, args, *, mesh, cluster, memory_budget, config, log, donate_argnums=()) -> Searched:
    t0 = time.perf_counter()
    graph = trace(fn, args)
    phash = program_hash(graph)
    # num_microbatches > 1: the step as an accumulation over microbatches in one scan
    traced = graph
    graph, pipeline = microbatched(graph, config.num_microbatches, mesh)
    try:
        found = plan_graph(graph, phash, mesh=mesh, cluster=cluster, memory_budget=memory_budget, config=config,
                           log=log, start=t0, pipeline=pipeline, donated=donated_args(graph, donate_argnums),
                           traced=traced)
    except MemoryBudgetError as whole:
        if not (config.accumulate and config.num_microbatches == 1 and config.pipeline in (None, "auto")):
            raise
        if arguments_floor(traced, mesh.size) > memory_budget:
            raise  # the arguments alone are over the budget: microbatches cannot help
        found = accumulated(traced, phash, whole, mesh=mesh, cluster=cluster, memory_budget=memory_budget,
                            config=config, log=log, donate_argnums=donate_argnums)
    if config.pipeline is None:
        return found
    from shardsearch.pipeline.choose import with_pipeline  # stages: planned beside the whole-mesh plan

    return with_pipeline(found, traced, phash, mesh=mesh, cluster=cluster, memory_budget=memory_budget,
                         config=config, log=log)


def accumulated(traced: OpGraph, phash: str, whole: MemoryBudgetError, *, mesh, cluster, memory_budget, config,
                log, donate_argnums) -> Searched:
    """The step as the fewest microbatches whose plan fits ``memory_budget`` (gradient
    accumulation, ``pipeline.program``), each count planned as any step is (with
    ``config.remat``, each microbatch may recompute its layers: the fewest microbatches
    that fit under some remat policy win); ``whole``: the error of the unsplit step,
    raised again when no count fits or the step cannot be split."""
    try:
        counts = [m for m in split_microbatches(traced).counts() if m > 1]
    except MicrobatchError:
        raise whole from None
    last = whole
    for m in counts:
        if log:
            log(f"no plan of the whole batch fits: trying {m} microbatches")
        graph, pipeline = microbatched(traced, m, mesh)
        try:
            return plan_graph(graph, phash, mesh=mesh, cluster=cluster, memory_budget=memory_budget,
                              config=config, log=log, pipeline=pipeline,
                              donated=donated_args(graph, donate_argnums), traced=traced)
        except MemoryBudgetError as err:
            last = err
    raise MemoryBudgetError(f"{whole} Splitting the batch into microbatches (up to {counts[-1] if counts else 1}) "
                            f"did not fit either: {last}", least_bytes=whole.least_bytes) from None


def plan_graph(graph: OpGraph, phash: str, *, mesh: MeshShape, cluster: Cluster, memory_budget: float | None,
               config: SearchConfig, log=None, start: float | None = None, pipeline=None,
               cutoff: float | None = None, donated: frozenset[int] = frozenset(),
               reshard_memo: dict | None = None, traced: OpGraph | None = None,
               _planned: "_Candidate | None" = None) -> Searched:
    """The plan of a traced (or transformed) ``graph``; ``phash``: the traced program's
    hash, which the plan records (``plan.apply`` checks it); ``pipeline``: the plan's
    ``PipelinePlan`` when ``graph`` runs microbatches. One traced program is planned on
    many meshes this way (the advisor's sweep traces and hashes it once). ``cutoff``:
    seconds per step; raise ``solve.AboveCutoff`` when the solver proves no plan is
    cheaper (the first solve of the latency fixed point prices merged all-reduces lowest,
    so its bound holds for all). ``donated``: flat argument indices whose buffers the
    results reuse. ``reshard_memo``: a dict kept between plans on the same ``mesh`` and
    ``cluster`` (the stage search's unit solves): reshard matrices priced once for all. A plan whose peak (``shardsearch.memory``) is over ``memory_budget``
    is never returned: the search tightens the solver's memory row until one fits
    (``shardsearch.fit``), or raises MemoryBudgetError saying what the least is.
    ``traced``: the traced step ``graph`` accumulates microbatches of (``pipeline``), so
    each microbatch's layers can be recomputed; without it only the unsplit step's are.
    ``_planned``: the candidate of the same graph planned on this cluster with overlap
    (this call plans it again without): its strategies, tie labels and priced tables are
    reused."""
    t0 = time.perf_counter() if start is None else start
    log = log or StageLog(False)
    pinned = resolve_pins(config.pins, graph, mesh)
    key = cache.plan_key(graph, phash, mesh, cluster, memory_budget, config, donated)
    hit = cache.load_cached(key, phash, mesh, config)
    if hit is not None:
        if log:
            log(f"plan {key} from the cache ({cache.cache_dir()}), traced in {time.perf_counter() - t0:.2f} s")
        if hit.remat is not None:
            graph = _with_remat(graph, hit.remat, traced, pipeline, mesh)
        return Searched(graph, hit.with_trees(graph.in_tree, graph.out_tree))  # (its pipeline is the key's)
    deadline = t0 + config.time_limit_s
    forced = None
    if isinstance(config.remat, str) and _planned is None:  # every layer recomputed, as the caller asked
        forced_plans = list(_remat_variants(graph, traced, pipeline, mesh, (config.remat,)))
        if forced_plans:
            forced, graph = forced_plans[0]
        elif log:
            log(f"remat={config.remat!r}: the step has no repeated layers to recompute")
    base = _Candidate(graph, forced, pinned, mesh=mesh, cluster=cluster, config=config, log=log, deadline=deadline,
                      donated=donated, phash=phash, t0=t0, cutoff=cutoff, reshard_memo=reshard_memo, reuse=_planned)
    overlap = cluster.overlap_contention is not None
    # XLA's scheduler keeps a step within the device's memory and gives up overlap to do
    # so: a plan that does not fit the device is planned again with every collective in
    # full. When the first plan is over the device but within memory_budget (no fit
    # follows), that is known from its peak alone: the rest of it is not assembled.
    replan = (lambda peak: peak > cluster.memory_bytes and (memory_budget is None or peak <= memory_budget)) \
        if overlap else None
    chosen, cand = base.attempt(None, first=True, replan_if=replan), base
    if isinstance(chosen, float):  # its peak: over the device's memory
        if log:
            log(f"the best plan peaks at {chosen / 2**30:.3f} GiB per device, over the device's "
                f"{cluster.memory_bytes / 2**30:.3f} GiB: planning again with every collective in full")
    elif memory_budget is not None and chosen.peak > memory_budget:
        if log:
            log(f"the best plan peaks at {chosen.peak / 2**30:.3f} GiB per device, over the "
                f"{memory_budget / 2**30:.3f} GiB budget: fitting it")
        cand, chosen = _fit(base, chosen, memory_budget, config, log, (traced, pipeline))
    if overlap and (isinstance(chosen, float) or chosen.peak > cluster.memory_bytes):
        # the same graph and strategies: only the prices change (the reshard matrices,
        # memory rows and collectives' full times are kept in the solver's memo)
        return plan_graph(base.graph, phash, mesh=mesh,
                          cluster=dataclasses.replace(cluster, overlap_contention=None),
                          memory_budget=memory_budget, config=config, log=log, start=t0, pipeline=pipeline,
                          cutoff=cutoff, donated=donated, traced=traced, _planned=base if forced is None else None)
    graph, strategies, ties, solver = cand.graph, cand.strategies, cand.ties, cand.solver
    problem, costs, solution = chosen.extra.problem, chosen.extra.costs, chosen.extra.solution
    plan = dataclasses.replace(chosen.plan, stats=dataclasses.replace(chosen.plan.stats,
                                                                      search_s=time.perf_counter() - t0))
    if config.compare:
        plan = dataclasses.replace(plan, compared=price_recipes(
            graph, strategies.per_node, problem, costs, mesh=mesh, memory_budget=memory_budget, config=config,
            ties=ties, log=log, time_left_s=config.time_limit_s - (time.perf_counter() - t0),
            copies_for=solver.copies_for, rebuild=solver.rebuild))
    plan = dataclasses.replace(plan, pipeline=pipeline, remat=cand.remat)
    plan = with_fallback_saving(plan, problem, solution.choice, lambda relaxed: solve(
        relaxed, time_limit_s=max(1.0, config.time_limit_s / 4), num_workers=config.num_workers, seed=config.seed,
        backend=config.solver.value, log=None, ties=problem_ties(ties, costs)))
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
    costly = fallback_warning(plan)
    if costly:
        warn_user(costly)
    if log:
        log(f"plan ready in {time.perf_counter() - t0:.2f} s: {solution.status}, predicted {plan.predicted.total_s:.3e} s/step")
    return Searched(graph, plan)


class _Candidate:
    """One program to plan (the traced step, or it with layers recomputed: ``remat``):
    its strategies, tie labels and solver, and a solve under a memory row budget."""

    def __init__(self, graph, remat, pinned, *, mesh, cluster, config, log, deadline, donated, phash, t0, cutoff,
                 reshard_memo=None, reuse: "_Candidate | None" = None):
        """``reuse``: a candidate of the same graph and mesh on the cluster with overlap
        (this one is without): its strategies, tie labels and build memo are taken."""
        self.graph, self.remat, self.mesh, self.cluster, self.donated = graph, remat, mesh, cluster, donated
        self.phash, self.t0, self.cutoff = phash, t0, cutoff
        if reuse is not None:
            assert reuse.graph is graph and reuse.mesh == mesh
            self.strategies, self.ties = reuse.strategies, reuse.ties
            self.solver = _Solver(graph, self.strategies.per_node, cluster, mesh, config, self.ties, log, deadline,
                                  donated, reuse.solver.edge_memo)
            return
        strategies = graph_strategies(graph, mesh)
        per_node = strategies.per_node
        # reduce-scattered weight gradients: asked for, on a GPU target (strategies/dot.py)
        per_node = without_reduce_scatter(per_node, off_critical_path(graph) if config.sharded_updates
                                          and cluster.gpu_target is not None else ())
        self.strategies = dataclasses.replace(strategies, per_node=pin_strategies(per_node, graph, pinned))
        if log:
            n = sum(len(s) for s in self.strategies.per_node)
            log(f"traced {len(graph.nodes)} nodes, {n} strategies in {time.perf_counter() - t0:.2f} s"
                + (f" ({remat.describe()})" if remat is not None else ""))
        self.ties = None
        if config.tie_repeats:
            self.ties = tie_labels(graph, [len(s) for s in self.strategies.per_node])
            if log:
                log(f"repeated layers: {len(graph.nodes) - len(np.unique(self.ties))} nodes tied to an earlier copy")
        self.solver = _Solver(graph, self.strategies.per_node, cluster, mesh, config, self.ties, log, deadline,
                              donated, reshard_memo)

    def attempt(self, row_budget: float | None, multiplier: float | None = None, *, least_memory: bool = False,
                first: bool = False, replan_if: Callable[[float], bool] | None = None) -> Attempt | float:
        """``replan_if``: a test of the plan's peak; when it holds, the peak (bytes) is
        returned instead, the plan not assembled."""
        problem, costs, solution = self.solver.solve(row_budget, multiplier, least_memory=least_memory,
                                                     cutoff=self.cutoff if first else None)
        analysed = {}
        if replan_if is not None and self.donated in (frozenset(), carried_args(self.graph)):
            layouts = plan_layouts(self.graph, self.strategies.per_node, solution.choice)
            analysed[self.donated] = plan_memory(self.graph, layouts, self.mesh, self.donated)
            if replan_if(analysed[self.donated][0].peak_bytes):
                return float(analysed[self.donated][0].peak_bytes)
        plan = assemble_plan(
            self.graph, self.strategies.per_node, self.strategies.fallback, problem, costs, solution,
            mesh=self.mesh, cluster=self.cluster.name, program_hash=self.phash,
            search_s=time.perf_counter() - self.t0, memory_analysed=analysed,
        )
        plan = dataclasses.replace(plan, remat=self.remat)
        used = evaluate(problem, solution.choice)
        return Attempt(plan, used.total, used.memory, self._peak(plan), row_budget,
                       _Solved(problem, costs, solution))

    def _peak(self, plan) -> float:
        """``step_peak`` of the plan: assemble_plan has it for no argument and every carried
        argument donated (the same liveness model), the usual cases."""
        if not self.donated:
            return plan.predicted.peak_bytes
        if self.donated == carried_args(self.graph):
            return plan.predicted.peak_donated_bytes
        return step_peak(self.graph, plan, self.donated)

    def fit(self, free: Attempt, budget: float, deadline: float, log) -> Attempt:
        self.solver.deadline = deadline
        return fit(self.attempt, free, budget, deadline=deadline, say=log,
                   floor=lambda: self.attempt(None, least_memory=True))


def _remat_variants(graph: OpGraph, traced: OpGraph | None, pipeline, mesh, policies=REMAT_POLICIES):
    """(RematPlan, the step rewritten by it) for each policy, least recompute first, made
    one at a time: the unsplit step's layers, or, when ``graph`` accumulates ``pipeline``'s
    microbatches of ``traced``, each microbatch's (``pipeline.program``)."""
    if pipeline is None or pipeline.num_microbatches <= 1 or pipeline.num_stages > 1:
        for remat in remat_choices(graph, policies)[1]:
            yield remat, remat_graph(graph, remat)
        return
    if traced is None:
        return
    m = pipeline.num_microbatches
    try:
        remats = micro_remat_choices(traced, m, policies)
    except MicrobatchError:
        return
    for remat in remats:
        yield remat, microbatched(traced, m, mesh, remat)[0]


def _with_remat(graph: OpGraph, remat, traced: OpGraph | None, pipeline, mesh) -> OpGraph:
    """``graph`` (the traced step, or its accumulation of ``pipeline``'s microbatches) with ``remat`` applied."""
    if not remat.in_microbatch:
        return remat_graph(graph, remat)
    if traced is None:
        raise ValueError("a plan that recomputes layers inside microbatches needs the traced step")
    return microbatched(traced, pipeline.num_microbatches, mesh, remat)[0]


def _fit(base: _Candidate, free: Attempt, budget: float, config: SearchConfig, log, source=(None, None)):
    """The cheapest (candidate, attempt) within ``budget``: the traced step's sharding fitted
    to it, and, with ``config.remat``, the step (or each of its microbatches: ``source`` is
    (traced step, PipelinePlan) of an accumulation) with its layers recomputed under each policy
    (least recompute first; a policy whose unconstrained plan fits ends the list, and one
    whose unconstrained plan already costs more than a fitting plan is not fitted).
    Each candidate has ``config.time_limit_s`` of its own: a budget that binds costs more
    search time, one that does not costs none. Raises MemoryBudgetError naming the least
    peak when none fits."""
    found: list[tuple[_Candidate, Attempt]] = []
    least: tuple[_Candidate, Attempt] = (base, free)
    try:
        found.append((base, base.fit(free, budget, time.perf_counter() + config.time_limit_s, log)))
    except NoFit as none:
        least = (base, none.least_attempt)
    if config.remat is True and arguments_floor(base.graph, base.mesh.size) <= budget:
        for remat, graph in _remat_variants(base.graph, *source, base.mesh):
            deadline = time.perf_counter() + config.time_limit_s
            cand = _Candidate(graph, remat, resolve_pins(config.pins, graph, base.mesh), mesh=base.mesh,
                              cluster=base.cluster, config=config, log=log, deadline=deadline, donated=base.donated,
                              phash=base.phash, t0=base.t0, cutoff=None)
            top = cand.attempt(None)
            if log:
                log(f"remat {remat.policy}: unconstrained plan {top.cost:.4g} s, peak {top.peak / 2**30:.3f} GiB")
            if top.peak <= budget:
                found.append((cand, top))
                break
            if found and top.cost >= min(a.cost for _, a in found):
                continue
            try:
                found.append((cand, cand.fit(top, budget, deadline, log)))
            except NoFit as none:
                least = min(least, (cand, none.least_attempt), key=lambda ca: ca[1].peak)
    if not found:
        cand, at = least
        tried = "its least-memory sharding" + (f", {cand.remat.describe()}" if cand.remat is not None else "")
        raise no_fit_error(budget, at.peak, cand.graph, at.plan, base.donated, tried=tried) from None
    return min(found, key=lambda ca: (ca[1].cost, ca[1].peak))


@dataclasses.dataclass(frozen=True)
class _Solved:
    problem: Problem
    costs: Any
    solution: Solution

    @property
    def multiplier(self) -> float | None:
        return self.solution.multiplier


class _Solver:
    """Solves of one graph's problem under different memory budgets on the row, sharing
    the reshard matrices and the latency fixed point's share between them."""

    def __init__(self, graph, strategies, cluster, mesh, config, ties, log, deadline, donated, edge_memo=None):
        self.graph, self.strategies, self.cluster, self.mesh = graph, strategies, cluster, mesh
        self.config, self.ties, self.log, self.deadline, self.donated = config, ties, log, deadline, donated
        self.edge_memo: dict = {} if edge_memo is None else edge_memo  # (build_problem's)
        # The merged all-reduce of gradients pays one launch latency for all its members,
        # which depends on the plan: solve with each member paying 1/k of it, where k is
        # the number the previous solution merged, until k settles (a fixed point).
        self.share = 1.0 / max(combined_all_reduces(graph, None, strategies), 1)
        # Reshards of values ready at the step's start (FSDP's gathers, the batch's) merge the
        # same way (XLA's all-gather combiner, costs.gathers): from a whole launch each and
        # every bandwidth under its own reader's past, the same fixed point.
        self.gather_share = GatherPricing()
        # Readers that need a value in one layout share one copy (costs/copies.py): the
        # copies a plan would share are added to the problem and it is solved again, in
        # the fixed point below, until the plan shares none it is charged twice for.
        self.copies_for = frozenset()

    def _options(self, costs, multiplier=None, cutoff=None) -> dict:
        config = self.config
        # one budget for all the solves of the search, at least a second each
        return dict(time_limit_s=max(1.0, self.deadline - time.perf_counter()), num_workers=config.num_workers,
                    seed=config.seed, backend=config.solver.value, log=self.log,
                    ties=problem_ties(self.ties, costs), multiplier=multiplier, cutoff=cutoff)

    def build(self, row_budget):
        return build_problem(self.graph, self.strategies, self.cluster, self.mesh, row_budget,
                             follow=self.config.follow_elementwise, combined_share=self.share,
                             edge_memo=self.edge_memo, donated=self.donated, copies_for=self.copies_for,
                             gather_share=self.gather_share)

    def rebuild(self, copies_for: frozenset, gather_share: GatherPricing | None = None):
        """The problem without a memory row, with copies for ``copies_for`` (the recipes'
        completions add their own shared reads, and settle their hidden reshards' latency
        share, this way)."""
        return build_problem(self.graph, self.strategies, self.cluster, self.mesh, None,
                             follow=self.config.follow_elementwise, combined_share=self.share,
                             edge_memo=self.edge_memo, donated=self.donated, copies_for=copies_for,
                             gather_share=self.gather_share if gather_share is None else gather_share)

    def solve(self, row_budget, multiplier=None, *, least_memory=False, cutoff=None):
        if least_memory:  # memory priced above any time: the plan with the least row memory
            problem, costs = self.build(None)
            priced = priced_problem(problem, memory_only_multiplier(problem))
            # a least-memory plan proven least is rarely worth the whole time limit
            options = self._options(costs)
            options["time_limit_s"] = min(options["time_limit_s"], max(1.0, self.config.time_limit_s * FLOOR_SHARE))
            solution = solve(priced, **options)
            used = evaluate(problem, solution.choice)
            return problem, costs, dataclasses.replace(solution, objective=used.total, bound=-np.inf,
                                                       status="FEASIBLE")
        seen, seen_gathers, earlier, solution = set(), set(), [], None
        while True:
            problem, costs = self.build(row_budget)
            solution = solve(problem, **self._options(
                costs,
                # a binding budget's memory price barely moves with the latency share
                multiplier=solution.multiplier if solution is not None else multiplier,
                cutoff=cutoff if solution is None else None))
            graph_choice = solution.choice[:len(self.graph.nodes)]  # then the copy nodes'
            k = combined_all_reduces(self.graph, [self.strategies[i][c] for i, c in enumerate(graph_choice)])
            new_copies = shared_reads(costs.reads, problem.edge_costs, solution.choice)
            # Settled when the plan's merged all-reduces pay one launch latency to within
            # a tenth of one (a few microseconds at most): another solve would not move it.
            # With none at all, a dearer latency only makes every other plan dearer.
            settled = k == 0 or abs(k * self.share - 1.0) <= 0.1 or k in seen
            # the same for the combined gathers (priced from a whole launch each: none is settled)
            gathers = settle(costs.hidden_reshards, solution.choice)
            gathers_settled = gathers.same_price(self.gather_share) or gathers.signature() in seen_gathers
            if settled and gathers_settled and not new_copies:
                break
            if time.perf_counter() >= self.deadline:
                break  # out of time: a solve given the one second left would do worse than this one
            earlier.append(graph_choice)
            if not settled:
                seen.add(k)
                self.share = 1.0 / max(k, 1)
                if self.log:
                    self.log(f"{k} gradient all-reduces merge into one: re-pricing their latency at 1/{k} each")
            if not gathers_settled:
                seen_gathers.add(gathers.signature())
                self.gather_share = gathers
                if self.log:
                    self.log(f"{gathers.members} reshards of values ready at the start merge into {gathers.launches} "
                             f"gathers: re-pricing their latency at {gathers.share:.3g} launches each")
            if new_copies:
                self.copies_for |= new_copies
                if self.log:
                    self.log(f"{len(new_copies)} values are resharded once for several readers: one copy each")
        return problem, costs, _best_of(problem, solution, earlier, costs.copies)


def problem_ties(ties, costs):
    """Tie labels for the Problem's nodes: the graph's, then its copy nodes' (costs.copies)."""
    return None if ties is None else copy_labels(ties, costs.copies)


def _best_of(problem, solution, earlier: list, copies=()) -> Solution:
    """The last solve, or an earlier plan of the fixed point if it is cheaper on the last
    problem (possible only when the last solve was stopped by the time limit)."""
    for choice in earlier:  # a strategy per graph node: each copy made where a reader needs it
        choice = np.concatenate([choice, [int(c.made(choice)) for c in copies]]).astype(np.int64)
        again = evaluate(problem, choice)
        if again.feasible and again.total < solution.objective:
            solution = dataclasses.replace(solution, choice=choice, objective=again.total, status="FEASIBLE")
    return solution
