"""A plan that fits ``memory_budget`` by the liveness model, not only by the solver's row.

The solver keeps memory as one linear row (``costs.build``): what is live at two points
in time, added up. The step's real peak (``shardsearch.memory``: XLA's buffers and their
assignment) differs from it by an amount that depends on the plan, either way. So the
row is given its own budget, calibrated on the plans solved so far, and moved until the
plan it yields fits the true budget:

1. the plan without a budget: if its peak fits, it is the answer (no extra solve);
2. the row's budget is set to ``budget + (row - peak)`` of the last plan (the row's error
   taken as constant near it) and the problem solved again; a plan over the budget moves
   it down by its excess, a plan that fits and is well under moves it up towards the
   smallest row budget known to be over, until they are within ``CLOSE``;
3. the row's least-memory plan is solved first (one solve, memory priced above time): a
   row budget at or under its row is never asked of the solver (which would search its
   whole time limit to prove it cannot be met);
4. when even the row's least-memory plan is over (the solver raises MemoryBudgetError,
   or the plan at the row's floor does not fit), no sharding fits: ``NoFit`` carries the
   least peak seen, for the caller to try rematerialization or microbatches, or to say so.

Numbers in, a choice out; the caller solves and measures.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

from shardsearch.errors import MemoryBudgetError
from shardsearch.solve.ilp import SolverTimeoutError

# Row budgets closer than this (relative) end the search for a cheaper fitting plan.
CLOSE = 0.01
# Solves at most, after the plan without a budget.
MAX_SOLVES = 6
# A plan under the budget by less than this (relative) is not worth loosening the row for.
SNUG = 0.03


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One solve: ``plan`` and what it weighs. ``cost``: predicted seconds per step;
    ``row``: the solver's memory row for it; ``peak``: the liveness peak, bytes."""

    plan: Any
    cost: float
    row: float
    peak: float
    row_budget: float | None
    extra: Any = None  # the caller's (its problem, costs, solution)


class NoFit(Exception):
    """No plan of this program fits: ``least`` is the smallest peak of any plan seen."""

    def __init__(self, least: float, least_attempt: Attempt | None):
        super().__init__(f"no plan fits; the least peak seen is {least:.6g} bytes")
        self.least = least
        self.least_attempt = least_attempt


def fit(solve_at: Callable[[float | None, float | None], Attempt], free: Attempt, budget: float, *,
        deadline: float, floor: Callable[[], Attempt], say: Callable[[str], None] = lambda _m: None) -> Attempt:
    """The cheapest attempt found whose peak is within ``budget``.

    ``solve_at(row_budget, multiplier)``: a solve with that budget on the row (raising
    MemoryBudgetError when the row cannot go that low); ``free``: the solve without a
    budget; ``floor()``: the plan with the least row memory (memory priced above time);
    ``deadline``: time.perf_counter() after which no new solve starts (one runs at least).
    Raises NoFit when no plan found fits."""
    if free.peak <= budget:
        return free
    tried = [free]
    fits: list[Attempt] = []
    over_rows: list[float] = []  # row budgets whose plan was over
    row_budget = budget - (free.peak - free.row)  # the row's error taken as constant
    multiplier = None
    least_row: list[Attempt] = []  # the least-memory plan, solved once, first
    for _ in range(MAX_SOLVES):
        if len(tried) > 1 and time.perf_counter() >= deadline:
            break
        if not least_row:
            least_row.append(floor())
        # a least-memory solve stopped by its time limit may be worse than the free plan:
        # then it says nothing about how low the row goes, and the solver is asked
        if row_budget <= least_row[0].row <= free.row:
            a, at_floor = least_row[0], True  # the row cannot go lower: no solve searches for it
        else:
            try:
                a, at_floor = solve_at(row_budget, multiplier), False
            except (MemoryBudgetError, SolverTimeoutError):  # (out of time: as low as it got)
                a, at_floor = least_row[0], True
        tried.append(a)
        multiplier = getattr(a.extra, "multiplier", None) or multiplier
        say(f"fit: row budget {row_budget:.6g} B -> plan {a.cost:.6g} s, row {a.row:.6g} B, "
            f"peak {a.peak:.6g} B ({'fits' if a.peak <= budget else 'over'} {budget:.6g} B)")
        if a.peak <= budget:
            fits.append(a)
            ceiling = min(over_rows, default=math.inf)
            if at_floor or a.peak >= budget * (1 - SNUG) or ceiling - row_budget <= CLOSE * abs(ceiling):
                break
            # room left: loosen towards the tightest row budget known to be over
            row_budget = min(a.row + (budget - a.peak), (row_budget + ceiling) / 2)
        else:
            if at_floor or _same(a, tried[-2]):
                break  # the row went as low as it can
            over_rows.append(row_budget)
            nxt = a.row - (a.peak - budget)
            if fits:  # no lower than halfway to the loosest row budget that fitted
                nxt = max(nxt, (max(f.row_budget for f in fits) + row_budget) / 2)
            row_budget = nxt
    if fits:
        return min(fits, key=lambda a: (a.cost, a.peak))
    least = min(tried, key=lambda a: a.peak)
    raise NoFit(least.peak, least)


def _same(a: Attempt, b: Attempt) -> bool:
    return abs(a.row - b.row) <= CLOSE * max(a.row, 1.0) and abs(a.peak - b.peak) <= CLOSE * max(a.peak, 1.0)
