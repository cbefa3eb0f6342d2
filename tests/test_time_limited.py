"""A solve stopped by its time limit hands on the best plan it has seen, never a worse one."""

import numpy as np

from shardsearch import search
from shardsearch.solve import ilp
from shardsearch.solve.evaluate import evaluate
from shardsearch.solve.mip import MipResult
from shardsearch.solve.problem import Problem, Solution


def _problem() -> Problem:
    # two nodes that agree on strategy 0 for free; any disagreement costs 10
    cost = np.array([[0.0, 10.0], [10.0, 10.0]])
    return Problem([np.array([1.0, 2.0]), np.array([1.0, 2.0])], [np.zeros(2), np.zeros(2)],
                   np.array([[0, 1]]), [cost])


def test_a_stopped_mip_incumbent_worse_than_the_heuristic_start_is_not_used(monkeypatch):
    p = _problem()
    worst = np.array([1, 0])  # 2 + 1 + 10

    def stopped(core, **_):
        return MipResult(worst[:core.num_nodes], "FEASIBLE", 13.0, 0.0, 6, 4)

    monkeypatch.setattr(ilp, "solve_mip", stopped)
    sol = ilp.solve(p, reduce=False, backend="highs")
    assert sol.status == "FEASIBLE" and sol.choice.tolist() == [0, 0] and sol.objective == 2.0
    assert sol.bound == 0.0


def test_the_fixed_point_keeps_an_earlier_plan_cheaper_on_the_final_problem():
    p = _problem()
    last = Solution(choice=np.array([1, 0]), objective=evaluate(p, np.array([1, 0])).total, bound=0.0,
                    status="FEASIBLE", solve_s=1.0, num_variables=6, num_constraints=4, reduced_nodes=2)
    kept = search._best_of(p, last, [np.array([0, 0])])
    assert kept.choice.tolist() == [0, 0] and kept.objective == 2.0 and kept.status == "FEASIBLE"
    assert search._best_of(p, last, [np.array([1, 1])]) is last  # a dearer earlier plan is not taken
