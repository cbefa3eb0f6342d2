"""Solver tests on hand-built five-node problems whose optima are worked out by hand."""

import pathlib
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardsearch.errors import MemoryBudgetError
from shardsearch.solve import (Problem, ProblemError, SolverTimeoutError, evaluate, min_memory,
                               reduce_problem, solve)


def mismatch(s: int, penalty: float) -> np.ndarray:
    """Resharding matrix: free when both ends agree, `penalty` otherwise."""
    return penalty * (1.0 - np.eye(s))


def chain(costs, penalty, memory=None, budget=None, follows=None):
    n, s = len(costs), len(costs[0])
    return Problem(
        node_costs=[np.array(c, dtype=float) for c in costs],
        node_memory=[np.array(m, dtype=float) for m in (memory or [[0.0] * s] * n)],
        edges=np.array([(i, i + 1) for i in range(n - 1)]),
        edge_costs=[mismatch(s, penalty) for _ in range(n - 1)],
        memory_budget=budget, follows=follows or {})


def complete5(costs, penalty):
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    return Problem([np.array(c, dtype=float) for c in costs], [np.zeros(len(costs[0]))] * 5,
                   np.array(pairs), [mismatch(len(costs[0]), penalty) for _ in pairs])


def test_chain_resharding_pushes_all_nodes_to_one_strategy():
    # Ends prefer 0, the middle prefers 1 (by 1 s each); mismatches cost 10 s.
    # All-1 costs 1 + 0 + 0 + 0 + 1 = 2; all-0 costs 3; mixing pays >= 10.
    p = chain([[0, 1], [1, 0], [1, 0], [1, 0], [0, 1]], penalty=10)
    sol = solve(p)
    assert sol.status == "OPTIMAL"
    assert sol.choice.tolist() == [1, 1, 1, 1, 1]
    assert sol.objective == pytest.approx(2.0) and sol.bound == pytest.approx(2.0)
    assert sol.reduced_nodes == 0  # a chain is eliminated exactly, CP-SAT never runs
    assert evaluate(p, [0, 1, 1, 1, 0]).total == pytest.approx(20.0)  # node-cheapest


def test_node_cheapest_choice_is_not_optimal_on_a_dense_graph():
    # Every pair is joined (no node has degree <= 2, so CP-SAT runs). With B the set of
    # nodes on strategy 1 the cost is (node costs) + |B| * (5 - |B|). Node-cheapest
    # B = {1, 2} costs 0 + 6; B = {} costs 4 (nodes 1, 2 pay 2); every other B >= 6.
    p = complete5([[0, 2], [2, 0], [2, 0], [0, 2], [0, 2]], penalty=1)
    assert evaluate(p, [0, 1, 1, 0, 0]).total == pytest.approx(6.0)
    sol = solve(p)
    assert sol.status == "OPTIMAL" and sol.reduced_nodes == 5
    assert sol.choice.tolist() == [0, 0, 0, 0, 0]
    assert sol.objective == pytest.approx(4.0)
    assert sol.num_variables > 0 and sol.num_constraints > 0


def test_ties_are_resolved_deterministically():
    # All-0 and all-1 both cost 0 on the dense graph; the chain has 2**5 optima.
    dense = complete5([[0, 0]] * 5, penalty=1)
    flat = chain([[1, 1]] * 5, penalty=0)
    for p in (dense, flat):
        # Interleaved search gives the same answer for any num_workers >= 2; one worker
        # takes another code path in CP-SAT (still repeatable, maybe another optimum).
        runs = [solve(p, num_workers=w, backend="cpsat").choice.tolist() for w in (8, 8, 2, 4)]
        assert all(r == runs[0] for r in runs)
        one = [solve(p, num_workers=1, backend="cpsat").choice.tolist() for _ in range(2)]
        assert one[0] == one[1]
        assert len(set(runs[0])) == 1  # consistent: uniform, no resharding
        mip = [solve(p, reduce=False).choice.tolist() for _ in range(3)]  # HiGHS: one thread
        assert all(r == mip[0] for r in mip) and len(set(mip[0])) == 1
    assert solve(flat).choice.tolist() == [0] * 5  # eliminated: ties go to the lowest index


def test_followed_node_takes_its_leaders_mapped_strategy():
    # Chain 0-1-2-3 (mismatch 10); node 4 must take the opposite of node 3 and is
    # joined to it by a matrix costing 1 off the diagonal. Node 4 prefers 0 by 5 s.
    # 3 on 0 -> 4 on 1: 0 + 5 + 1 = 6.  3 on 1 -> 4 on 0: nodes 0..3 on 1 cost 4, + 1 = 5.
    p = chain([[0, 1]] * 4 + [[0, 5]], penalty=10, follows={4: (3, np.array([1, 0]))})
    p.edge_costs[3] = mismatch(2, 1.0)
    sol = solve(p)
    assert sol.choice.tolist() == [1, 1, 1, 1, 0]
    assert sol.objective == pytest.approx(5.0)
    assert solve(p, reduce=False).choice.tolist() == [1, 1, 1, 1, 0]
    broken = evaluate(p, [0, 0, 0, 0, 0])
    assert broken.total == pytest.approx(0.0) and not broken.feasible
    assert "follows node 3" in broken.violations[0]


def test_memory_budget_forces_a_costlier_choice():
    # Strategy 0 costs 0 s and 10 bytes, strategy 1 costs 1 s (node 4: 1.5 s) and 4 bytes;
    # mismatches cost 1 s. Unbudgeted: all-0, cost 0, 50 bytes. Budget 40 needs >= 2 nodes
    # on 1: the block {0, 1} costs 1 + 1 + 1 = 3 (38 bytes); {3, 4} costs 3.5, {1, 2} 4,
    # {0, 1, 2} 4, all-1 5.5.
    costs = [[0, 1]] * 4 + [[0, 1.5]]
    memory = [[10, 4]] * 5
    assert solve(chain(costs, 1, memory)).objective == pytest.approx(0.0)
    p = chain(costs, 1, memory, budget=40)
    sol = solve(p)
    assert sol.status == "OPTIMAL"
    assert sol.choice.tolist() == [1, 1, 0, 0, 0]
    assert sol.objective == pytest.approx(3.0)
    assert evaluate(p, sol.choice).memory == 38
    over = evaluate(p, [0] * 5)
    assert over.violations == ("memory 50 bytes exceeds the budget 40 bytes by 10 bytes",)


def test_infeasible_memory_budget_names_the_minimum():
    p = chain([[0, 1]] * 5, 1, memory=[[10, 4]] * 5, budget=15)  # least possible: 5 * 4
    with pytest.raises(MemoryBudgetError, match=r"smallest achievable memory is 20 bytes"):
        solve(p)
    with pytest.raises(MemoryBudgetError, match=r"at least 20 bytes"):
        solve(p, reduce=False)


def test_no_solution_within_the_limit_raises_a_clear_error():
    p = _tree_with_skips(300, 8, skips=20, seed=0)
    p.memory_budget = 1.2 * min_memory(p)  # binding
    # the whole problem in one MIP (reduced, the priced solves of lagrange.py find a plan)
    with pytest.raises(SolverTimeoutError, match=r"deterministic_time_s=0.*Raise the time limit"):
        solve(p, deterministic_time_s=0.0, backend="cpsat", reduce=False)


def test_evaluate_reports_out_of_range_and_bad_problems():
    p = chain([[0, 1]] * 5, 1)
    bad = evaluate(p, [0, 2, 0, 0, -1])
    assert len(bad.violations) == 2 and "strategy 2 outside 0..1" in bad.violations[0]
    assert evaluate(p, [0, 0, 0]).violations[0] == "choice has 3 entries for 5 nodes"
    cyclic = chain([[0, 1]] * 5, 1, follows={1: (2, np.arange(2)), 2: (1, np.arange(2))})
    with pytest.raises(ProblemError, match="cycle"):
        solve(cyclic)
    wrong = chain([[0, 1]] * 5, 1)
    wrong.edge_costs[0] = np.zeros((3, 2))
    with pytest.raises(ProblemError, match=r"edge 0 .*expected \(2, 2\)"):
        solve(wrong)
    # the bulk checks still name the first offender
    for breaks, message in [
        (lambda q: q.node_costs.__setitem__(3, np.array([0.0, np.inf])), r"node 3: costs or memory not finite"),
        (lambda q: q.node_memory.__setitem__(2, np.zeros(3)), r"node 2: .*memory shape \(3,\)"),
        (lambda q: setattr(q, "edges", np.array([[0, 1], [1, 2], [2, 9], [3, 4]])), r"edge 2 = \(2, 9\) names a node"),
        (lambda q: q.edge_costs.__setitem__(1, np.array([[0.0, np.nan], [0, 0]])), r"edge 1 .*cost not finite"),
    ]:
        q = chain([[0, 1]] * 5, 1)
        breaks(q)
        with pytest.raises(ProblemError, match=message):
            q.validate()


def test_reduction_expands_exactly_and_is_deterministic():
    # Parallel edges, a self-edge, a follower chain 4 -> 3 -> 0 and a one-strategy node.
    p = Problem(
        node_costs=[np.array([1.0, 2, 0]), np.array([0.0, 3]), np.array([5.0]),
                    np.array([0.0, 1, 2]), np.array([2.0, 0])],
        node_memory=[np.zeros(3), np.zeros(2), np.zeros(1), np.zeros(3), np.zeros(2)],
        edges=np.array([(0, 1), (1, 0), (1, 1), (2, 1), (3, 4), (4, 1)]),
        edge_costs=[np.arange(6.0).reshape(3, 2), np.ones((2, 3)), np.array([[1.0, 0], [0, 4]]),
                    np.array([[0.0, 7]]), np.array([[0.0, 1], [1, 0], [2, 2]]), np.eye(2)],
        follows={3: (0, np.array([2, 1, 0])), 4: (3, np.array([1, 0, 0]))})
    a, b = reduce_problem(p), reduce_problem(p)
    assert a.problem.num_nodes == 0 and a.kept.tolist() == b.kept.tolist()
    choice = a.expand([])
    assert evaluate(p, choice).feasible
    assert evaluate(p, choice).total == pytest.approx(a.cost_offset)
    brute = min(evaluate(p, c).total for c in np.ndindex(3, 2, 1, 3, 2)
                if evaluate(p, c).feasible)
    assert a.cost_offset == pytest.approx(brute)


def _brute(p: Problem):
    """(cost, choice) of the cheapest feasible assignment by enumeration, or None."""
    best = None
    for c in np.ndindex(*[len(c) for c in p.node_costs]):
        r = evaluate(p, np.array(c, dtype=np.int64))
        if r.feasible and (best is None or r.total < best[0] - 1e-12):
            best = (r.total, np.array(c, dtype=np.int64))
    return best


@st.composite
def small_problems(draw):
    n = draw(st.integers(1, 7))
    sizes = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    quarter = st.integers(0, 12).map(lambda k: k / 4)  # exact in binary: no float ties lost

    def vec(k, elem):
        return np.array(draw(st.lists(elem, min_size=k, max_size=k)), dtype=float)

    node = st.integers(0, n - 1)
    pairs = draw(st.lists(st.tuples(node, node), max_size=10))  # self, parallel, cycles
    follows = {}
    for v in range(1, n):
        if draw(st.integers(0, 3)) == 0:
            u = draw(st.integers(0, v - 1))  # leaders come first: acyclic, chains allowed
            follows[v] = (u, vec(sizes[u], st.integers(0, sizes[v] - 1)).astype(np.int64))
    memory = [vec(s, st.integers(0, 6)) for s in sizes]
    budget = draw(st.one_of(st.none(), st.integers(0, int(sum(m.max() for m in memory)))))
    return Problem([vec(s, quarter) for s in sizes], memory,
                   np.array(pairs, dtype=np.int64).reshape(-1, 2),
                   [vec(sizes[u] * sizes[v], quarter).reshape(sizes[u], sizes[v])
                    for u, v in pairs],
                   None if budget is None else float(budget), follows)


@settings(max_examples=60, deadline=None)
@given(small_problems())
def test_ilp_and_reduction_match_brute_force(p):
    best = _brute(p)
    if best is None:  # only the budget can make a problem infeasible
        with pytest.raises(MemoryBudgetError):
            solve(p)
        return
    for reduce, backend in ((True, "highs"), (False, "highs"), (False, "cpsat"), (False, "scip")):
        sol = solve(p, reduce=reduce, num_workers=2, backend=backend)
        assert sol.status == "OPTIMAL" and evaluate(p, sol.choice).feasible
        assert sol.objective == pytest.approx(best[0], abs=1e-9)
        assert sol.bound == pytest.approx(best[0], abs=1e-9)
    red = reduce_problem(p)
    reduced_cost, reduced_choice = _brute(red.problem)
    assert reduced_cost + red.cost_offset == pytest.approx(best[0], abs=1e-9)
    full = evaluate(p, red.expand(reduced_choice))
    assert full.feasible and full.total == pytest.approx(best[0], abs=1e-9)


def _tree_with_skips(n, s, skips, seed):
    """A layered, tree-like graph with a few residual-style skip edges (cycles)."""
    rng = np.random.default_rng(seed)
    edges = [(int(rng.integers(max(0, i - 3), i)), i) for i in range(1, n)]
    edges += [(i - int(rng.integers(2, 6)), i) for i in rng.integers(6, n, skips)]
    mats = []
    for _ in edges:
        m = np.round(rng.uniform(0, 2e-3, (s, s)), 6)
        np.fill_diagonal(m, 0)
        mats.append(m)
    return Problem([np.round(rng.uniform(0, 1e-3, s), 6) for _ in range(n)],
                   [rng.integers(1, 9, s) * 2.0**20 for _ in range(n)],
                   np.array(edges), mats)


def test_large_tree_like_problem_solves_to_optimality():
    lines = []
    p = _tree_with_skips(2000, 8, skips=200, seed=0)  # reduces to a small cyclic core
    sol = solve(p, log=lines.append)
    assert sol.status == "OPTIMAL"
    assert 0 < sol.reduced_nodes < 200
    assert sol.objective == pytest.approx(evaluate(p, sol.choice).total)
    assert lines[0].startswith("solve: 2000 nodes") and "reduced to" in lines[1] and "OPTIMAL" in lines[-1]
    # A smaller instance of the same shape: reduced and raw ILPs must agree.
    small = _tree_with_skips(40, 4, skips=4, seed=1)
    full, raw = solve(small), solve(small, reduce=False)
    assert full.status == raw.status == "OPTIMAL"
    assert full.objective == pytest.approx(raw.objective, rel=1e-9)


def test_solve_package_never_imports_jax():
    root = pathlib.Path(__file__).parents[1] / "shardsearch" / "solve"
    for path in root.glob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+jax", path.read_text(), re.M), path


@settings(max_examples=40, deadline=None)
@given(small_problems())
def test_pruning_dominated_strategies_keeps_the_optimum(p):
    from shardsearch.solve.prune import prune_dominated

    best = _brute(p)
    if best is None or p.follows:
        return
    pruned = prune_dominated(p)
    cost, choice = _brute(pruned.problem)
    assert cost == pytest.approx(best[0], abs=1e-9)
    assert evaluate(p, pruned.expand(choice)).total == pytest.approx(best[0], abs=1e-9)


def test_pruning_drops_a_strategy_no_neighbour_wants():
    from shardsearch.solve.prune import prune_dominated

    # node 1's strategy 2 costs more, and every edge into it costs at least as much
    edge = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    p = Problem([np.array([0.0, 1.0]), np.array([0.0, 0.0, 5.0]), np.array([0.0, 1.0])], [np.zeros(2), np.zeros(3), np.zeros(2)],
                np.array([(0, 1), (2, 1)]), [edge, edge])
    pruned = prune_dominated(p)
    # node 0's (and 2's) strategy 1 costs 1 more and saves at most 1 on its edge: dominated;
    # with both neighbours down to strategy 0, node 1's 1 and 2 are dominated in turn
    assert [k.tolist() for k in pruned.keep] == [[0], [0], [0]]
    assert solve(p).objective == pytest.approx(0.0)


def test_local_search_finds_a_consistent_assignment():
    from shardsearch.solve.local import local_search

    p = chain([[1.0, 0.0]] * 5, penalty=10.0)  # all-1 is optimal; all-0 a local optimum
    choice = local_search(p)
    assert len(set(choice.tolist())) == 1 and evaluate(p, choice).feasible
