"""What the replicated fallback costs a plan, and when to say so out loud.

An operator with no strategy rule runs replicated: its operands are gathered whole onto
every device and its results sliced back to whatever layout the consumers want. The
plan pays for that on the operator's edges (the resharding into and out of the
replicated layout) and in its compute (every device does all of it). Their sum is what
a rule that let the operator follow its neighbours' layouts would save at most.

That direct price understates the harm when the solver works around the operator (its
neighbours stay replicated too, to spare the resharding). So the plan's saving is priced
by solving once more with the operators relaxed: their edges free and their compute split
over the mesh, the best any rule could do (``Predicted.fallback_saving_s``).

Fallbacks are *costly* when that saving is at least COSTLY_FRACTION of the predicted
step: ``plan.summary()`` then puts the ones that move tensors at the top, and the search
warns once per plan, at the user's line (progress.warn_user).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Callable

import numpy as np

from cost_model import MeshShape
from shardsearch.graph import NodeKind, OpGraph, ValueRef
from shardsearch.plan_records import FallbackOp
from shardsearch.solve.evaluate import evaluate
from shardsearch.solve.problem import Problem, Solution
from shardsearch.reporting.format import fmt_bytes, fmt_s

COSTLY_FRACTION = 0.01  # of the predicted step

FALLBACK_WARNING = (
    "shardsearch: {n} operator(s) with no strategy rule stay replicated, moving {moved} between layouts; "
    "strategy rules for them would save up to {saving} per step ({share:.0%} of the predicted {total}):\n"
    "{rows}\nplan.summary() lists them; please report the primitive(s) to shardsearch "
    "(shardsearch/strategies/ is where rules live)."
)


def _bytes(info) -> float:
    return float(math.prod(info.shape) * info.dtype.itemsize)


def _edge_tensors(graph: OpGraph, u: int, v: int) -> float:
    """Whole bytes of the outputs of ``u`` that ``v`` reads (those an edge reshards)."""
    node = graph.nodes[v]
    if node.kind is NodeKind.OP:
        refs = {(r.node, r.index) for r in node.inputs if isinstance(r, ValueRef) and r.node == u}
    else:  # a result returned in its argument's layout
        refs = {(r.node, r.index) for r in graph.outputs if isinstance(r, ValueRef) and r.node == u}
    return sum(_bytes(graph.nodes[n].outputs[i]) for n, i in refs)


def price_fallbacks(graph: OpGraph, fallback, problem, compute, choice, mesh: MeshShape) -> tuple[FallbackOp, ...]:
    """A FallbackOp per node in ``fallback``, with what its replicated layout costs the plan:
    the resharding on its edges, plus the compute a split over the whole mesh would save."""
    seconds: dict[int, float] = defaultdict(float)
    moved: dict[int, float] = defaultdict(float)
    n = len(graph.nodes)  # the Problem's nodes after these are shared copies (costs.copies)
    for e, (u, v) in enumerate(np.asarray(problem.edges).reshape(-1, 2)):
        u, v = int(u), int(v)
        if u >= n or (u not in fallback and v not in fallback):
            continue  # (from a copy node: a penalty no optimal plan pays)
        cost = float(problem.edge_costs[e][choice[u], choice[v]])
        if cost <= 0:
            continue
        for i in {u, v} & fallback:
            seconds[i] += cost
            moved[i] += _edge_tensors(graph, u, v) if v < n else _bytes(graph.nodes[u].outputs[0])
    out = []
    for i in sorted(fallback):
        node = graph.nodes[i]
        spare = float(compute[i][choice[i]]) * (1.0 - 1.0 / max(mesh.size, 1))
        in_shapes = tuple(graph.info(r).shape for r in node.inputs)
        out.append(FallbackOp(i, node.primitive, tuple(o.shape for o in node.outputs), node.label,
                              seconds=seconds[i] + spare, moved_bytes=moved[i], in_shapes=in_shapes))
    return tuple(out)


def relaxed(problem: Problem, nodes, devices: int) -> Problem:
    """``problem`` with ``nodes`` free to take any layout at no cost: their edges cost
    nothing and their own cost is split over the mesh's devices."""
    node_costs = [np.asarray(c) / devices if i in nodes else c for i, c in enumerate(problem.node_costs)]
    edge_costs = [np.zeros_like(c) if int(u) in nodes or int(v) in nodes else c
                  for (u, v), c in zip(np.asarray(problem.edges).reshape(-1, 2), problem.edge_costs)]
    return dataclasses.replace(problem, node_costs=node_costs, edge_costs=edge_costs)


def with_fallback_saving(plan, problem: Problem, choice, solve: Callable[[Problem], Solution]):
    """``plan`` with ``predicted.fallback_saving_s`` priced by a solve of the relaxed problem;
    unchanged (no solve) when no fallback moves data or their direct price is far below
    the costly threshold."""
    nodes = frozenset(f.node for f in plan.fallback if f.moved_bytes > 0)
    direct = sum(f.seconds for f in plan.fallback if f.node in nodes)
    if not nodes or direct < COSTLY_FRACTION * plan.predicted.total_s / 4:
        return plan
    now = evaluate(problem, choice).total
    best = solve(relaxed(problem, nodes, plan.mesh.size))
    saving = max(0.0, now - float(best.objective))
    return dataclasses.replace(plan, predicted=dataclasses.replace(plan.predicted, fallback_saving_s=saving))


def costly_fallbacks(plan) -> tuple[FallbackOp, ...]:
    """When rules would save at least COSTLY_FRACTION of the step: the fallbacks that move
    tensors between layouts, dearest (direct price) first."""
    if plan.predicted.fallback_saving_s < max(COSTLY_FRACTION * plan.predicted.total_s, 1e-12):
        return ()
    hits = [f for f in plan.fallback if f.moved_bytes > 0]
    return tuple(sorted(hits, key=lambda f: (-f.seconds, f.node)))


def _shapes(f: FallbackOp) -> str:
    ins = ", ".join(str(list(s)) for s in f.in_shapes)
    return f"{ins} -> {', '.join(str(list(s)) for s in f.shapes)}"


def fallback_rows(costly: tuple[FallbackOp, ...], limit: int = 8) -> list[str]:
    """One row per primitive and source line: count, direct price, tensors moved, shapes."""
    groups: dict[tuple[str, str], list[FallbackOp]] = defaultdict(list)
    for f in costly:
        groups[(f.primitive, f.label)].append(f)
    ranked = sorted(groups.items(), key=lambda kv: (-sum(f.seconds for f in kv[1]), kv[0]))
    rows = []
    for (prim, label), ops in ranked[:limit]:
        s, b = sum(f.seconds for f in ops), sum(f.moved_bytes for f in ops)
        rows.append(f"  {len(ops):>4} x {prim:<16} {fmt_s(s):>10}  {fmt_bytes(b):>10} moved  "
                    f"e.g. {_shapes(ops[0])}  at {label or '?'}")
    if len(ranked) > limit:
        rows.append(f"  ... {len(ranked) - limit} more (plan.fallback has them all)")
    return rows


def fallback_warning(plan) -> str | None:
    costly = costly_fallbacks(plan)
    if not costly:
        return None
    saving, total = plan.predicted.fallback_saving_s, plan.predicted.total_s
    return FALLBACK_WARNING.format(n=len(costly), saving=fmt_s(saving), share=saving / total if total else 0.0,
                                   total=fmt_s(total), moved=fmt_bytes(sum(f.moved_bytes for f in costly)),
                                   rows="\n".join(fallback_rows(costly)))
