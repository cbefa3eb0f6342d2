"""Split a cluster between jobs: each job's device count (and mesh, and plan file) from
its advice, to maximize the cluster's total normalized throughput.

The idea is Pollux's (Qiao et al., OSDI 2021; petuum/adaptdl's ``PolluxPolicy``): a job's
value on a share is its speedup there scaled to a common unit, jobs are re-allocated
when one arrives or leaves, and a job that must restart to change size pays a penalty.
Ours differs where shardsearch knows more and needs less:

* a job's curve is the advisor's predicted throughput of its best mesh per device count
  (for every count, not a fitted model), so the value of ``n`` devices to job ``j`` is
  ``priority_j * throughput_j(n) / throughput_j(alone)``, where ``alone`` is the best the
  job does on the whole cluster;
* the device counts a job may get are the ones the sweep planned that fit in memory, at
  least its minimum, and that pack onto nodes (sizes that divide a node and nest, or whole
  nodes), so the best split is an exact knapsack over counts (dynamic programming over
  jobs x devices), not a genetic search;
* admission: jobs in priority order, then in the order given (arrival), each admitted
  while the minimums of the admitted ones fit; the rest wait (``queued``).

``Allocation`` is plain data (job -> devices, mesh shape, plan path, device ids); a
cluster scheduler applies it (see docs/sharing-a-cluster.md). A job whose size changes
restarts from its checkpoint under the plan of its new count.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Mapping, Sequence

from cost_model import Cluster
from shardsearch.advise.configs import _chain
from shardsearch.errors import AdviseError

NOT_GLOBAL = ("job {name!r}: allocate needs advice for a fixed global batch (batch_mode='global'); with "
              "batch_mode='per_device' a job's batch, and so its training, would change when it is resized")
NO_SIZE = ("job {name!r} has no planned device count between its minimum {least} and {top} that fits in memory "
           "and packs onto nodes of {per_node} (planned: {counts}); sweep it on those counts or lower min_devices")
NO_DEVICES = ("allocate needs the number of devices to share: pass devices=N, or a cluster profile with "
              "num_nodes (cluster {name!r} has none)")
DUPLICATE = "two jobs are named {name!r}; give each job its own name"


@dataclasses.dataclass(frozen=True)
class Job:
    """One job's speedup curve. ``throughput``: device count -> samples/s of its best
    fitting configuration; ``batch``: samples per step (steps/s = throughput / batch)."""

    name: str
    throughput: tuple[tuple[int, float], ...]
    batch: int = 1
    min_devices: int = 1
    priority: float = 1.0
    meshes: tuple[tuple[int, tuple[int, ...]], ...] = ()  # device count -> mesh shape
    plans: tuple[tuple[int, str], ...] = ()  # device count -> plan file

    def __post_init__(self):
        for key in ("throughput", "meshes", "plans"):
            value = getattr(self, key)
            pairs = value.items() if isinstance(value, Mapping) else value
            object.__setattr__(self, key, tuple(sorted((int(n), v) for n, v in pairs)))
        if self.priority <= 0 or not math.isfinite(self.priority):
            raise AdviseError(f"job {self.name!r}: priority={self.priority} must be a positive number (a weight)")

    def rate(self, n: int) -> float:
        return dict(self.throughput).get(n, 0.0)

    def steps_per_s(self, n: int) -> float:
        return self.rate(n) / self.batch

    @classmethod
    def from_advice(cls, name: str, advice, *, min_devices: int | None = None, priority: float = 1.0,
                    plans: Mapping | None = None) -> "Job":
        """The fastest fitting mesh of every planned count; ``min_devices`` defaults to the
        smallest count that fits; ``plans``: ``advice.save_plans(folder)``'s result."""
        from shardsearch.advise.batch import BatchMode

        if advice.batch_mode is not BatchMode.GLOBAL:
            raise AdviseError(NOT_GLOBAL.format(name=name))
        rows = advice.usable()
        if not rows:
            raise advice.nothing_fits()
        best = {}
        for r in rows:
            if r.devices not in best or r.throughput > best[r.devices].throughput:
                best[r.devices] = r
        paths = {k[0]: str(v) for k, v in (plans or {}).items() if best.get(k[0]) and k[1] == best[k[0]].mesh_shape}
        return cls(name, {n: r.throughput for n, r in best.items()}, batch=advice.batch.size,
                   min_devices=min(best) if min_devices is None else min_devices, priority=priority,
                   meshes={n: r.mesh_shape for n, r in best.items()}, plans=paths)


@dataclasses.dataclass(frozen=True)
class Share:
    job: str
    devices: int
    mesh_shape: tuple[int, ...] | None
    plan_path: str | None
    device_ids: tuple[int, ...]
    throughput: float  # samples/s on this share
    normalized: float  # throughput / throughput alone on the whole cluster


@dataclasses.dataclass(frozen=True)
class Allocation:
    cluster: str
    devices: int
    shares: tuple[Share, ...]
    queued: tuple[str, ...]  # admitted nothing: their minimum does not fit next to the others
    objective: float  # sum of priority * normalized throughput
    changed: tuple[tuple[str, int, int], ...] = ()  # (job, devices before, after) against `previous`

    def sizes(self) -> dict[str, int]:
        return {s.job: s.devices for s in self.shares}

    @property
    def used(self) -> int:
        return sum(s.devices for s in self.shares)

    def to_dict(self) -> dict:
        return {
            "cluster": self.cluster, "devices": self.devices, "objective": self.objective,
            "jobs": {s.job: {"devices": s.devices, "mesh_shape": list(s.mesh_shape) if s.mesh_shape else None,
                             "plan_path": s.plan_path, "device_ids": list(s.device_ids),
                             "throughput": s.throughput, "normalized": s.normalized} for s in self.shares},
            "queued": list(self.queued),
            "changed": [{"job": j, "before": a, "after": b} for j, a, b in self.changed],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


def placeable(n: int, per_node: int) -> bool:
    """Sizes that pack exactly: nested divisors of a node, or whole nodes."""
    return (n <= per_node and per_node % n == 0 and _chain(n, per_node)) or n % per_node == 0


def allowed_sizes(job: Job, total: int, per_node: int) -> list[int]:
    sizes = [n for n, rate in job.throughput if job.min_devices <= n <= total and rate > 0 and placeable(n, per_node)]
    if not sizes:
        raise AdviseError(NO_SIZE.format(name=job.name, least=job.min_devices, top=total, per_node=per_node,
                                         counts=[n for n, _ in job.throughput]))
    return sizes


def _capacity(cluster: Cluster, devices: int | None) -> int:
    from shardsearch.advise.configs import check_counts

    if devices is None:
        if cluster.capacity is None:
            raise AdviseError(NO_DEVICES.format(name=cluster.name))
        devices = cluster.capacity
    return check_counts(cluster, [devices])[0]


def allocate(jobs: Sequence[Job] | Mapping, cluster: Cluster | str | None = None, devices: int | None = None, *,
             previous: Allocation | None = None, restart_penalty: float = 0.1) -> Allocation:
    """Split ``devices`` (default: the whole cluster) between ``jobs`` (``Job``s, or a
    mapping name -> ``Advice``), in arrival order. ``previous``: the allocation in force;
    a job it sizes differently is worth ``1 - restart_penalty`` of its value (it restarts
    from a checkpoint), and ``changed`` lists the jobs that change size."""
    cluster = Cluster.load(cluster)
    total = _capacity(cluster, devices)
    jobs = [Job.from_advice(k, v) if not isinstance(v, Job) else v for k, v in jobs.items()] \
        if isinstance(jobs, Mapping) else list(jobs)
    names = [j.name for j in jobs]
    for name in names:
        if names.count(name) > 1:
            raise AdviseError(DUPLICATE.format(name=name))
    per_node = cluster.devices_per_node
    sizes = {j.name: allowed_sizes(j, total, per_node) for j in jobs}
    admitted, queued, room = [], [], total
    for j in sorted(jobs, key=lambda j: -j.priority):  # stable: arrival order among equal priorities
        if sizes[j.name][0] <= room:
            admitted.append(j)
            room -= sizes[j.name][0]
        else:
            queued.append(j.name)
    before = previous.sizes() if previous is not None else {}

    def value(j: Job, n: int) -> float:
        alone = max(j.rate(m) for m in sizes[j.name])
        keep = 1.0 if before.get(j.name, n) in (n, 0) else 1.0 - restart_penalty
        return j.priority * j.rate(n) / alone * keep

    chosen = best_split(admitted, sizes, total, value)
    ids = place({j.name: chosen[j.name] for j in admitted}, per_node)
    shares = tuple(Share(
        j.name, chosen[j.name], dict(j.meshes).get(chosen[j.name]), dict(j.plans).get(chosen[j.name]),
        ids[j.name], j.rate(chosen[j.name]), j.rate(chosen[j.name]) / max(j.rate(m) for m in sizes[j.name]))
        for j in admitted)
    after = {s.job: s.devices for s in shares}
    changed = tuple((name, before.get(name, 0), after.get(name, 0))
                    for name in sorted(set(before) | set(after)) if before.get(name, 0) != after.get(name, 0))
    return Allocation(cluster.name, total, shares, tuple(queued), sum(value(j, chosen[j.name]) for j in admitted),
                      changed)


def best_split(jobs: Sequence[Job], sizes: Mapping[str, list[int]], total: int, value) -> dict[str, int]:
    """The sizes (one of ``sizes[job]`` each) with the largest sum of ``value(job, n)``
    using at most ``total`` devices: a knapsack by dynamic programming, exact. Among
    equal sums, the one that uses fewer devices."""
    NEG = -math.inf
    # best[d]: (value, -devices used) of the jobs so far on exactly d devices
    best = [(0.0, 0)] + [(NEG, 0)] * total
    picks: list[list[int | None]] = []
    for j in jobs:
        new = [(NEG, 0)] * (total + 1)
        pick: list[int | None] = [None] * (total + 1)
        for d in range(total + 1):
            if best[d][0] == NEG:
                continue
            for n in sizes[j.name]:
                if d + n <= total:
                    cand = (best[d][0] + value(j, n), -(d + n))
                    if cand > new[d + n]:
                        new[d + n], pick[d + n] = cand, n
        best = new
        picks.append(pick)
    end = max(range(total + 1), key=lambda d: (best[d], -d))
    if best[end][0] == NEG:
        raise AdviseError("the jobs' minimum sizes do not fit together; this is a bug in admission")
    out = {}
    for j, pick in zip(reversed(jobs), reversed(picks)):
        out[j.name] = pick[end]
        end -= pick[end]
    return out


def place(sizes: Mapping[str, int], per_node: int) -> dict[str, tuple[int, ...]]:
    """Device ids per job: jobs of whole nodes take whole nodes, the rest pack into the
    nodes left, largest first (sizes that divide a node and nest always pack exactly)."""
    ids: dict[str, tuple[int, ...]] = {}
    order = sorted(sizes, key=lambda name: (-sizes[name], name))
    node = 0
    for name in (n for n in order if sizes[n] >= per_node):
        ids[name] = tuple(range(node * per_node, node * per_node + sizes[name]))
        node += sizes[name] // per_node
    free: list[list[int]] = []  # per open node: [node index, next free slot]
    for name in (n for n in order if sizes[n] < per_node):
        slot = next((f for f in free if per_node - f[1] >= sizes[name]), None)
        if slot is None:
            slot = [node, 0]
            free.append(slot)
            node += 1
        start = slot[0] * per_node + slot[1]
        ids[name] = tuple(range(start, start + sizes[name]))
        slot[1] += sizes[name]
    return ids
