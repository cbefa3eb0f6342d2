"""Small matmuls that share an operand run as one (XLA's DotMerger on GPUs).

XLA's GPU compiler merges dots that read the same operand in the same position, with the
same dimension numbers and other operands of one shape, into one dot over the concatenated
other operands (``dot(a, b), dot(a, c)`` -> ``dot(a, concat(b, c))`` and two slices), when
a dot's operands and result are under its threshold (32 MB per device,
``xla_gpu_dot_merger_threshold_mb``): a layer's Q, K and V projections of one input, and in
the backward pass their three weight gradients. A matmul on the cluster's efficiency curve
pays a fixed launch and tile set-up, which the merged dot pays once: gpt-tiny has 53
dot_general operators and its GPU program 45 dots. A member of a group of k is priced as
1/k of the merged dot (``merged_time``).
"""

from __future__ import annotations

import collections

from cost_model import Cluster, compute_time
from shardsearch.graph import NodeKind, OpGraph, ValueRef

# xla_gpu_dot_merger_threshold_mb's default: a dot whose operands and result exceed it
# (bytes per device) is left alone.
THRESHOLD_BYTES = 32 * 1024 * 1024


def merged_dots(graph: OpGraph) -> dict[int, int]:
    """dot_general node -> the number of dots merged with it (itself included), for the
    nodes of groups of two or more. Computed once per graph (shared: do not mutate)."""
    return graph.analysis("merged_dots", lambda: _merged_dots(graph))


def merged_time(cluster: Cluster, flops: float, nbytes: float, dtype, k: int) -> float:
    """Seconds of one of ``k`` merged matmuls of ``flops`` and ``nbytes`` per device each:
    1/k of the merged dot, unless the dot is over the merger's threshold (left alone)."""
    if k <= 1 or nbytes > THRESHOLD_BYTES:
        return compute_time(cluster, flops, nbytes, dtype, matmul=True)
    return compute_time(cluster, k * flops, k * nbytes, dtype, matmul=True) / k


def _merged_dots(graph: OpGraph) -> dict[int, int]:
    groups: dict = collections.defaultdict(list)
    for node in graph.nodes:
        if node.kind is not NodeKind.OP or node.primitive != "dot_general" or len(node.inputs) != 2:
            continue
        dims = repr(node.params.get("dimension_numbers"))
        for j, ref in enumerate(node.inputs):
            other = node.inputs[1 - j]
            if isinstance(ref, ValueRef) and isinstance(other, ValueRef):
                info = graph.info(other)
                key = (ref.node, ref.index, j, dims, tuple(info.shape), str(info.dtype), node.trips)
                groups[key].append(node.id)
    out: dict[int, int] = {}
    users = graph.users()
    for members in groups.values():
        for part in _independent_parts(users, members) if len(members) > 1 else ():
            for n in part:
                out[n] = max(out.get(n, 1), len(part))
    return out


def _reached(users, start: int, last: int) -> set[int]:
    """Nodes ``start`` reaches, up to node id ``last`` (readers come after what they read)."""
    seen, todo = set(), [start]
    while todo:
        for u, _ in users[todo.pop()]:
            if u <= last and u not in seen:
                seen.add(u)
                todo.append(u)
    return seen


def _independent_parts(users, members: list[int]) -> list[list[int]]:
    """``members`` split greedily, in order, into groups of two or more none of which
    reads another's result (XLA merges only independent dots: a forward dot and the
    backward one that reads the same weight are not)."""
    last = max(members)
    reach = {m: _reached(users, m, last) for m in members[:-1]}
    parts: list[list[int]] = []
    for m in members:
        for part in parts:
            if all(m not in reach.get(p, ()) for p in part):
                part.append(m)
                break
        else:
            parts.append([m])
    return [p for p in parts if len(p) > 1]
