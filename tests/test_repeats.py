"""Repeated layers: found by shape in the traced program, tied in the solver, same optimum."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shardsearch as ss
from shardsearch.repeats import find_repeats, tie_labels
from shardsearch.solve import Problem, evaluate, solve
from shardsearch.solve.tie import tie_problem
from shardsearch.trace import trace

from test_solve import small_problems


def _brute_tied(p: Problem, labels):
    """Cheapest feasible assignment in which equal labels take equal strategies."""
    groups = sorted(set(labels.tolist()))
    sizes = [len(p.node_costs[int(np.flatnonzero(labels == g)[0])]) for g in groups]
    best = None
    for pick in np.ndindex(*sizes):
        choice = np.array([pick[groups.index(l)] for l in labels], dtype=np.int64)
        r = evaluate(p, choice)
        if r.feasible and (best is None or r.total < best - 1e-12):
            best = r.total
    return best


@settings(max_examples=40, deadline=None)
@given(small_problems(), st.data())
def test_tied_solve_finds_the_best_tied_assignment_or_better(p, data):
    """Ties bind the nodes the ILP sees; followers and nodes the reduction eliminates
    pick their best strategy given their neighbours, which can only cost less."""
    n = p.num_nodes
    labels = np.array([data.draw(st.integers(0, i)) for i in range(n)], dtype=np.int64)
    counts = [len(c) for c in p.node_costs]  # unequal counts are never tied: split them
    labels = np.array([l if counts[l] == counts[i] else i for i, l in enumerate(labels)])
    tied_best = _brute_tied(p, labels)
    if tied_best is None:
        return  # the budget rules out every tied assignment; covered in test_solve
    free = solve(p, reduce=False)
    sol = solve(p, ties=labels, tie_min_nodes=0)
    assert evaluate(p, sol.choice).feasible
    assert free.objective - 1e-9 <= sol.objective <= tied_best + 1e-9
    untied = solve(p, ties=np.arange(n), tie_min_nodes=0)  # every label distinct: the plain optimum
    assert untied.objective == pytest.approx(free.objective, abs=1e-9)


def test_tie_problem_sums_costs_and_turns_inner_edges_into_self_edges():
    mismatch = 1.0 - np.eye(2)
    p = Problem([np.array([1.0, 0.0]), np.array([0.0, 3.0]), np.array([2.0, 2.0])], [np.zeros(2)] * 3,
                np.array([(0, 1), (1, 2)]), [mismatch, 5 * mismatch])
    tied = tie_problem(p, np.array([0, 0, 2]))
    assert tied.problem.num_nodes == 2
    assert tied.problem.node_costs[0].tolist() == [1.0, 3.0]
    assert tied.problem.edges.tolist() == [[0, 0], [0, 1]]  # (0,1) is inside the group now
    assert tied.expand([1, 0]).tolist() == [1, 1, 0]


def _layered(x, ws):
    for w in ws:
        x = jnp.tanh(x @ w) + x  # a residual layer, written as a Python loop
    return jnp.sum(x**2)


def test_layers_of_a_python_loop_are_found_forward_and_backward():
    ws = [jax.ShapeDtypeStruct((32, 32), jnp.float32)] * 6
    x = jax.ShapeDtypeStruct((16, 32), jnp.float32)
    graph = trace(jax.grad(_layered, argnums=1), (x, ws))
    counts = [1] * len(graph.nodes)
    reps = find_repeats(graph, counts)
    # The forward layers and the backward layers each repeat (the parameters too).
    assert sum(r.copies >= 5 for r in reps) >= 2
    labels = tie_labels(graph, counts)
    assert len(graph.nodes) - len(np.unique(labels)) >= 30  # of 76: blocks 2.. of each run
    dots = [n.id for n in graph.nodes if n.primitive == "dot_general"][:6]  # the forward layers
    assert labels[dots].tolist() == [dots[0], dots[1]] * 3  # even and odd layers: two representatives
    # Every tied node matches its representative's operator and shapes.
    for i, rep in enumerate(labels):
        a, b = graph.nodes[i], graph.nodes[rep]
        assert (a.primitive, a.outputs) == (b.primitive, b.outputs)


def test_operators_wired_differently_are_not_tied():
    def f(x, ws):
        a = x
        for i, w in enumerate(ws):
            y = jnp.tanh(a @ w)
            a = y + a if i % 2 == 0 else y + y  # same ops and shapes, other wiring
        return a.sum()

    ws = [jax.ShapeDtypeStruct((8, 8), jnp.float32)] * 12
    g = trace(f, (jax.ShapeDtypeStruct((4, 8), jnp.float32), ws))
    labels = tie_labels(g, [1] * len(g.nodes))
    adds = [n.id for n in g.nodes if n.primitive == "add"]
    assert labels[adds[0]] != labels[adds[1]]  # a residual add is not a doubling
    assert labels[adds[0]] == labels[adds[4]] == labels[adds[8]]  # pairs of layers repeat
    assert labels[adds[1]] == labels[adds[5]]


@pytest.mark.slow
def test_gpt_plan_with_tied_layers_costs_what_the_full_ilp_finds():
    from benchmarks.models import gpt

    cfg = dataclasses.replace(gpt.CONFIGS["gpt-tiny"], name="gpt-tiny-3L", layers=3)
    w = gpt.make_workload(cfg)
    tied = ss.plan(w.train_step, *w.args, mesh=(2, 4), cluster="h100-8")
    full = ss.plan(w.train_step, *w.args, mesh=(2, 4), cluster="h100-8", tie_repeats=False)
    assert full.stats.status == tied.stats.status == "OPTIMAL"
    assert tied.stats.objective == pytest.approx(full.stats.objective, rel=1e-6)
    assert tied.stats.reduced_nodes < full.stats.reduced_nodes  # layer 2 solved as layer 0
