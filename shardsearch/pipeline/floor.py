"""The least step time any pipeline of a step could have: the stage search's early exit.

Pricing stages costs many intra-op solves (every layer unit on every submesh, for every
M), so ``choose.py`` first asks whether any pipeline could be ``MIN_GAIN`` faster than
the plan over the whole mesh, from each operator's roofline alone (the cost model's
``compute_time`` of its replicated strategy, as the planner prices it):

    floor(M) = A + (M - 1) * B
    A = sum_micro t(M * D) + sum_once t(D) / M   (the pipeline's sum over stages)
    B = (sum_micro t(M) + sum_once t(1) / M) / D (its slowest stage, at best)

``t(x)`` is an operator's time with its work divided ``x`` ways; "micro" operators run
once per microbatch, "once" operators once per step. Why it is a floor of the stage DP's
``sum t_s + (M - 1) max t_s``: an operator on stage ``s`` of ``k_s <= D`` devices runs at
best ``M * k_s`` ways divided per microbatch, so ``t_s`` is at least its operators'
``t(M * k_s) >= t(M * D)``; and device-time does not shrink when work is split (a matmul
split finer runs at a lower efficiency, its bytes divide at best evenly), so
``sum_s k_s t_s >= sum_micro t(M) + sum_once t(1) / M`` and ``max_s t_s`` is at least
that over ``D``. Transfers and communication inside stages only add to it. A matmul that
XLA's GPU DotMerger runs with ``k - 1`` others (``costs.dot_merge``) counts as ``1/k`` of
the merged one at every split, as the planner prices it (at most its own time). On small
models the first term is what declines: every microbatch pays each small operator's
fixed cost again. Numpy and the cost model only; one pass over the graph's operators.
"""

from __future__ import annotations

import numpy as np

from cost_model import Cluster, MeshShape, compute_time
from shardsearch.graph import NodeKind, OpGraph
from shardsearch.pipeline.states import Phase


def operator_times(graph: OpGraph, cluster: Cluster):
    """Per operator: (node, flops, dtype, matmul, bytes time, trips, merged dots) of its replicated
    strategy, whole batch, one device, as ``costs.build.node_costs`` prices it (fusion
    included), from the strategies on a one-device mesh (the fewest to list)."""
    from shardsearch.costs.build import MATMULS, compute_dtype, node_costs
    from shardsearch.costs.dot_merge import merged_dots
    from shardsearch.strategies.per_node import graph_strategies

    mesh = MeshShape(("one",), (1,))
    per_node = graph_strategies(graph, mesh).per_node
    firsts: dict[int, list] = {}  # one list per shared strategy list, as node_costs caches by it
    replicated = [firsts.setdefault(id(s), [s[0]]) for s in per_node]
    full = node_costs(graph, replicated, cluster, mesh, 1.0).compute
    merged = merged_dots(graph) if cluster.gpu_target is not None else {}
    out = []
    for n in graph.nodes:
        if n.kind is not NodeKind.OP:
            continue
        s = replicated[n.id][0]
        dtype, matmul = compute_dtype(graph, n), n.primitive in MATMULS
        flop_s = compute_time(cluster, s.flops, 0.0, dtype, matmul=matmul) * n.trips
        whole = float(full[n.id][0])
        out.append((n.id, s.flops, dtype, matmul, whole if whole > flop_s * (1 + 1e-9) else 0.0, n.trips,
                    merged.get(n.id, 1) if matmul else 1))
    return out


def _time(cluster: Cluster, op, ways: float) -> float:
    _, flops, dtype, matmul, bytes_s, trips, k = op
    flop_s = compute_time(cluster, k * flops / ways, 0.0, dtype, matmul=matmul) / k
    return max(flop_s * trips, bytes_s / ways)


def pipeline_floor(graph: OpGraph, phases, cluster: Cluster, mesh: MeshShape, counts) -> float:
    """The least ``floor(M)`` over the microbatch counts ``counts`` on ``mesh.size``
    devices (see the module notes); ``phases``: per node, its ``Phase``
    (``MicrobatchSplit.phases``)."""
    ops = operator_times(graph, cluster)
    d = mesh.size
    micro = [op for op in ops if phases[op[0]] in (Phase.MICRO, Phase.ACCUM)]
    once = [op for op in ops if phases[op[0]] not in (Phase.MICRO, Phase.ACCUM)]
    once_d = sum(_time(cluster, op, d) for op in once)
    once_1 = sum(_time(cluster, op, 1) for op in once)
    best = np.inf
    for m in counts:
        a = sum(_time(cluster, op, m * d) for op in micro) + once_d / m
        b = (sum(_time(cluster, op, m) for op in micro) + once_1 / m) / d
        best = min(best, a + (m - 1) * b)
    return float(best)
