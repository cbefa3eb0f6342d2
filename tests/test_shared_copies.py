"""One reshard per (value, layout): readers that need a value in one layout share a copy
(shardsearch/costs/copies.py), as XLA moves a value once per target layout."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from shardsearch.costs.copies import Edges, Read, copy_labels, share_copies, shared_reads
from shardsearch.solve import Problem, evaluate, solve

# A value made in layout A or B (producer node 0) and read by nodes 1 and 2, each of which
# needs it in one of its layouts. Reshard price from a producer layout into a layout:
PRICE = {("A", "A"): 0.0, ("A", "B"): 5.0, ("A", "C"): 3.0, ("B", "A"): 4.0, ("B", "B"): 0.0, ("B", "C"): 2.0}
SRCS = ("A", "B")
READERS = {1: ("A", "C"), 2: ("C", "B")}
NODE_COSTS = [np.array([1.0, 0.0]), np.array([0.0, 1.5]), np.array([2.5, 0.0])]


def _true_cost(choice) -> float:
    """The program's cost: each distinct layout the readers need is made once."""
    src = SRCS[choice[0]]
    needed = {READERS[v][choice[v]] for v in READERS}
    return sum(float(NODE_COSTS[i][c]) for i, c in enumerate(choice)) + sum(PRICE[(src, lay)] for lay in needed)


def _problem(wanted):
    pairs, costs, reads = [], [], []
    for v, dsts in READERS.items():
        pairs.append((0, v))
        costs.append(np.array([[PRICE[(s, d)] for d in dsts] for s in SRCS]))
        reads.append(Read(("x", 0, 1), 0, v, dsts))
    edges = Edges(pairs, costs, [np.zeros_like(c) for c in costs], {})
    copies = share_copies(3, edges, reads, wanted)
    extra = [np.zeros(2)] * len(copies)  # a copy node: no cost of its own
    problem = Problem(NODE_COSTS + extra, [np.zeros(len(c)) for c in NODE_COSTS] + extra,
                      np.array(edges.pairs), edges.costs)
    return problem, copies, reads


def _full(choice, copies):
    return list(choice) + [int(c.made(choice)) for c in copies]


def test_every_plan_is_priced_at_its_true_cost_with_copies():
    problem, copies, _ = _problem(None)
    assert [c.layout for c in copies] == ["C"]  # the one layout both readers can need
    for choice in itertools.product(range(2), repeat=3):
        assert evaluate(problem, _full(choice, copies)).total == pytest.approx(_true_cost(choice))


def test_a_copy_not_made_costs_more_than_making_it():
    problem, copies, _ = _problem(None)
    choice = (0, 1, 0)  # both readers need C
    made, skipped = _full(choice, copies), list(choice) + [0]
    assert evaluate(problem, skipped).total > evaluate(problem, made).total


def test_per_edge_pricing_charges_the_shared_layout_twice():
    problem, copies, _ = _problem(frozenset())
    assert copies == []
    choice = (1, 1, 0)  # B -> C for both readers: 2.0 paid twice
    assert evaluate(problem, choice).total == pytest.approx(_true_cost(choice) + PRICE[("B", "C")])


def test_the_solver_finds_the_true_optimum():
    problem, copies, _ = _problem(None)
    best = min(itertools.product(range(2), repeat=3), key=_true_cost)
    found = solve(problem, time_limit_s=10)
    assert found.objective == pytest.approx(_true_cost(best))
    assert found.objective == pytest.approx(_true_cost(tuple(found.choice[:3])))


def test_shared_reads_names_the_pairs_a_plan_pays_twice():
    problem, _, reads = _problem(frozenset())
    assert shared_reads(reads, problem.edge_costs, (1, 1, 0)) == {(("x", 0, 1), "C")}
    assert shared_reads(reads, problem.edge_costs, (0, 0, 0)) == frozenset()  # A -> A is free: read once
    # once the copy is in the problem, its readers' columns are zeroed: nothing new to add
    shared, copies, reads = _problem(frozenset({(("x", 0, 1), "C")}))
    assert len(copies) == 1 and shared_reads(reads, shared.edge_costs, _full((1, 1, 0), copies)) == frozenset()


def test_copies_tie_when_producers_and_readers_tie():
    problem, copies, _ = _problem(None)
    labels = np.array([7, 8, 9])
    assert copy_labels(labels, copies).tolist() == [7, 8, 9, 10]
