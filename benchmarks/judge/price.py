"""Price the program XLA compiled on a target cluster.

Compute is a per-device roofline over ``cost_analysis`` (FLOPs and bytes accessed);
communication is the sum of every collective in the optimized HLO, each priced with
the alpha-beta formulas of ``cost_model.collectives`` (no overlap with compute or
with each other is assumed). Memory is the per-device figure of ``memory_analysis``.

Limitations: XLA's ``cost_analysis`` counts a while/scan body once, not once per
iteration, so FLOPs (and bytes accessed) of scanned layers are undercounted; the
same holds for collectives inside a loop body, which are priced once.
"""

from __future__ import annotations

import dataclasses
import re

import jax

from benchmarks.judge.hlo import HloCollective, parse_collectives
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


def price_collective(c: HloCollective, cluster: Cluster, num_devices: int) -> PricedCollective:
    groups = c.groups(num_devices)
    size = max((len(set(g)) for g in groups), default=1)
    crosses = any(len({d // cluster.devices_per_node for d in g}) > 1 for g in groups)
    nbytes = float(c.nbytes) * (size if c.kind == "reduce-scatter" else 1)  # RS: operand bytes
    # priced as the planner prices it: two-level where a group spans nodes, the slowest group
    seconds = max(span_collective_time(cluster, c.kind, s, nbytes)
                  for s in spans_of_groups(groups, cluster.devices_per_node))
    return PricedCollective(c.kind, nbytes, size, crosses, seconds)


def judge_text(hlo_text: str, cluster: Cluster, *, num_devices: int | None = None, flops: float = 0.0,
               bytes_accessed: float = 0.0, memory_bytes: float = 0.0) -> Judged:
    """Price optimized HLO text, given the per-device figures XLA reported for it."""
    found = parse_collectives(hlo_text)
    if num_devices is None:
        num_devices = _default_num_devices(hlo_text, found)
    priced = tuple(p for p in (price_collective(c, cluster, num_devices) for c in found) if p.group_size > 1)
    return Judged(
        compute_s=compute_time(cluster, flops, bytes_accessed),
        comm_s=sum(p.seconds for p in priced),
        memory_bytes=float(memory_bytes),
        flops=float(flops),
        bytes_accessed=float(bytes_accessed),
        num_devices=num_devices,
        collectives=priced,
    )


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


def judge(compiled: jax.stages.Compiled, cluster: Cluster, *, num_devices: int | None = None) -> Judged:
    """Price a compiled SPMD program: FLOPs are per device as XLA reports them."""
    if num_devices is None:
        counts = [getattr(s, "num_devices", 0) for s in jax.tree.leaves(compiled.input_shardings)]
        num_devices = max(counts, default=0) or None
    ca = _cost(compiled)
    return judge_text(compiled.as_text(), cluster, num_devices=num_devices,
                      flops=float(ca.get("flops", 0.0)), bytes_accessed=float(ca.get("bytes accessed", 0.0)),
                      memory_bytes=_memory(compiled))
