"""Price each recipe: keep only its argument layouts in the plan's problem, let the
solver complete the rest of the program, and evaluate that assignment on the full
problem (the same evaluator that prices the plan itself)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from cost_model.mesh import MeshShape
from shardsearch.compare.baselines import DESCRIPTIONS, RECIPES, Alternative, argument_roles, recipe_layouts
from shardsearch.graph import OpGraph
from shardsearch.solve.evaluate import evaluate
from shardsearch.solve.problem import Problem
from shardsearch.strategies import Strategy


def restrict(problem: Problem, keep: dict[int, np.ndarray]) -> Problem:
    """``problem`` with node ``i`` left only its strategies ``keep[i]`` (indices into the
    original); the restricted problem's strategy ``k`` of node ``i`` is ``keep[i][k]``.
    A restricted node may lead a follower (its mapping is narrowed) but not follow one."""
    full = {i: np.arange(len(c)) for i, c in enumerate(problem.node_costs)}
    sel = {**full, **{i: np.asarray(k, dtype=np.int64) for i, k in keep.items()}}
    edges = np.asarray(problem.edges, dtype=np.int64).reshape(-1, 2)
    follows = {}
    for v, (u, mapping) in problem.follows.items():
        if v in keep:
            raise ValueError(f"node {v} follows node {u}: restrict its leader instead")
        follows[v] = (u, np.asarray(mapping)[sel[u]])
    return dataclasses.replace(
        problem,
        node_costs=[np.asarray(c)[sel[i]] for i, c in enumerate(problem.node_costs)],
        node_memory=[np.asarray(m)[sel[i]] for i, m in enumerate(problem.node_memory)],
        edge_costs=[np.asarray(m)[np.ix_(sel[u], sel[v])] for m, (u, v) in zip(problem.edge_costs, edges)],
        edge_memory={e: np.asarray(m)[np.ix_(sel[edges[e][0]], sel[edges[e][1]])]
                     for e, m in problem.edge_memory.items()},
        follows=follows,
        memory_budget=None,  # a recipe is priced whether or not it fits; `fits` says which
    )


def completed(problem: Problem, keep: dict[int, np.ndarray], solve: Callable[[Problem], tuple[np.ndarray, str]]):
    """``problem`` solved with node ``i`` restricted to ``keep[i]``: the full problem's
    choice (indices into its strategies) and the solver's status."""
    sub_choice, status = solve(restrict(problem, keep))
    return np.array([keep[i][c] if i in keep else c for i, c in enumerate(sub_choice)], dtype=np.int64), status


def compare(
    graph: OpGraph,
    per_node: list[list[Strategy]],
    *,
    mesh: MeshShape,
    complete: Callable[[dict[int, np.ndarray]], tuple[Problem, np.ndarray, str]],
    split_compute: Callable[[Problem, np.ndarray], float],
    peak_bytes: Callable[[list[Strategy]], float],
    memory_budget: float | None,
) -> tuple[Alternative, ...]:
    """Each recipe of ``RECIPES`` completed by ``complete`` (the strategies each argument
    keeps -> the problem it was completed on, with the copies its readers share, the full
    choice and the solver's status) and priced on that problem; ``split_compute`` gives the
    compute seconds of a choice (the rest of its cost is communication), ``peak_bytes`` its
    memory peak."""
    roles = argument_roles(graph)
    inputs = graph.input_nodes
    candidates = [[s.out_specs[0] for s in per_node[n]] for n in inputs]
    shapes = [graph.nodes[n].outputs[0].shape for n in inputs]
    out = []
    for recipe in RECIPES:
        layouts = recipe_layouts(recipe, roles, candidates, shapes, mesh)
        keep = {n: np.flatnonzero([c == want for c in cands])
                for n, want, cands in zip(inputs, layouts, candidates) if want is not None}
        priced, choice, status = complete(keep)
        cost = evaluate(priced, choice)
        compute = split_compute(priced, choice)
        chosen = [per_node[i][c] for i, c in enumerate(choice[:len(per_node)])]  # copy nodes follow the graph's
        peak = peak_bytes(chosen)
        out.append(Alternative(
            name=recipe, description=DESCRIPTIONS[recipe], total_s=cost.total, compute_s=compute,
            comm_s=cost.total - compute, peak_bytes=peak,
            fits=memory_budget is None or peak <= memory_budget, status=status,
            in_specs=tuple(per_node[n][choice[n]].out_specs[0] for n in inputs),
        ))
    return tuple(out)

