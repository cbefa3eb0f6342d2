"""Memory budgets by Lagrangian relaxation: price memory instead of constraining it.

A budget row blocks merge.py's elimination of every node whose memory depends on its
strategy, so the MIP of a binding budget is ten times larger and often finds nothing in
time. Instead, for a price ``lam`` (seconds per byte) solve

    min  cost(x) + lam * memory(x)        (node and edge memory folded into the costs)

which has no budget row: the full reduction (merge, tie, prune) handles it exactly like
an unconstrained problem. A larger price gives a plan with less memory; the search looks
for the smallest price whose plan fits, keeping the cheapest plan that fits. It first
brackets the price (up or down by growing factors until one plan is over the budget and
one fits), then tries the price at which those two plans cost the same when priced: a
plan cheaper than both there moves the bracket; none means that price maximizes the
dual bound below. If that price is not strictly inside the bracket (solves stopped by the
clock), the bracket is bisected in log space instead.

Every priced solve also proves a lower bound: for any plan within the budget,
cost(x) >= cost(x) + lam * (memory(x) - budget) >= bound(lam) - lam * budget, where
bound(lam) is the priced problem's proven lower bound. The best of these (the
Lagrangian dual bound) is reported like a MIP's bound, so the gap of the plan is known.

The plans at the bracket's ends are then relinked (relink.py): from the plan that fits
towards cheaper ones over the budget, as far as the budget allows.

Deterministic: the prices tried depend only on the plans found, and each priced solve is
deterministic (unless stopped by the wall clock, like any solve here).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import numpy as np

from .evaluate import evaluate
from .problem import Problem, Solution
from .relink import relink

# The price goes up (or down) by this factor, squared after each step, until the plans
# straddle the budget; then bisection (in log space) narrows it until neighbouring
# prices are CLOSE_RATIO apart.
BRACKET_STEP = 16.0
WARM_STEP = 2.0  # from a price known to be near (the previous solve of a similar problem)
CLOSE_RATIO = 1.01
MAX_SOLVES = 20
# How many plans over the budget (nearest to it first) relink.py moves towards.
RELINK_TARGETS = 3
# A plan within this relative gap of the dual bound ends the search.
GAP_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class Priced:
    """One solve of the priced problem, measured on the original problem."""

    multiplier: float  # seconds per byte
    choice: np.ndarray
    cost: float  # seconds
    memory: float  # bytes per device (the budget row)
    bound: float  # proven lower bound of min cost + multiplier * memory
    status: str  # of the priced solve: OPTIMAL, FEASIBLE

    def fits(self, budget: float) -> bool:
        return self.memory <= budget


@dataclasses.dataclass(frozen=True)
class LagrangeResult:
    best: Priced | None  # the cheapest plan that fits; None if none did
    bound: float  # the Lagrangian dual bound on the cheapest plan within the budget
    frugal: Priced  # the plan with the least memory found (the error's figure when none fits)
    proven_frugal: bool  # frugal was solved at a price where only memory counts, to optimality
    solves: int


def priced_problem(problem: Problem, multiplier: float) -> Problem:
    """``problem`` with memory folded into the costs at ``multiplier`` seconds per byte."""
    edge_costs = list(problem.edge_costs)
    for e, mm in problem.edge_memory.items():
        edge_costs[e] = np.asarray(edge_costs[e], dtype=np.float64) + multiplier * np.asarray(mm, dtype=np.float64)
    return Problem(
        node_costs=[np.asarray(c, dtype=np.float64) + multiplier * np.asarray(m, dtype=np.float64)
                    for c, m in zip(problem.node_costs, problem.node_memory)],
        node_memory=[np.zeros(len(c)) for c in problem.node_costs],
        edges=problem.edges, edge_costs=edge_costs, memory_budget=None,
        follows=problem.follows, names=problem.names)


def memory_only_multiplier(problem: Problem) -> float:
    """A price at which one byte outweighs every difference in cost: the priced optimum
    has the least memory of all plans (ties broken by cost)."""
    spread = sum(float(np.ptp(c)) for c in problem.node_costs)
    spread += sum(float(np.ptp(m)) for m in problem.edge_costs)
    # per byte: memory figures differ by whole bytes; at least a nanosecond, which the
    # MIP's tolerances (a picosecond) still see
    return 2.0 * max(spread, 1e-9)


def least_memory(problem: Problem, solve_free: Callable[[Problem, float], Solution], time_limit_s: float) -> float:
    """The least memory of any plan, edge memory included: the plan solved at the price
    where only memory counts (merge.min_memory is a lower bound when edges hold memory)."""
    sol = solve_free(priced_problem(problem, memory_only_multiplier(problem)), time_limit_s)
    return evaluate(problem, sol.choice).memory


def _breakpoint(over: Priced, fits: Priced, lo: float, hi: float) -> tuple[float, bool]:
    """(the price at which ``over`` and ``fits`` cost the same when priced, True) if
    strictly between ``lo`` and ``hi``; else (the geometric middle, False)."""
    if over.memory > fits.memory:
        price = (fits.cost - over.cost) / (over.memory - fits.memory)
        if lo < price < hi:
            return price, True
    return math.sqrt(lo * hi), False


def lagrangian_search(
    problem: Problem,
    solve_free: Callable[[Problem, float], Solution],
    *,
    free: Solution,
    deadline: float,
    start_multiplier: float | None = None,
    labels: np.ndarray | None = None,
    say: Callable[[str], None] = lambda _msg: None,
) -> LagrangeResult:
    """The cheapest plan within ``problem.memory_budget`` over the prices tried.

    ``solve_free(priced, time_limit_s)``: solves a problem without a budget (ilp.solve);
    ``free``: its solution of the unpriced problem (price 0), which exceeds the budget;
    ``deadline``: time.perf_counter() value after which no new price is tried;
    ``start_multiplier``: a price known to be near the answer (a previous solve's);
    ``labels``: a label per node for relink.py (repeated layers switch together).
    """
    budget = float(problem.memory_budget)
    top = memory_only_multiplier(problem)

    def measure(multiplier: float, sol: Solution) -> Priced:
        r = evaluate(problem, sol.choice)
        return Priced(multiplier, sol.choice, r.total, r.memory, sol.bound, sol.status)

    tried = [measure(0.0, free)]
    dual = free.bound  # price 0: the unconstrained optimum bounds the constrained one

    def run(multiplier: float) -> Priced:
        nonlocal dual
        sol = solve_free(priced_problem(problem, multiplier), max(1.0, deadline - time.perf_counter()))
        p = measure(multiplier, sol)
        tried.append(p)
        if np.isfinite(p.bound):
            dual = max(dual, p.bound - multiplier * budget)
        say(f"lagrange: price {multiplier:.4g} s/B -> {p.cost:.6g} s, {p.memory:.6g} B "
            f"({'fits' if p.fits(budget) else 'over'}), dual bound {dual:.6g} s")
        return p

    def best() -> Priced | None:
        fits = [p for p in tried if p.fits(budget)]
        return min(fits, key=lambda p: (p.cost, p.memory, -p.multiplier)) if fits else None

    def done() -> bool:
        b = best()
        return time.perf_counter() >= deadline or len(tried) > MAX_SOLVES or (
            b is not None and b.cost - dual <= GAP_TOLERANCE * max(abs(b.cost), 1e-30))

    over = tried[0]
    if start_multiplier is not None and 0 < start_multiplier < top:
        multiplier, step = start_multiplier, WARM_STEP
    else:  # the price at which the excess memory costs as much as the whole plan
        worth = max(over.cost, 1e-6 * top)
        multiplier, step = min(top, worth / max(over.memory - budget, 1.0)), BRACKET_STEP
    lo, hi = 0.0, None  # prices whose plans are over / within the budget
    lo_plan, hi_plan, at_breakpoint = over, None, False
    while not done():
        p = run(multiplier)
        if at_breakpoint:
            line = lo_plan.cost + multiplier * lo_plan.memory  # == hi_plan's priced cost there
            if p.cost + multiplier * p.memory >= line - 1e-9 * max(abs(line), 1e-30):
                break  # no plan is cheaper at the breakpoint: the dual bound is at its best
        if p.fits(budget):
            hi, hi_plan = multiplier, p
        else:
            lo, lo_plan = multiplier, p
        if hi is None:
            if multiplier >= top:
                break  # even the least-memory plan is over: nothing fits
            multiplier, step = min(top, multiplier * step), step * step
        elif lo == 0.0:  # the first price tried fits: go down until a plan is over
            multiplier, step = hi / step, step * step
            if multiplier < 1e-12 * top:
                break
        elif hi / lo <= CLOSE_RATIO:
            break
        else:
            multiplier, at_breakpoint = _breakpoint(lo_plan, hi_plan, lo, hi)
    if best() is None and start_multiplier is not None and all(p.multiplier != multiplier for p in tried[1:]):
        run(multiplier)  # out of time before trying the price that fitted last time
    if best() is None and all(p.multiplier < top for p in tried):
        run(top)  # out of time or solves with nothing that fits: the least-memory plan
    fitting = best()
    if fitting is not None:  # between the priced optima: relink towards cheaper plans over the budget
        overs = sorted((p for p in tried if not p.fits(budget) and p.cost < fitting.cost), key=lambda p: (p.memory, p.cost))
        for target in overs[:RELINK_TARGETS]:
            choice = relink(problem, fitting.choice, target.choice, labels)
            r = evaluate(problem, choice)
            if r.feasible and r.total < best().cost:
                tried.append(Priced(fitting.multiplier, choice, r.total, r.memory, -np.inf, "RELINKED"))
        if best() is not fitting:
            say(f"lagrange: relinked towards cheaper plans over the budget: {best().cost:.6g} s, {best().memory:.6g} B")
    frugal = min(tried, key=lambda p: (p.memory, p.cost))
    proven = any(p.multiplier >= top and p.status == "OPTIMAL" for p in tried)
    return LagrangeResult(best(), dual, frugal, proven, sum(p.status != "RELINKED" for p in tried[1:]))
