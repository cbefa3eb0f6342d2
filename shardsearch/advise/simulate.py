"""Replay a job trace (arrival time, job, steps to run) against an allocation policy and
report mean job completion time (JCT), makespan and device utilization.

Policies (each sees the jobs present, in arrival order, and the allocation in force):
  "shardsearch"  ``allocate``: the best split by normalized throughput, re-run whenever a
                 job arrives or finishes; a job whose size changes pays ``restart_s``
                 (checkpoint, restart, restore under its new plan) before it runs again.
  "equal"        every job present gets an equal share: the largest size it may take that
                 is at most devices / jobs (at least its minimum; jobs whose minimum does
                 not fit wait, first come first served); resized jobs pay ``restart_s`` too.
  "fcfs"         first come, exclusive: each job asks for the count of its fastest
                 configuration, waits in arrival order until that many devices are free,
                 and keeps them until it finishes (no resizing, no backfilling).
Jobs progress at ``Job.steps_per_s(devices)``; time advances from event to event.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from cost_model import Cluster
from shardsearch.advise.allocate import Allocation, Job, _capacity, allocate, allowed_sizes, place

POLICIES = ("shardsearch", "equal", "fcfs")


@dataclasses.dataclass(frozen=True)
class TraceJob:
    job: Job
    arrival_s: float
    steps: int


@dataclasses.dataclass(frozen=True)
class SimResult:
    policy: str
    jct_s: dict  # job -> completion time - arrival time
    finish_s: dict
    makespan_s: float  # last finish - first arrival
    utilization: float  # device-seconds allocated / (devices * makespan)
    restarts: int
    timeline: tuple  # (time, {job: devices}, jobs present in arrival order) at every decision

    @property
    def mean_jct_s(self) -> float:
        return sum(self.jct_s.values()) / len(self.jct_s)


def _equal(present: list[Job], total: int, per_node: int) -> dict[str, int]:
    admitted, room = [], total
    for j in present:
        least = allowed_sizes(j, total, per_node)[0]
        if least <= room:
            admitted.append(j)
            room -= least
    while admitted:
        share = total // len(admitted)
        sizes = {j.name: max([n for n in allowed_sizes(j, total, per_node) if n <= share] or
                             [allowed_sizes(j, total, per_node)[0]]) for j in admitted}
        if sum(sizes.values()) <= total:
            return sizes
        admitted.pop()  # the latest arrival waits
    return {}


def _fcfs(present: list[Job], running: dict[str, int], total: int, per_node: int) -> dict[str, int]:
    sizes = {name: n for name, n in running.items() if any(j.name == name for j in present)}
    free = total - sum(sizes.values())
    for j in present:
        if j.name in sizes:
            continue
        want = max(allowed_sizes(j, total, per_node), key=lambda n: (j.rate(n), -n))
        if want > free:
            break  # strictly first come: nobody overtakes the job at the head of the queue
        sizes[j.name] = want
        free -= want
    return sizes


def simulate(trace: Sequence[TraceJob], cluster: Cluster | str | None, policy: str, *, devices: int | None = None,
             restart_s: float = 0.0, restart_penalty: float = 0.1) -> SimResult:
    if policy not in POLICIES:
        raise ValueError(f"policy={policy!r} is not one of {POLICIES}")
    cluster = Cluster.load(cluster)
    total, per_node = _capacity(cluster, devices), cluster.devices_per_node
    pending = sorted(trace, key=lambda t: t.arrival_s)
    by_name = {t.job.name: t for t in trace}
    t = pending[0].arrival_s if pending else 0.0
    start = t
    done = {t_.job.name: 0.0 for t_ in trace}
    present: list[Job] = []
    sizes: dict[str, int] = {}
    stalled: dict[str, float] = {}  # job -> time it runs again after a restart
    finish: dict[str, float] = {}
    busy, restarts, timeline = 0.0, 0, []
    alloc: Allocation | None = None
    while pending or present:
        while pending and pending[0].arrival_s <= t:
            present.append(pending.pop(0).job)
        if policy == "shardsearch":
            alloc = allocate(present, cluster, total, previous=alloc, restart_penalty=restart_penalty) \
                if present else None
            new = alloc.sizes() if alloc else {}
        elif policy == "equal":
            new = _equal(present, total, per_node)
        else:
            new = _fcfs(present, sizes, total, per_node)
        place(new, per_node)  # every policy's split must fit on the nodes
        for name, n in new.items():
            if sizes.get(name, 0) not in (0, n):
                stalled[name] = t + restart_s
                restarts += 1
        sizes = new
        timeline.append((t, dict(sizes), tuple(j.name for j in present)))
        # the next event: an arrival or a job finishing at its current size
        ends = {}
        for j in present:
            n = sizes.get(j.name, 0)
            if n:
                left = by_name[j.name].steps - done[j.name]
                ends[j.name] = max(t, stalled.get(j.name, t)) + left / j.steps_per_s(n)
        nxt = min(list(ends.values()) + ([pending[0].arrival_s] if pending else []), default=math.inf)
        if nxt == math.inf:
            raise ValueError("the trace has jobs that no policy step can run: check their minimum sizes")
        for j in present:
            n = sizes.get(j.name, 0)
            if n:
                run = max(0.0, nxt - max(t, stalled.get(j.name, t)))
                done[j.name] += run * j.steps_per_s(n)
                busy += n * (nxt - t)
        t = nxt
        for j in list(present):
            if ends.get(j.name, math.inf) <= t * (1 + 1e-12):
                finish[j.name] = t
                present.remove(j)
                sizes.pop(j.name, None)
    jct = {name: finish[name] - by_name[name].arrival_s for name in finish}
    makespan = max(finish.values(), default=start) - start
    return SimResult(policy, jct, finish, makespan, busy / (total * makespan) if makespan else 0.0, restarts,
                     tuple(timeline))
