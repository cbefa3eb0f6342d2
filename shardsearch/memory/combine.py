"""Which all-reduces of a planned step XLA combines, as memory sees them.

XLA's all-reduce combiner merges independent all-reduces (data parallelism's gradient
all-reduces: a weight gradient flows only into the optimizer's elementwise update) into
buckets of up to ``COMBINE_THRESHOLD_BYTES``, in program order, and runs each bucket once
its last member is made. For memory this means: every gradient of a bucket stays live,
unreduced, until the bucket's last gradient is made, and its reduced copy is written
then, so a bucket's gradients and their reduced copies are all live together (CPU: one
tuple all-reduce; GPU: a concatenation all-reduced as one buffer and sliced back). A
6-layer 512-wide Adam MLP, data parallel over 2 of a (2, 4) mesh, params donated: 12 MiB
of temporaries compiled, twice its 6 MiB of gradients.

The time model prices the same buckets (``costs/overlap.py``: a bucket's all-reduce hides
only under the compute after its last member); both take them from here.

Which node all-reduces is read from the layouts alone: a contraction (``dot_general``)
or a sum over a dim split over mesh axes that its result is not split over leaves
partial sums that are all-reduced over those axes (``strategies/dot.py``, ``reduce.py``).
One whose result is split over those axes reduce-scatters them (FSDP's weight gradients,
``reduce_scattered``). The GPU compiler's reduce-scatter combiner buckets those the same
way, by the bytes of their results (the shards): compiled for 8 H100s, a 4-layer GPT with
FSDP reduce-scatters its 69 gradients (50 MiB unreduced, 6.3 MiB of shards) in one, so
every gradient is held unreduced, whole, until the backward's last one is made.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from cost_model.mesh import MeshShape, Spec, local_bytes
from shardsearch.graph import NodeKind, OpGraph, ValueRef

# XLA's kDefaultAllReduceCombineThreshold (xla/service/collective_utils.h).
COMBINE_THRESHOLD_BYTES = 30 * 1024 * 1024 + 7

# Work that waits on its operands: a collective feeding one of these is on the critical path.
HEAVY = frozenset({"dot_general", "conv_general_dilated", "gather", "scatter-add", "scan", "while", "cond"})

# Sums only: the combiner merges all-reduces of one reduction (gradients are sums).
_SUMS = frozenset({"reduce_sum"})


def off_critical_path(graph: OpGraph) -> set[int]:
    """Operators from which no heavy operator (a matmul, a conv, ...) can be reached.

    Their all-reduces (data parallelism's gradient all-reduces, typically: a weight
    gradient flows only into the optimizer's elementwise update and reductions) are
    independent of each other, and XLA's combiner merges them into a few big ones:
    they pay bandwidth, not one launch latency each. A collective whose result feeds
    more matmuls (an activation all-reduce of Megatron) is on the critical path and
    pays its latency. Computed once per graph (shared: do not mutate).
    """
    return graph.analysis("off_critical_path", lambda: _off_critical_path(graph))


def _off_critical_path(graph: OpGraph) -> set[int]:
    users = graph.users()
    feeds_heavy: set[int] = set()
    for node in reversed(graph.nodes):
        if any(graph.nodes[u].primitive in HEAVY or u in feeds_heavy for u, _ in users[node.id]):
            feeds_heavy.add(node.id)
    return {n.id for n in graph.nodes if n.kind is NodeKind.OP and n.id not in feeds_heavy}


def _summed_axes(graph: OpGraph, node, read: Sequence[Spec | None]) -> set[str]:
    """Mesh axes ``node`` sums over, given the layouts it reads."""
    if node.primitive == "dot_general" and read and read[0] is not None:
        (lc, _), _ = node.params["dimension_numbers"]
        return {a for d in lc for a in read[0][d]}
    if node.primitive in _SUMS and read and read[0] is not None:
        rank = max(len(read[0]), 1)
        return {a for d in node.params.get("axes", ()) for a in read[0][int(d) % rank]}
    return set()


def all_reduced(graph: OpGraph, in_specs: Sequence[Spec], node_out_specs: Mapping[int, Sequence[Spec]],
                mesh: MeshShape, node_operand_specs: Mapping[int, Mapping[int, Spec]] | None = None
                ) -> dict[int, float]:
    """Per operator that all-reduces its result: the bytes per device it all-reduces."""
    return reductions(graph, in_specs, node_out_specs, mesh, node_operand_specs)[0]


def reduce_scattered(graph: OpGraph, in_specs: Sequence[Spec], node_out_specs: Mapping[int, Sequence[Spec]],
                     mesh: MeshShape, node_operand_specs: Mapping[int, Mapping[int, Spec]] | None = None
                     ) -> dict[int, tuple[float, float]]:
    """Per operator that reduce-scatters its result: (its result's bytes per device, the
    partial sums it holds before: the result unsplit over the summed axes)."""
    return reductions(graph, in_specs, node_out_specs, mesh, node_operand_specs)[1]


def reductions(graph: OpGraph, in_specs: Sequence[Spec], node_out_specs: Mapping[int, Sequence[Spec]],
               mesh: MeshShape, node_operand_specs: Mapping[int, Mapping[int, Spec]] | None = None
               ) -> tuple[dict[int, float], dict[int, tuple[float, float]]]:
    """``all_reduced`` and ``reduce_scattered`` in one pass over the graph."""
    arg_of = {n: i for i, n in enumerate(graph.input_nodes)}
    operand_specs = node_operand_specs or {}

    def spec_of(ref: ValueRef) -> Spec | None:
        if ref.node in arg_of:
            return in_specs[arg_of[ref.node]]
        specs = node_out_specs.get(ref.node)
        return specs[ref.index] if specs is not None else None

    reduced: dict[int, float] = {}
    scattered: dict[int, tuple[float, float]] = {}
    for n in graph.nodes:
        if n.kind is not NodeKind.OP or (n.primitive != "dot_general" and n.primitive not in _SUMS):
            continue
        wanted = operand_specs.get(n.id, {})
        read = [wanted.get(j, spec_of(r)) if isinstance(r, ValueRef) else None for j, r in enumerate(n.inputs)]
        summed = _summed_axes(graph, n, read)
        if not summed:
            continue
        specs = node_out_specs.get(n.id)
        info = n.outputs[0]
        spec = (specs[0] if specs is not None else None) or ((),) * len(info.shape)
        on_result = {a for d in spec for a in d}
        nbytes = local_bytes(info.shape, info.dtype.itemsize, spec, mesh)
        if _over_devices(summed - on_result, mesh):
            reduced[n.id] = nbytes
        scatter = summed & on_result
        if _over_devices(scatter, mesh):
            whole = tuple(tuple(a for a in d if a not in scatter) for d in spec)
            scattered[n.id] = (nbytes, local_bytes(info.shape, info.dtype.itemsize, whole, mesh))
    return reduced, scattered


def _over_devices(axes: set[str], mesh: MeshShape) -> bool:
    return bool(axes) and mesh.group_size(tuple(a for a in mesh.axis_names if a in axes)) > 1


def buckets_of(graph: OpGraph, nbytes: Mapping[int, float]) -> list[tuple[int, ...]]:
    """The combiner's buckets of the operators ``nbytes`` names (node -> bytes each
    all-reduces): those off the critical path and run once per step, in program order,
    each bucket up to ``COMBINE_THRESHOLD_BYTES``. Buckets of one member are left out."""
    in_regions = {m for r in graph.loops + graph.whiles + graph.conds for m in r.members}
    off = off_critical_path(graph)
    out: list[tuple[int, ...]] = []
    bucket: list[int] = []
    filled = 0.0
    for i in sorted(nbytes):
        if i not in off or i in in_regions or graph.nodes[i].trips > 1 or nbytes[i] <= 0:
            continue
        if bucket and filled + nbytes[i] > COMBINE_THRESHOLD_BYTES:
            out.append(tuple(bucket))
            bucket, filled = [], 0.0
        bucket.append(i)
        filled += nbytes[i]
    out.append(tuple(bucket))
    return [b for b in out if len(b) > 1]


def combined_buckets(graph: OpGraph, in_specs: Sequence[Spec], node_out_specs: Mapping[int, Sequence[Spec]],
                     mesh: MeshShape, node_operand_specs: Mapping[int, Mapping[int, Spec]] | None = None
                     ) -> list[tuple[int, ...]]:
    """The gradient all-reduce buckets of a step run with these layouts (``buckets_of``),
    then its reduce-scatter buckets (by their results' bytes)."""
    return buckets_and_scatters(graph, *reductions(graph, in_specs, node_out_specs, mesh, node_operand_specs))[0]


def buckets_and_scatters(graph: OpGraph, reduced: Mapping[int, float],
                         scattered: Mapping[int, tuple[float, float]]) -> tuple[list[tuple[int, ...]], dict[int, float]]:
    """``combined_buckets`` from ``reductions``, and per reduce-scattering operator the
    bytes of its partial sums."""
    buckets = buckets_of(graph, reduced) + buckets_of(graph, {n: result for n, (result, _) in scattered.items()})
    return buckets, {n: whole for n, (_, whole) in scattered.items()}
