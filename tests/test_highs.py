"""solve/highs.py: the sparse-array HiGHS model counts what it builds, and stops on time."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardsearch.solve import AboveCutoff, solve
from shardsearch.solve.evaluate import evaluate
from shardsearch.solve.highs import formulation_size, solve_highs
from shardsearch.solve.problem import Problem
from tests.test_solve import _brute, small_problems


@settings(max_examples=40, deadline=None)
@given(small_problems())
def test_formulation_size_counts_the_model_solve_highs_builds(p):
    res = solve_highs(p, time_limit_s=10)
    assert formulation_size(p) == (res.num_variables, res.num_constraints)


def _chain(n: int, k: int, seed: int) -> Problem:
    rng = np.random.default_rng(seed)
    edges = np.array([(i, j) for i in range(n) for j in range(i + 1, min(n, i + 4))])
    return Problem([rng.random(k) for _ in range(n)], [np.zeros(k) for _ in range(n)], edges,
                   [rng.random((k, k)) for _ in edges])


def test_a_solve_stopped_by_the_time_limit_returns_its_best_plan_and_bound():
    p = _chain(60, 12, seed=0)  # random costs: far from solved in 3 s
    res = solve_highs(p, time_limit_s=3)
    assert res.status == "FEASIBLE"
    assert abs(res.objective - evaluate(p, res.choice).total) < 1e-9
    assert res.bound < res.objective


@settings(max_examples=60, deadline=None)
@given(small_problems(), st.sampled_from([-0.25, 0.0, 0.25]))
def test_a_cutoff_stops_exactly_when_no_plan_beats_it(p, offset):
    """solve(cutoff=): below the optimum it raises AboveCutoff, at or above it the optimum
    comes back (the advisor skips meshes by this)."""
    found = _brute(p)
    if found is None or p.memory_budget is not None:
        return
    best = found[0]
    cutoff = best + offset
    if offset < 0:
        with pytest.raises(AboveCutoff):
            solve(p, cutoff=cutoff)
    else:
        assert solve(p, cutoff=cutoff).objective == pytest.approx(best, abs=1e-9)
