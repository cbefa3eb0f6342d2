"""Collectives off the critical path priced by what they leave exposed (GPU clusters).

On a cluster whose collectives run asynchronously (``Cluster.overlap_contention``), an
operator none of whose results feeds a matmul or another heavy operator
(``build.off_critical_path``: a weight gradient's reduction, which only the optimizer's
elementwise update reads) can have its collectives run under the compute that follows it:
the rest of the backward pass. Each such operator's communication is priced by
``cost_model.overlap.exposed_time`` with the compute after it in program order as its
window, every later operator at its cheapest strategy (the plan is not known while
pricing; the cheapest is the split one a data-parallel plan runs). Inside a loop body the
window is the rest of that iteration. Collectives queue on the network one at a time,
which a per-operator window does not see; the benchmarks' replay of the compiled program
does, and the fidelity table shows the difference.

XLA's combiner merges the independent gradient all-reduces, in program order, into
buckets of up to ``COMBINE_THRESHOLD_BYTES`` (its GPU default), and a bucket is issued once
its last member is ready (the memory model holds the same buckets' gradients live until
then, ``memory/combine.py``): an all-reduce hides only under the compute after its bucket's
last member. A step whose gradients fit one bucket all-reduces them once at the end of the
backward pass, with nothing left to hide under (compiled for A100s: Mixtral-style test
model, data parallel, one 339 KB all-reduce fully exposed, where each member priced under
the rest of the backward had hidden 24 of its 29 us; an MLP's 6 x 8 MB bf16 gradients are
two all-reduces of 24 MB, its 4 x 32 MB ones four).

Only a collective's bandwidth time hides: its launch latency (the handshake every member
must reach, the small one-shot kernels XLA issues on the compute stream) is paid in full,
so a tiny collective is never worth taking on for a sliver of compute. A plan that does
not fit the device's memory is planned again without overlap (``search.plan_graph``):
XLA's scheduler keeps a step within the device's memory and gives up overlap first (seen
compiling such a step for A100s: no collective was left asynchronous).
"""

from __future__ import annotations

import numpy as np

from cost_model import Cluster, CollectiveKind, MeshShape, collective_cost
from cost_model.overlap import exposed_time
from shardsearch.graph import OpGraph
from shardsearch.memory.combine import COMBINE_THRESHOLD_BYTES
from shardsearch.strategies import Strategy


def later_compute(graph: OpGraph, compute: list[np.ndarray]) -> np.ndarray:
    """Per node, seconds of compute after it that it can hide under: for a node run once,
    every later node's (each at its cheapest strategy, loops with all their iterations);
    for a node in a loop body, the rest of its iteration."""
    least = np.array([float(np.min(c)) if len(c) else 0.0 for c in compute])
    trips = np.array([max(n.trips, 1) for n in graph.nodes])
    window = np.zeros(len(least))
    after_all, after_run = 0.0, 0.0
    for i in range(len(least) - 1, -1, -1):
        in_loop = trips[i] > 1
        same_run = i + 1 < len(least) and trips[i + 1] == trips[i]
        after_run = after_run if same_run else 0.0
        window[i] = after_run / trips[i] if in_loop else after_all
        after_all += least[i]
        after_run += least[i]
    return window


def all_reduce_bytes(options: list[Strategy], memo: dict) -> np.ndarray:
    """Bytes each strategy all-reduces (repeated layers share their lists: one row each)."""
    if id(options) not in memo:
        memo[id(options)] = np.array([sum(c.nbytes for c in s.collectives if c.kind is CollectiveKind.ALL_REDUCE)
                                      for s in options], dtype=float)
    return memo[id(options)]


def bucket_windows(graph: OpGraph, strategies: list[list[Strategy]], async_nodes: set[int],
                   window: np.ndarray, memo: dict) -> dict[int, float]:
    """Per async node run once that may all-reduce: the window of its bucket's last member
    (buckets filled in program order, each member at its largest all-reduce)."""
    out: dict[int, float] = {}
    bucket: list[int] = []
    filled = 0.0

    def close():
        for i in bucket:
            out[i] = float(window[bucket[-1]])

    for i in sorted(async_nodes):
        if graph.nodes[i].trips > 1:
            continue  # inside a loop: the rest of its iteration, as before
        nbytes = float(all_reduce_bytes(strategies[i], memo).max(initial=0.0))
        if nbytes <= 0:
            continue
        if bucket and filled + nbytes > COMBINE_THRESHOLD_BYTES:
            close()
            bucket, filled = [], 0.0
        bucket.append(i)
        filled += nbytes
    if bucket:
        close()
    return out


def exposed_comm(graph: OpGraph, strategies: list[list[Strategy]], cluster: Cluster, mesh: MeshShape,
                 async_nodes: set[int], compute: list[np.ndarray], comm: list[np.ndarray]) -> list[np.ndarray]:
    """``comm`` with each of ``async_nodes`` priced by what its collectives leave exposed:
    their launch latency in full, their bandwidth time by ``exposed_time``."""
    window = later_compute(graph, compute)
    memo: dict = {}
    bucketed = bucket_windows(graph, strategies, async_nodes, window, memo)
    no_latency = cluster.with_latency_share(0.0)
    out, seen = list(comm), {}  # repeated layers share their strategy lists
    for i in sorted(async_nodes):
        if np.any(comm[i] > 0):
            trips = max(graph.nodes[i].trips, 1)
            if id(strategies[i]) not in seen:
                seen[id(strategies[i])] = np.array([sum(collective_cost(no_latency, mesh, c) for c in s.collectives)
                                                    for s in strategies[i]])
            bandwidth = seen[id(strategies[i])] * trips
            # a strategy that all-reduces waits for its bucket; one that does not, only for itself
            windows = np.where(all_reduce_bytes(strategies[i], memo) > 0, bucketed.get(i, window[i]), window[i])
            hidden = exposed_time(bandwidth / trips, windows, cluster.overlap_contention) * trips
            out[i] = comm[i] - bandwidth + hidden
    return out

