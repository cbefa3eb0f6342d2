"""Solve a Problem: exact reduction (merge.py), then a MIP (mip.py) or CP-SAT on what is left.

Formulation (on the reduced problem; also valid on a raw one, follows included):
  x[i, s]   boolean, exactly one per node.
  y[e, s, t] boolean per entry of each edge matrix, with the marginal constraints
            sum_t y[e, s, t] == x[u, s]   and   sum_s y[e, s, t] == x[v, t].
  This is the local-polytope (Alpa) formulation rather than the smaller
  y >= x_us + x_vt - 1 linearization: with that one the LP relaxation sets every x to
  1/S and every y to 0, so its bound ignores resharding entirely and CP-SAT proves
  nothing on graphs with cycles; the marginal constraints make the LP exact on trees
  and tight in practice, and they propagate as well (x fixed => y fixed). The extra
  variables only matter on the reduced core, which is small.
  Objective: costs minus each vector's / matrix's minimum (that minimum is a constant),
  scaled to integers (see _scale). Memory: sum of chosen memory <= budget.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import numpy as np
from ortools.sat.python import cp_model

from shardsearch.errors import MemoryBudgetError, ShardsearchError

from .evaluate import evaluate
from .lagrange import GAP_TOLERANCE, lagrangian_search, least_memory
from .merge import min_memory, reduce_problem
from .local import fit_memory, local_search
from .mip import solve_mip
from .prune import prune_dominated
from .problem import Problem, Solution
from .tie import tie_problem

# The whole objective's upper bound maps to 2**40 (~1.1e12) units: far below 2**53, so
# CP-SAT's LP (doubles) and int64 sums are exact, while each term is rounded by at most
# 0.5 unit = 4.5e-13 of the upper bound; 1e5 such terms stay under 5e-8 of it, i.e. the
# ~1e-6 relative precision we want as long as the optimum is >= 5% of the upper bound.
# The reported objective is re-evaluated in float64 anyway; only ties closer than
# this may be broken the wrong way.
_OBJECTIVE_UNITS = 2.0**40

# The exact MIP after the Lagrangian search runs only with at least this many seconds left.
MIN_EXACT_S = 2.0

# Tie repeated layers only when the reduced problem has more nodes than this: a small
# core solves in a second untied, and a shallow model's best plan may treat its first
# layers differently from the rest (the copies of a tied layer cannot differ).
TIE_MIN_CORE_NODES = 100


class SolverTimeoutError(ShardsearchError):
    """CP-SAT found no assignment within the time limit."""


class AboveCutoff(Exception):
    """The solver proved that no plan costs less than ``cutoff`` seconds (``solve(...,
    cutoff=)``): a caller comparing configurations can skip this one. Not an input error."""

    def __init__(self, cutoff: float):
        super().__init__(f"no plan costs less than {cutoff:.6g} s")
        self.cutoff = cutoff


def _size(p: Problem) -> str:
    strategies = sum(len(c) for c in p.node_costs)
    return f"{p.num_nodes} nodes, {len(p.edge_costs)} edges, {strategies} strategies"


MEMORY_BUDGET_TOO_SMALL = (
    "no sharding plan fits memory_budget={budget:.6g} bytes per device: the smallest "
    "achievable memory is {least:.6g} bytes. Raise memory_budget to at least "
    "{least_int} bytes or use a larger mesh. The largest tensors, per device at their "
    "smallest layout (an argument counts twice when the step returns its next value): {largest}.")

# How many tensors the memory error names.
_LARGEST_SHOWN = 5


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{int(b)} B" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return ""


def _memory_error(budget: float, least: float, problem: Problem) -> MemoryBudgetError:
    """``least``: the smallest memory any plan needs (the budget row's minimum), the
    smallest budget that fits; the tensors named are the nodes whose least memory is
    largest."""
    least_each = [float(np.min(m)) for m in problem.node_memory]
    top = sorted((i for i, b in enumerate(least_each) if b > 0), key=lambda i: (-least_each[i], i))
    largest = "; ".join(
        f"{problem.names[i] if problem.names else f'node {i}'} ({_fmt_bytes(least_each[i])})"
        for i in top[:_LARGEST_SHOWN]) or "none"
    return MemoryBudgetError(MEMORY_BUDGET_TOO_SMALL.format(
        budget=budget, least=least, least_int=math.ceil(least), largest=largest), least_bytes=float(least))


class _Model:
    """CP-SAT model of a Problem plus what is needed to read its answer back."""

    def __init__(self, p: Problem):
        self.model = m = cp_model.CpModel()
        node_costs = [np.array(c, dtype=np.float64) for c in p.node_costs]
        self.node_memory = [np.array(mm, dtype=np.float64) for mm in p.node_memory]
        edges = []
        for e, (u, v) in enumerate(np.asarray(p.edges, dtype=np.int64).reshape(-1, 2)):
            mat = np.asarray(p.edge_costs[e], dtype=np.float64)
            mm = p.edge_memory.get(e) if p.memory_budget is not None else None
            if u == v:  # self-edge: only the diagonal is reachable
                node_costs[u] += np.diag(mat)
                if mm is not None:
                    self.node_memory[u] += np.diag(mm)
            else:
                edges.append((u, v, mat, mm))
        self.constant = sum(float(c.min()) for c in node_costs)
        self.constant += sum(float(mat.min()) for _, _, mat, _ in edges)
        upper = sum(float(c.max() - c.min()) for c in node_costs)
        upper += sum(float(mat.max() - mat.min()) for _, _, mat, _ in edges)
        self.scale = _OBJECTIVE_UNITS / upper if upper > 0 else 1.0

        self.x = [[m.new_bool_var(f"x{i}_{s}") for s in range(len(c))]
                  for i, c in enumerate(node_costs)]
        terms = []
        for xi, c in zip(self.x, node_costs):
            m.add_exactly_one(xi)
            terms += [(xi[s], k) for s, k in enumerate(self._ints(c - c.min())) if k]
        self.edge_memory = []  # (y variables, memory matrix) of edges whose copies count
        for u, v, mat, mm in edges:
            coef = self._ints(mat - mat.min())
            if not coef.any() and (mm is None or not mm.any()):
                continue  # constant matrix: nothing to decide
            y = [[m.new_bool_var("") for _ in range(mat.shape[1])] for _ in range(mat.shape[0])]
            if mm is not None:
                self.edge_memory.append((y, np.asarray(mm, dtype=np.float64)))
            for s in range(mat.shape[0]):
                m.add(sum(y[s]) == self.x[u][s])
            for t in range(mat.shape[1]):
                m.add(sum(row[t] for row in y) == self.x[v][t])
            terms += [(y[s][t], int(coef[s, t])) for s, t in zip(*np.nonzero(coef))]
        m.minimize(cp_model.LinearExpr.weighted_sum([v for v, _ in terms], [k for _, k in terms]))

        for v, (u, mapping) in sorted(p.follows.items()):
            for s, t in enumerate(mapping):
                m.add_implication(self.x[u][s], self.x[v][int(t)])
        if p.memory_budget is not None:
            self._add_memory(p)

    def _ints(self, a: np.ndarray) -> np.ndarray:
        return np.rint(a * self.scale).astype(np.int64)

    def _add_memory(self, p: Problem) -> None:
        mems = self.node_memory + [mm.reshape(-1) for _, mm in self.edge_memory]
        variables = self.x + [[b for row in y for b in row] for y, _ in self.edge_memory]
        floor = sum(float(mm.min()) for mm in mems)
        slack = p.memory_budget - floor
        spread = sum(float(mm.max() - mm.min()) for mm in mems)
        integral = all(np.all(mm == np.round(mm)) for mm in mems) and spread < 2.0**52
        # Bytes are integers in practice and then exact; otherwise round against us
        # (memory up, budget down) in units small enough to keep 2**40 resolution.
        unit = 1.0 if integral or spread == 0 else spread / _OBJECTIVE_UNITS
        xs, coefs = [], []
        for xi, mm in zip(variables, mems):
            for s, k in enumerate(np.ceil((mm - mm.min()) / unit).astype(np.int64)):
                if k:
                    xs.append(xi[s])
                    coefs.append(int(k))
        if xs:
            self.model.add(cp_model.LinearExpr.weighted_sum(xs, coefs) <= math.floor(slack / unit))

    def choice(self, solver: cp_model.CpSolver) -> np.ndarray:
        return np.array([next(s for s, b in enumerate(xi) if solver.boolean_value(b))
                         for xi in self.x], dtype=np.int64)


def _solve_cpsat(core: Problem, problem: Problem, budget, time_left_s: float, num_workers: int, seed: int,
                 deterministic: bool, deterministic_time_s: float | None):
    """CP-SAT on the reduced core: (choice, status, bound without the reduction offset, #vars, #cons)."""
    time_limit_s = time_left_s
    built = _Model(core)
    solver = cp_model.CpSolver()
    params = solver.parameters
    # The limit covers the whole call, reduction and model building included.
    params.max_time_in_seconds = max(time_left_s, 0.1)
    if deterministic_time_s is not None:
        params.max_deterministic_time = deterministic_time_s
    params.num_workers = max(1, num_workers)
    # interleave_search selects CP-SAT's DeterministicLoop: workers run in fixed
    # batches and only share information at batch boundaries, so the result does
    # not depend on thread timing. Measured here: same answer for any num_workers
    # >= 2 (1 worker takes another path); without it, 6 runs of one tie-heavy
    # problem gave 4 different optimal choices.
    params.interleave_search = deterministic
    params.random_seed = seed
    code = solver.solve(built.model)
    status = solver.status_name(code)
    if code == cp_model.INFEASIBLE:
        # The pre-check passed, so only rounding of fractional bytes can land here.
        raise MemoryBudgetError(
            f"memory_budget={budget:.6g} bytes is within rounding of the smallest "
            f"achievable memory {min_memory(problem):.6g} bytes (fractional byte counts "
            "are rounded up). Raise memory_budget slightly or use a larger mesh.")
    if code == cp_model.MODEL_INVALID:  # a bug here, not in the caller's input
        raise AssertionError(f"invalid CP-SAT model: {built.model.validate()}")
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        limit = f"time_limit_s={time_limit_s}"
        if deterministic_time_s is not None:
            limit += f", deterministic_time_s={deterministic_time_s}"
        raise SolverTimeoutError(
            f"CP-SAT found no plan for {_size(core)} within {limit} (status {status}). "
            "Raise the time limit, or loosen memory_budget.")
    reduced_choice = built.choice(solver)
    bound = built.constant + solver.best_objective_bound / built.scale
    proto = built.model.proto
    nvars, ncons = len(proto.variables), len(proto.constraints)
    return reduced_choice, status, bound, nvars, ncons


def _reduce(problem: Problem, say, ties: np.ndarray | None = None, tie_min_nodes: int = TIE_MIN_CORE_NODES):
    """merge.reduce_problem, then tie repeated nodes, prune dominated strategies, and
    reduce again after each.

    Returns (expand: core choice -> full choice, core problem, cost offset)."""
    expands, offset = [], 0.0

    def reduced(p: Problem):
        nonlocal offset
        r = reduce_problem(p)
        expands.append(r.expand)
        offset += r.cost_offset
        return r.problem, r.kept

    core, kept = reduced(problem)
    steps = [f"reduced to {_size(core)}"]
    if ties is not None and core.num_nodes > tie_min_nodes:
        tied = tie_problem(core, np.asarray(ties)[kept])
        if tied.problem.num_nodes < core.num_nodes:
            expands.append(tied.expand)
            core, _ = reduced(tied.problem)
            steps.append(f"tied repeated layers to {_size(core)}")
    pruned = prune_dominated(core) if core.num_nodes else None
    if pruned is not None:
        expands.append(pruned.expand)
        core, _ = reduced(pruned.problem)
        steps.append(f"pruned to {_size(core)}")
    say(f"solve: {', '.join(steps)} (+{offset:.6g} s fixed by elimination)")

    def expand(core_choice):
        for step in reversed(expands):
            core_choice = step(core_choice)
        return core_choice

    return expand, core, offset


def solve(problem: Problem, *, time_limit_s: float = 30.0, num_workers: int = 8,
          seed: int = 0, log: Callable[[str], None] | None = None,
          reduce: bool = True, deterministic: bool = True,
          deterministic_time_s: float | None = None, backend: str = "highs",
          ties: np.ndarray | None = None, tie_min_nodes: int = TIE_MIN_CORE_NODES,
          multiplier: float | None = None, exact_after: bool = True, cutoff: float | None = None) -> Solution:
    """Pick the cheapest strategy per node within the memory budget.

    `time_limit_s` caps the wall time of the whole call. The search itself is deterministic
    (fixed seed, interleaved workers), so a run that proves optimality returns the same
    choice every time; a run stopped by the wall clock may not. Pass
    `deterministic_time_s` (CP-SAT's machine-independent work counter, roughly seconds)
    to make stopped runs repeatable too. `deterministic=False` lets workers race
    (several times faster on a few cores, but equal-cost optima may differ run to run:
    never use it where processes must agree). `reduce=False` skips merge.py (tests).
    `backend`: "highs" (default) or "scip" solve the reduced core as a MIP (see mip.py;
    single-threaded, deterministic, several times faster than CP-SAT on our cores);
    "cpsat" uses CP-SAT with `num_workers`, `seed` and the determinism switches above.
    `ties`: a label per node (repeats.tie_labels); nodes with equal labels take the same
    strategy, which shrinks a deep model's problem to about two layers'. Applied only
    when the reduced problem has more than `tie_min_nodes` nodes.
    A memory budget that the best plan without it exceeds is met by pricing memory
    (lagrange.py; `multiplier`: a price from an earlier solve of a similar problem to
    start from); then, with `exact_after` and time left, the MIP with the budget row
    tries to beat that plan and its proven optimum is kept if cheaper.
    `cutoff` (seconds, HiGHS only): raise AboveCutoff when the MIP proves every plan
    costs more, instead of finishing the solve (the advisor's sweep skips a mesh that
    cannot beat the best one found for the same device count).
    """
    start = time.perf_counter()
    problem.validate()
    say = log or (lambda _msg: None)
    say(f"solve: {_size(problem)}")
    budget = problem.memory_budget
    options = dict(num_workers=num_workers, seed=seed, deterministic=deterministic,
                   deterministic_time_s=deterministic_time_s, backend=backend, ties=ties,
                   tie_min_nodes=tie_min_nodes)
    if budget is not None:
        least = min_memory(problem)
        if least > budget:
            if problem.edge_memory:  # min_memory is a lower bound: name the true least
                least = least_memory(problem, lambda p, limit: solve(p, time_limit_s=limit, **options), time_limit_s)
            raise _memory_error(budget, least, problem)
        if reduce:
            # A budget stops the reduction from eliminating any node whose memory depends
            # on its strategy, so the core grows tenfold. Solve without it first: if that
            # plan fits, it is also the best plan within the budget (exact).
            free = solve(problem.without_budget(), time_limit_s=time_limit_s,
                         log=log, cutoff=cutoff, **options)
            if evaluate(problem, free.choice).feasible:
                say("solve: the best plan without the memory budget fits it")
                return dataclasses.replace(free, solve_s=time.perf_counter() - start)
            say("solve: the best plan without the memory budget exceeds it: pricing memory")
            return _solve_budgeted(problem, free, start, time_limit_s, multiplier, exact_after, say, options)
    return _solve_exact(problem, start, time_limit_s, reduce, say, options,
                        cutoff=cutoff if budget is None else None)


def _solve_budgeted(problem: Problem, free: Solution, start: float, time_limit_s: float,
                    multiplier: float | None, exact_after: bool, say, options: dict) -> Solution:
    """The Lagrangian search (lagrange.py), then the exact MIP if time is left."""
    budget = problem.memory_budget
    deadline = start + time_limit_s
    found = lagrangian_search(
        problem, lambda p, limit: solve(p, time_limit_s=limit, **options),
        free=free, deadline=deadline, start_multiplier=multiplier, labels=options["ties"], say=say)
    if found.best is None:
        if found.proven_frugal:
            raise _memory_error(budget, found.frugal.memory, problem)
        raise SolverTimeoutError(
            f"no plan within memory_budget={budget:.6g} bytes found within time_limit_s={time_limit_s} "
            f"(the least memory found is {found.frugal.memory:.6g} bytes). Raise the time limit, "
            "or loosen memory_budget.")
    best, bound = found.best, found.bound
    gap_left = best.cost - bound > GAP_TOLERANCE * max(abs(best.cost), 1e-30)
    choice, status = best.choice, "OPTIMAL" if not gap_left else "FEASIBLE"
    nvars = ncons = reduced = 0
    time_left = deadline - time.perf_counter()
    if exact_after and gap_left and time_left >= MIN_EXACT_S:
        say(f"solve: the exact MIP with the budget row for the {time_left:.1f} s left")
        try:
            exact = _solve_exact(problem, time.perf_counter(), time_left, True, say, options)
        except SolverTimeoutError:
            exact = None
        if exact is not None:
            bound = max(bound, exact.bound)
            nvars, ncons, reduced = exact.num_variables, exact.num_constraints, exact.reduced_nodes
            # only a proven optimum replaces the Lagrangian plan: a plan the MIP found
            # before the wall clock stopped it would depend on the machine's speed
            if exact.status == "OPTIMAL" and exact.objective < best.cost:
                choice, status, bound = exact.choice, "OPTIMAL", exact.objective
            elif exact.status == "OPTIMAL":
                status, bound = "OPTIMAL", best.cost
    result = evaluate(problem, choice)
    if result.violations:  # the search or the reductions have a bug: never hand it on
        raise AssertionError(f"solver produced an invalid choice: {result.violations[:3]}")
    bound = min(bound, result.total)
    elapsed = time.perf_counter() - start
    gap = (result.total - bound) / result.total if result.total > 0 else 0.0
    say(f"solve: {status} objective {result.total:.6g} s, {result.memory:.6g} of {budget:.6g} bytes, "
        f"Lagrangian bound {bound:.6g} s (gap {gap:.3%}, {found.solves} priced solves), {elapsed:.2f} s")
    return Solution(choice=choice, objective=result.total, bound=bound, status=status, solve_s=elapsed,
                    num_variables=nvars or free.num_variables, num_constraints=ncons or free.num_constraints,
                    reduced_nodes=reduced or free.reduced_nodes, multiplier=best.multiplier)


def _solve_exact(problem: Problem, start: float, time_limit_s: float, reduce: bool, say, options: dict,
                 cutoff: float | None = None) -> Solution:
    """The MIP (with the budget row, if any) on the reduced problem."""
    budget = problem.memory_budget
    backend, ties, tie_min_nodes = options["backend"], options["ties"], options["tie_min_nodes"]
    num_workers, seed = options["num_workers"], options["seed"]
    deterministic, deterministic_time_s = options["deterministic"], options["deterministic_time_s"]
    expand, core, offset = _reduce(problem, say, ties, tie_min_nodes) if reduce else ((lambda c: np.asarray(c)), problem, 0.0)

    if core.num_nodes == 0:
        choice, status, bound, nvars, ncons = expand([]), "OPTIMAL", None, 0, 0
    elif backend == "cpsat":
        reduced_choice, status, core_bound, nvars, ncons = _solve_cpsat(
            core, problem, budget, time_limit_s - (time.perf_counter() - start), num_workers, seed,
            deterministic, deterministic_time_s)
        choice = expand(reduced_choice)
        bound = offset + core_bound
    else:
        hint = local_search(core) if not core.follows else None
        if hint is not None and core.memory_budget is not None and not evaluate(core, hint).feasible:
            hint = fit_memory(core, hint)  # a start within the budget
        if hint is not None:
            say(f"solve: heuristic start {offset + evaluate(core, hint).total:.6g} s")
        res = solve_mip(core, backend=backend, time_limit_s=time_limit_s - (time.perf_counter() - start), hint=hint,
                        cutoff=None if cutoff is None else cutoff - offset)
        if res.status == "CUTOFF":
            say(f"solve: no plan below the cutoff {cutoff:.6g} s")
            raise AboveCutoff(cutoff)
        if res.status == "INFEASIBLE":
            raise _memory_error(budget, min_memory(problem), problem)
        hint_fits = hint is not None and evaluate(core, hint).feasible
        if res.choice is not None and res.status != "OPTIMAL" and hint_fits and \
                evaluate(core, hint).total < evaluate(core, res.choice).total:
            # stopped by the time limit on an incumbent worse than the heuristic's start
            # (HiGHS through scipy takes no start): hand on the better of the two
            choice, status, bound = expand(hint), "FEASIBLE", offset + res.bound
        elif res.choice is not None:
            choice = expand(res.choice)
            status, bound = res.status, offset + res.bound
        elif hint_fits:
            # the MIP ran out of time before its first solution: keep the heuristic's
            choice, status, bound = expand(hint), "FEASIBLE", offset + res.bound
        else:
            raise SolverTimeoutError(
                f"{backend} found no plan for {_size(core)} within time_limit_s={time_limit_s} "
                f"(status {res.status}). Raise the time limit, or loosen memory_budget.")
        nvars, ncons = res.num_variables, res.num_constraints

    result = evaluate(problem, choice)
    if result.violations:  # the reductions or the model have a bug: never hand it on
        raise AssertionError(f"solver produced an invalid choice: {result.violations[:3]}")
    objective = result.total
    bound = objective if status == "OPTIMAL" or bound is None else min(bound, objective)
    if cutoff is not None and status == "OPTIMAL" and objective > cutoff * (1 + 1e-9):
        raise AboveCutoff(cutoff)  # solved without the MIP's bound (nothing left after reduction, CP-SAT)
    elapsed = time.perf_counter() - start
    say(f"solve: {status} objective {objective:.6g} s, bound {bound:.6g} s, {elapsed:.2f} s")
    return Solution(choice=choice, objective=objective, bound=bound, status=status,
                    solve_s=elapsed, num_variables=nvars, num_constraints=ncons,
                    reduced_nodes=core.num_nodes)
