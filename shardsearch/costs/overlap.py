"""Collectives off the critical path priced by what they leave exposed (GPU clusters).

On a cluster whose collectives run asynchronously (``Cluster.overlap_contention``), an
operator none of whose results feeds a matmul or another heavy operator
(``build.off_critical_path``: a weight gradient's reduction, which only the optimizer's
elementwise update reads) can have its collectives run under the compute that follows it:
the rest of the backward pass. Each such operator's communication is priced by
``cost_model.overlap.exposed_time`` with the compute after it in program order as its
window, every later operator at its cheapest strategy (the plan is not known while
pricing; the cheapest is the split one a data-parallel plan runs). Inside a loop body the
window is the rest of that iteration.

Collectives queue on the network one at a time (``queue_windows``): a gradient bucket
issued while earlier ones still hold the links starts when they end, and hides only under
the compute left after it starts. Each operator's window is cut by that wait, with every
async operator at its cheapest-compute strategy's collectives (the same reference as the
windows). Without the queue each bucket hid under the whole rest of the backward pass, so
together they hid more than the backward computes: GPT at 350M widths (f32, 8 layers)
on 2x4-slow, data parallel, 60 ms of gradient all-reduces across the 25 Gb/s link under
~30 ms of backward were priced at 13 ms exposed (the program compiled for A100s, replayed:
59 ms exposed).

XLA's latency-hiding scheduler sizes the compute it puts under a collective by its own
estimate of the collective, which does not know a slow inter-node link: a collective hides
at most its time at the intra-node figures (``as_one_node``); past that its done waits
with the compute stalled, and it holds the links ahead of the compute only that long (the
queue advances by the hidden part). Compiled for the clusters' GPUs and replayed: h100-2x8-ib
data-parallel gradient all-reduces (61% of their time inside the node) hide 62-71%; on
2x4-slow (6% inside) gpt-350M-8L's hide 1%, gpt-1.3B-8L's 15%; all within one node, 83%.

XLA's combiner merges the independent gradient all-reduces, in program order, into
buckets of up to ``COMBINE_THRESHOLD_BYTES`` (its GPU default), and a bucket is issued once
its last member is ready (the memory model holds the same buckets' gradients live until
then, ``memory/combine.py``): an all-reduce hides only under the compute after its bucket's
last member. A step whose gradients fit one bucket all-reduces them once at the end of the
backward pass, with nothing left to hide under (compiled for A100s: Mixtral-style test
model, data parallel, one 339 KB all-reduce fully exposed, where each member priced under
the rest of the backward had hidden 24 of its 29 us; an MLP's 6 x 8 MB bf16 gradients are
two all-reduces of 24 MB, its 4 x 32 MB ones four).

An argument's resharding (FSDP's all-gather of a parameter) waits on nothing the step
computes: XLA's latency-hiding scheduler can start it anywhere before its reader, so its
bandwidth time hides under the compute before the reader (``costs.gathers``; compiled for
8 x H100, gpt-medium-bf16 with FSDP pinned: 4.0 ms of gathers and reduce-scatters, 0.80 ms
exposed, most of it the contention; priced in full, the plan was predicted 33% slow).
XLA starts the first layer's gathers at the top of the program with nothing to hide under,
and the window says so.

Only a collective's bandwidth time hides: its launch latency (the handshake every member
must reach, the small one-shot kernels XLA issues on the compute stream) is paid in full,
so a tiny collective is never worth taking on for a sliver of compute. A plan that does
not fit the device's memory is planned again without overlap (``search.plan_graph``):
XLA's scheduler keeps a step within the device's memory and gives up overlap first (seen
compiling such a step for A100s: no collective was left asynchronous).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cost_model import Cluster, CollectiveKind, MeshShape, collective_cost
from cost_model.overlap import exposed_time
from shardsearch.graph import NodeKind, OpGraph, ValueRef
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


def earlier_compute(graph: OpGraph, compute: list[np.ndarray]) -> np.ndarray:
    """Per node, seconds of compute before it in program order (every node at its cheapest
    strategy, loops with all their iterations): what a value ready at the step's start can
    be moved under before this node reads it."""
    least = np.array([float(np.min(c)) if len(c) else 0.0 for c in compute])
    return np.concatenate(([0.0], np.cumsum(least)[:-1])) if len(least) else least


def ready_at_start(graph: OpGraph, heavy: frozenset[str], carried: set[int]) -> set[int]:
    """Nodes whose values come from the carried state (``carried``: flat indices of the
    arguments whose next value the step returns: parameters, optimizer state) and constants
    through light operators alone (a cast, a transpose, a scaled moment; no matmul, gather,
    loop, ... of ``heavy``): their resharding can run from the step's first instruction.
    Not what comes from the batch: XLA leaves a reshard of a batch-sized value (a one-hot
    of the labels, compiled for two H100 nodes: a 105 MB all-to-all) next to its reader."""
    ready = {n for a, n in enumerate(graph.input_nodes) if a in carried}
    for node in graph.nodes:
        if node.kind is NodeKind.CONST or node.kind is NodeKind.OP and node.trips <= 1 and \
                node.primitive not in heavy and all(r.node in ready for r in node.inputs if isinstance(r, ValueRef)):
            ready.add(node.id)
    return ready


# XLA's kDefaultAllReduceCombineThreshold (xla/service/collective_utils.h).
COMBINE_THRESHOLD_BYTES = 30 * 1024 * 1024 + 7


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


def as_one_node(cluster: Cluster) -> Cluster:
    """``cluster`` with its inter-node links (shared and fitted per kind) at the intra-node
    figures: what a collective takes as XLA's scheduler estimates it."""
    inside = {kind: link for kind, scope, link in cluster.collectives if scope == "intra_node"}
    return dataclasses.replace(cluster, inter_node=cluster.intra_node, collectives=tuple(
        (kind, scope, inside.get(kind, cluster.intra_node) if scope == "inter_node" else link)
        for kind, scope, link in cluster.collectives))


def _reference(compute: np.ndarray, bandwidth: np.ndarray) -> int:
    """The strategy of least compute (within 1%) that communicates most."""
    least = compute <= float(np.min(compute)) * 1.01
    return int(np.argmax(np.where(least, bandwidth, -1.0)))


def queue_windows(ready_window: dict[int, float], comm_s: dict[int, float]) -> dict[int, float]:
    """Per collective (node -> its window: compute left after it is ready; ``comm_s``: its
    seconds on the links), the compute left after it *starts* when collectives run one at
    a time in the order they become ready (most compute left first; ties in node order):
    its window less the time it waits for the ones before it, at least 0."""
    out: dict[int, float] = {}
    total = max(ready_window.values(), default=0.0)  # ready = total - window: the first at 0
    free = 0.0  # when the links are free
    for i in sorted(ready_window, key=lambda n: (-ready_window[n], n)):
        ready = total - ready_window[i]
        start = max(ready, free)
        out[i] = max(ready_window[i] - (start - ready), 0.0)
        free = start + comm_s.get(i, 0.0)
    return out


def exposed_comm(graph: OpGraph, strategies: list[list[Strategy]], cluster: Cluster, mesh: MeshShape,
                 async_nodes: set[int], compute: list[np.ndarray], comm: list[np.ndarray]) -> list[np.ndarray]:
    """``comm`` with each of ``async_nodes`` priced by what its collectives leave exposed:
    their launch latency in full, their bandwidth time by ``exposed_time`` under the
    window left once the collectives issued before it are through (``queue_windows``)."""
    window = later_compute(graph, compute)
    memo: dict = {}
    bucketed = bucket_windows(graph, strategies, async_nodes, window, memo)
    no_latency = cluster.with_latency_share(0.0)
    inside = as_one_node(no_latency)
    seen: dict = {}  # repeated layers share their strategy lists
    priced = []  # (node, bandwidth seconds per strategy and run, what of it can hide, window per strategy)
    for i in sorted(async_nodes):
        if np.any(comm[i] > 0):
            if id(strategies[i]) not in seen:
                seen[id(strategies[i])] = tuple(np.array([sum(collective_cost(c_, mesh, c) for c in s.collectives)
                                                          for s in strategies[i]]) for c_ in (no_latency, inside))
            # a strategy that all-reduces waits for its bucket; one that does not, only for itself
            windows = np.where(all_reduce_bytes(strategies[i], memo) > 0, bucketed.get(i, window[i]), window[i])
            bandwidth, estimate = seen[id(strategies[i])]
            priced.append((i, bandwidth, np.minimum(bandwidth, estimate), windows))
    # the queue, each operator at its least-compute strategy (the windows' reference), the
    # one that communicates most of those: a weight gradient's split strategies compute
    # alike, and the data-parallel one all-reduces (the others move its operands on edges).
    # An operator in a loop keeps its iteration's window.
    ref = {i: _reference(compute[i], bw) for i, bw, _, _ in priced if graph.nodes[i].trips <= 1}
    started = queue_windows({i: float(w[ref[i]]) for i, _, _, w in priced if i in ref},
                            {i: float(h[ref[i]]) for i, _, h, _ in priced if i in ref})
    out = list(comm)
    for i, bandwidth, hideable, windows in priced:
        trips = max(graph.nodes[i].trips, 1)
        if i in ref:  # every strategy waits as long as the reference one does
            windows = np.maximum(windows - (windows[ref[i]] - started[i]), 0.0)
        hidden = exposed_time(bandwidth, np.minimum(windows, hideable), cluster.overlap_contention) * trips
        out[i] = comm[i] - bandwidth * trips + hidden
    return out
