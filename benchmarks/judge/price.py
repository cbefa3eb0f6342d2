"""Price the program XLA compiled on a target cluster.

Compute is one per-device roofline over the whole program, its FLOP side priced per
matmul the way the planner prices an operator (``cost_model.compute_time``):

    compute_s = max(matmul_s + other_s, bytes_accessed / hbm_bandwidth)
    matmul_s  = sum over the dots and convolutions of the optimized HLO (``shardsearch.hlo.compute``)
                of trips_i * flops_i / (peak_flops_for(dtype_i) * matmul_efficiency_at(flops_i))
    other_s   = (flops - matmul_flops) / peak_flops_for(the dtype most non-matmul arithmetic
                is meant in, else float32)
    flops     = cost_analysis FLOPs + the matmul FLOPs of loop iterations it leaves out

so a float32 matmul runs at the float32 peak (TF32 on H100), a bf16 one at the bf16 peak,
and a matmul split too finely pays the small-matmul efficiency curve, as in the plan's
prediction. With no ``peak_flops_by_dtype`` and no ``matmul_efficiency`` this is exactly
``max(flops / peak_flops, bytes / hbm)``, the judge's formula before per-matmul pricing.
The planner sums one roofline per operator (sum of max(flop time, byte time)); the judge
cannot attribute XLA's bytes to operators after fusion, so it takes one max over the
program: for the same work it is at most the planner's sum, equal when every operator
is bound the same way.

Communication is the sum of every collective in the optimized HLO, each priced with the
alpha-beta formulas of ``cost_model.collectives`` (no overlap with compute or with each
other is assumed). Memory is the per-device figure of ``memory_analysis``.

A program compiled for a submesh (a pipeline stage) numbers its devices 0..n-1 in its
groups; ``device_ids`` maps those positions to the cluster's devices (the stage's), so
a group is priced on the nodes it really spans.

Loops: XLA's ``cost_analysis`` counts a while/scan body once. Matmuls inside a loop whose
``known_trip_count`` XLA states are counted every iteration (and added to ``flops``,
reported in ``loop_flops``); non-matmul FLOPs, bytes accessed and collectives of a loop
body are still counted once.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import jax

from benchmarks.judge.hlo import HloCollective, HloCompute, hlo_compute, parse_collectives
from cost_model.cluster import Cluster
from cost_model.collectives import span_collective_time
from cost_model.compute import compute_time
from cost_model.topology import spans_of_groups

_NUM_PARTITIONS = re.compile(r"\bnum_partitions=(\d+)")
_REPLICA_COUNT = re.compile(r"\breplica_count=(\d+)")


@dataclasses.dataclass(frozen=True)
class PricedCollective:
    kind: str
    nbytes: float  # per device, cost_model.collectives byte conventions
    group_size: int
    crosses_nodes: bool
    seconds: float


@dataclasses.dataclass(frozen=True)
class Judged:
    compute_s: float
    comm_s: float
    memory_bytes: float  # per device
    flops: float  # per device
    bytes_accessed: float  # per device
    num_devices: int
    collectives: tuple[PricedCollective, ...]
    matmul_flops: float = 0.0  # per device, loop trips included (part of ``flops``)
    matmul_s: float = 0.0  # the matmuls at their dtype's peak and size's efficiency
    other_s: float = 0.0  # the remaining FLOPs at the peak of their dtype
    loop_flops: float = 0.0  # matmul FLOPs of loop iterations cost_analysis left out (part of ``flops``)
    other_dtype: str = "float32"
    bytes_s: float = 0.0  # the memory side of the roofline: bytes_accessed / hbm_bandwidth
    # A program compiled for a GPU target (benchmarks.judge.gpu): the replay with overlap,
    # and XLA's own latency-hiding-scheduler estimate. None for a CPU program.
    overlap_s: float | None = None
    exposed_comm_s: float | None = None
    xla_estimate_s: float | None = None

    @property
    def flops_s(self) -> float:
        """The FLOP side of the compute roofline."""
        return self.matmul_s + self.other_s

    @property
    def total_s(self) -> float:
        return self.compute_s + self.comm_s

    @property
    def comm_bytes(self) -> float:
        return sum(c.nbytes for c in self.collectives)

    def by_kind(self) -> dict[str, tuple[int, float, float]]:
        """kind -> (count, bytes, seconds)."""
        out: dict[str, tuple[int, float, float]] = {}
        for c in self.collectives:
            n, b, s = out.get(c.kind, (0, 0.0, 0.0))
            out[c.kind] = (n + 1, b + c.nbytes, s + c.seconds)
        return out


def ideal_s(total_flops: float, num_devices: int, cluster: Cluster) -> float:
    """Seconds if the work split perfectly over the devices at peak, with no communication."""
    return float(total_flops) / (num_devices * cluster.peak_flops)


def _default_num_devices(hlo_text: str, found: list[HloCollective]) -> int:
    """The module header's partitions x replicas, else the largest device id in the groups + 1."""
    m = _NUM_PARTITIONS.search(hlo_text)
    if m:
        r = _REPLICA_COUNT.search(hlo_text)
        return int(m.group(1)) * (int(r.group(1)) if r else 1)
    ids = [d for c in found for g in c.groups(0) for d in g]
    return max(ids, default=0) + 1


def price_collective(c: HloCollective, cluster: Cluster, num_devices: int,
                     device_ids: Sequence[int] | None = None) -> PricedCollective:
    """``device_ids``: the cluster device of each device position in the program (default: itself)."""
    groups = c.groups(num_devices)
    if device_ids is not None:
        groups = [[device_ids[d] for d in g] for g in groups]
    size = max((len(set(g)) for g in groups), default=1)
    crosses = any(len({d // cluster.devices_per_node for d in g}) > 1 for g in groups)
    nbytes = float(c.nbytes) * (size if c.kind == "reduce-scatter" else 1)  # RS: operand bytes
    # priced as the planner prices it: two-level where a group spans nodes, the slowest group
    seconds = max(span_collective_time(cluster, c.kind, s, nbytes)
                  for s in spans_of_groups(groups, cluster.devices_per_node))
    return PricedCollective(c.kind, nbytes, size, crosses, seconds)


def judge_text(hlo_text: str, cluster: Cluster, *, num_devices: int | None = None, flops: float = 0.0,
               bytes_accessed: float = 0.0, memory_bytes: float = 0.0,
               device_ids: Sequence[int] | None = None) -> Judged:
    """Price optimized HLO text, given the per-device figures XLA reported for it
    (``flops`` as ``cost_analysis`` counts them: a loop body once)."""
    found = parse_collectives(hlo_text)
    if num_devices is None:
        num_devices = len(device_ids) if device_ids is not None else _default_num_devices(hlo_text, found)
    priced = tuple(p for p in (price_collective(c, cluster, num_devices, device_ids) for c in found)
                   if p.group_size > 1)
    compute = hlo_compute(hlo_text)
    total = max(float(flops) + compute.uncounted_loop_flops, compute.matmul_flops)
    matmul_s, other_dtype = matmul_seconds(compute, cluster), compute.other_dtype or "float32"
    other_s = compute_time(cluster, total - compute.matmul_flops, 0.0, other_dtype)
    bytes_s = compute_time(cluster, 0.0, bytes_accessed)
    return Judged(
        compute_s=max(matmul_s + other_s, bytes_s),
        comm_s=sum(p.seconds for p in priced),
        memory_bytes=float(memory_bytes),
        flops=total,
        bytes_accessed=float(bytes_accessed),
        num_devices=num_devices,
        collectives=priced,
        matmul_flops=compute.matmul_flops,
        matmul_s=matmul_s,
        other_s=other_s,
        loop_flops=compute.uncounted_loop_flops,
        other_dtype=other_dtype,
        bytes_s=bytes_s,
    )


def matmul_seconds(compute: HloCompute, cluster: Cluster) -> float:
    """Each matmul as the planner prices one: its dtype's peak times the efficiency of its size."""
    return sum(m.trips * compute_time(cluster, m.flops, 0.0, m.dtype, matmul=True) for m in compute.matmuls)


def _cost(compiled) -> dict:
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):  # older jax: one dict per program
        ca = ca[0] if ca else {}
    return ca or {}


def _memory(compiled) -> float:
    m = compiled.memory_analysis()
    if m is None:
        return 0.0
    return float(m.argument_size_in_bytes + m.output_size_in_bytes
                 + m.temp_size_in_bytes - m.alias_size_in_bytes)


def judge(compiled: jax.stages.Compiled, cluster: Cluster, *, num_devices: int | None = None,
          device_ids: Sequence[int] | None = None) -> Judged:
    """Price a compiled SPMD program: FLOPs are per device as XLA reports them.
    ``device_ids``: the cluster devices the program runs on, in its device order (a stage's)."""
    if device_ids is not None:
        num_devices = len(device_ids)
    if num_devices is None:
        counts = [getattr(s, "num_devices", 0) for s in jax.tree.leaves(compiled.input_shardings)]
        num_devices = max(counts, default=0) or None
    ca = _cost(compiled)
    return judge_text(compiled.as_text(), cluster, num_devices=num_devices,
                      flops=float(ca.get("flops", 0.0)), bytes_accessed=float(ca.get("bytes accessed", 0.0)),
                      memory_bytes=_memory(compiled), device_ids=device_ids)
