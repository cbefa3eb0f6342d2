"""The same formulation as ilp.py's CP-SAT model, for a MIP solver (HiGHS or SCIP).

HiGHS runs the sparse-array build of highs.py (through scipy); SCIP runs the model
built here through OR-Tools' linear solver wrapper.

Edge variables are continuous in [0, 1]: with the marginal constraints
(sum_t y[s,t] = x_u[s], sum_s y[s,t] = x_v[t]) and integral x they are forced to
the product x_u[s] * x_v[t], so they need not be integers. LP-based branch and bound
then proves optimality on the reduced problems we see (30 nodes x 23 strategies)
in about a second where CP-SAT needed 9 s; both HiGHS and SCIP are single-threaded
and deterministic. Coefficients are set one by one (no Python expression trees),
which keeps model building fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys

import numpy as np
from ortools.linear_solver import pywraplp

from .problem import Problem

_STATUS = {
    pywraplp.Solver.OPTIMAL: "OPTIMAL",
    pywraplp.Solver.FEASIBLE: "FEASIBLE",
    pywraplp.Solver.INFEASIBLE: "INFEASIBLE",
    pywraplp.Solver.UNBOUNDED: "UNBOUNDED",
    pywraplp.Solver.ABNORMAL: "ABNORMAL",
    pywraplp.Solver.NOT_SOLVED: "UNKNOWN",
}


@dataclasses.dataclass(frozen=True)
class MipResult:
    choice: np.ndarray | None
    status: str
    objective: float  # as the solver saw it (seconds)
    bound: float
    num_variables: int
    num_constraints: int


@contextlib.contextmanager
def _quiet_stdout():
    """HiGHS prints a copyright banner from C++ on every solve, whatever its options say."""
    try:
        fd = 1  # the C-level stdout, whatever Python has made of sys.stdout
        sys.stdout.flush()
    except (AttributeError, OSError, ValueError):  # no real stdout (captured): nothing to hide
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def edge_groups(mat: np.ndarray, mem: np.ndarray | None):
    """Strategies with identical rows (columns) of an edge's cost and memory matrices --
    they need or give the same layout of this tensor -- share one row (column) of edge
    variables: exact, and it shrinks e.g. 90 x 90 pairs of dot strategies to 19 x 19
    layouts. Returns (row group of each u strategy, column group of each v strategy,
    cost table, memory table or None) with tables of shape (groups, groups)."""
    both = mat[:, :, None] if mem is None else np.stack([mat, np.asarray(mem, dtype=np.float64)], axis=2)
    rows, row_of = np.unique(both.reshape(len(mat), -1), axis=0, return_inverse=True)
    rows = rows.reshape(len(rows), mat.shape[1], -1)
    cols, col_of = np.unique(rows.transpose(1, 0, 2).reshape(mat.shape[1], -1), axis=0, return_inverse=True)
    table = cols.reshape(len(cols), len(rows), -1).transpose(1, 0, 2)
    return row_of.reshape(-1), col_of.reshape(-1), table[:, :, 0], (None if mem is None else table[:, :, 1])


def solve_mip(p: Problem, *, backend: str, time_limit_s: float, hint: np.ndarray | None = None,
              cutoff: float | None = None) -> MipResult:
    """``backend``: "highs" (built as sparse arrays, solved through scipy: highs.py) or
    "scip" (built here through OR-Tools, which takes ``hint``). ``cutoff``: HiGHS only
    (see ``solve_highs``); SCIP ignores it."""
    if backend.lower() == "highs":
        from .highs import solve_highs  # imports mip.MipResult

        return solve_highs(p, time_limit_s=time_limit_s, cutoff=cutoff)
    with _quiet_stdout():
        return _solve_mip(p, backend, time_limit_s, hint)


def _solve_mip(p: Problem, backend: str, time_limit_s: float, hint: np.ndarray | None) -> MipResult:
    solver = pywraplp.Solver.CreateSolver(backend.upper())
    if solver is None:
        raise ValueError(f"OR-Tools has no {backend!r} MIP solver in this build; use backend='cpsat'")
    solver.SuppressOutput()
    objective = solver.Objective()
    x = []
    for i, costs in enumerate(p.node_costs):
        xi = [solver.BoolVar(f"x{i}_{s}") for s in range(len(costs))]
        one = solver.Constraint(1.0, 1.0)
        for s, var in enumerate(xi):
            one.SetCoefficient(var, 1.0)
            objective.SetCoefficient(var, float(costs[s]))
        x.append(xi)
    budgeted = p.memory_budget is not None
    mem = solver.Constraint(-solver.infinity(), float(p.memory_budget)) if budgeted else None
    node_memory = [np.array(mm, dtype=np.float64) for mm in p.node_memory]
    for e, ((u, v), mat) in enumerate(zip(np.asarray(p.edges).reshape(-1, 2), p.edge_costs)):
        mat = np.asarray(mat, dtype=np.float64)
        mm = p.edge_memory.get(e) if budgeted else None
        if u == v:
            for s, var in enumerate(x[u]):
                objective.SetCoefficient(var, objective.GetCoefficient(var) + float(mat[s, s]))
            if mm is not None:
                node_memory[u] += np.diag(mm)
            continue
        base = float(mat.min())
        if np.all(mat == base) and (mm is None or np.all(mm == 0)):  # a constant matrix decides nothing
            objective.SetOffset(objective.offset() + base)
            continue
        row_of, col_of, cols, mem_table = edge_groups(mat, mm)
        y = [[solver.NumVar(0.0, 1.0, "") for _ in range(cols.shape[1])] for _ in range(cols.shape[0])]
        if mem_table is not None:
            for g, h in zip(*np.nonzero(mem_table)):
                mem.SetCoefficient(y[g][h], float(mem_table[g, h]))
        for g in range(cols.shape[0]):
            row = solver.Constraint(0.0, 0.0)
            for s_ in np.nonzero(row_of == g)[0]:
                row.SetCoefficient(x[u][int(s_)], -1.0)
            for h in range(cols.shape[1]):
                row.SetCoefficient(y[g][h], 1.0)
                if cols[g, h] != 0.0:
                    objective.SetCoefficient(y[g][h], float(cols[g, h]))
        for h in range(cols.shape[1]):
            col = solver.Constraint(0.0, 0.0)
            for t in np.nonzero(col_of == h)[0]:
                col.SetCoefficient(x[v][int(t)], -1.0)
            for g in range(cols.shape[0]):
                col.SetCoefficient(y[g][h], 1.0)
    for v, (u, mapping) in sorted(p.follows.items()):
        for s, t in enumerate(mapping):  # x_u[s] <= x_v[mapping[s]]
            c = solver.Constraint(-solver.infinity(), 0.0)
            c.SetCoefficient(x[u][s], 1.0)
            c.SetCoefficient(x[v][int(t)], -1.0)
    if budgeted:
        for xi, mm in zip(x, node_memory):
            for s, var in enumerate(xi):
                if mm[s]:
                    mem.SetCoefficient(var, float(mm[s]))
    objective.SetMinimization()
    if hint is not None and backend.lower() != "highs":  # HiGHS crashes on hints (ortools 9.15)
        solver.SetHint([var for xi in x for var in xi], [float(s == hint[i]) for i, xi in enumerate(x) for s in range(len(xi))])
    solver.SetTimeLimit(max(int(time_limit_s * 1000), 100))
    params = pywraplp.MPSolverParameters()
    # The default 1e-4 relative gap stops on plans measurably worse than the best.
    params.SetDoubleParam(params.RELATIVE_MIP_GAP, 1e-7)
    code = solver.Solve(params)
    status = _STATUS.get(code, "UNKNOWN")
    choice = None
    if code in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        choice = np.array([int(np.argmax([var.solution_value() for var in xi])) for xi in x], dtype=np.int64)
    value = objective.Value() if choice is not None else float("inf")
    bound = objective.BestBound() if choice is not None else float("-inf")
    return MipResult(choice, status, value, bound, solver.NumVariables(), solver.NumConstraints())
