"""Replay a scheduled GPU program on two clocks: what overlaps, and what is left exposed.

XLA's GPU compiler emits collectives as asynchronous ``*-start`` / ``*-done`` pairs and its
latency-hiding scheduler places independent kernels between them. The replay walks the
entry computation in its scheduled (printed) order:

* a kernel (``kernels.KernelPricer``) runs on the compute clock; while a collective is in
  flight on the network it runs ``contention`` slower (the collective's copy engines and
  SMs share the device: 15% by default);
* a ``start`` hands its collective to the network clock, which runs collectives one at a
  time in the order they start: it begins when both the start was issued and the one
  before it ended, and takes its alpha-beta time (``price.price_collective``, the same
  per-group, two-level formulas as the no-overlap judge);
* a ``done`` stalls the compute clock until its collective has ended;
* a collective with no start/done pair blocks both clocks;
* a ``while`` replays its body once per iteration (its ``known_trip_count``, else once), a
  ``conditional`` its costliest branch, a ``call`` its computation.

The step ends when both clocks are idle. ``exposed_comm_s`` is the step's time beyond the
kernels' own (no contention): the communication not hidden, plus the contention it caused.
"""

from __future__ import annotations

import dataclasses

from benchmarks.judge.kernels import FREE, Kernel, KernelPricer
from benchmarks.judge.price import price_collective
from cost_model.cluster import Cluster
from shardsearch.hlo import HloCollective, parse_collectives
from shardsearch.hlo.compute import intended_dtypes, trip_count
from shardsearch.hlo.module import Computation, Instruction, entry_of, parse_module

CONTENTION = 0.15  # a kernel runs this much slower while a collective is in flight
_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute",
                "ragged-all-to-all")
_STARTS = tuple(k + "-start" for k in _COLLECTIVES) + ("async-start",)
_DONES = tuple(k + "-done" for k in _COLLECTIVES) + ("async-done",)
_IGNORED = frozenset({"async-update", "send", "send-done", "recv", "recv-done"})


@dataclasses.dataclass(frozen=True)
class Replayed:
    total_s: float  # the step with overlap: both clocks idle
    compute_s: float  # the kernels' own time, no contention
    comm_s: float  # every collective's time (the no-overlap judge's figure)
    contention_s: float  # extra kernel time while collectives were in flight
    num_async: int  # collectives that ran as start/done pairs
    num_sync: int  # collectives that blocked both clocks
    flops: float = 0.0  # per device, every kernel launch (loop iterations included)
    matmul_flops: float = 0.0
    bytes_accessed: float = 0.0

    @property
    def no_overlap_s(self) -> float:
        return self.compute_s + self.comm_s

    @property
    def exposed_comm_s(self) -> float:
        return max(self.total_s - self.compute_s, 0.0)

    @property
    def hidden_fraction(self) -> float:
        """Share of the communication time the overlap saved (1: all hidden for free)."""
        return 1.0 - self.exposed_comm_s / self.comm_s if self.comm_s > 0 else 1.0


class _Clocks:
    def __init__(self, contention: float):
        self.t = 0.0  # compute clock
        self.net_free = 0.0
        self.busy: list[tuple[float, float]] = []  # network intervals, in time order
        self._past = 0  # busy[:_past] ended before the compute clock (which only moves on)
        self.contention = contention
        self.compute_s = self.comm_s = self.extra_s = 0.0
        self.num_async = self.num_sync = 0

    def kernel(self, seconds: float) -> None:
        """Advance the compute clock by a kernel, slowed where it meets network intervals."""
        self.compute_s += seconds
        left, t = seconds, self.t
        while self._past < len(self.busy) and self.busy[self._past][1] <= t:
            self._past += 1
        i = self._past
        slow = 1.0 + self.contention
        while left > 0:
            if i >= len(self.busy):
                t += left
                break
            s, e = self.busy[i]
            if t < s:  # free stretch before the next interval
                step = min(left, s - t)
                t, left = t + step, left - step
                continue
            span = e - max(t, s)  # inside an interval: progress at 1/slow
            if left * slow <= span:
                t, left = t + left * slow, 0.0
            else:
                t, left = e, left - span / slow
            i += 1
        self.extra_s += (t - self.t) - seconds
        self.t = t

    def collective(self, seconds: float) -> float:
        """Queue a collective issued now on the network; returns when it ends."""
        self.comm_s += seconds
        start = max(self.t, self.net_free)
        end = start + seconds
        if seconds > 0:
            self.busy.append((start, end))
        self.net_free = end
        return end

    def wait(self, until: float) -> None:
        self.t = max(self.t, until)


class _Replay:
    def __init__(self, hlo_text: str, cluster: Cluster, num_devices: int, contention: float, device_ids=None):
        self.device_ids = device_ids
        self.module = parse_module(hlo_text)
        self.pricer = KernelPricer(self.module, intended_dtypes(self.module), cluster)
        self.collectives: dict[str, HloCollective] = {c.name: c for c in parse_collectives(hlo_text)}
        self.cluster, self.num_devices = cluster, num_devices
        self.clocks = _Clocks(contention)
        self._seconds: dict[str, float] = {}
        self._kernels: dict[tuple[str, str], Kernel] = {}
        self.flops = self.matmul_flops = self.bytes = 0.0

    def _collective_s(self, name: str) -> float:
        if name not in self._seconds:
            c = self.collectives.get(name)
            priced = price_collective(c, self.cluster, self.num_devices, self.device_ids) if c is not None else None
            self._seconds[name] = priced.seconds if priced is not None and priced.group_size > 1 else 0.0
        return self._seconds[name]

    def _wrapped(self, instr: Instruction) -> str | None:
        """The collective an ``async-start`` runs (by name), if it runs one."""
        for attr, callee in instr.calls:
            comp = self.module.get(callee)
            if comp is not None:
                found = next((i.name for i in comp.instructions if i.name in self.collectives), None)
                if found:
                    return found
        return None

    def _kernel(self, comp: Computation, instr: Instruction) -> Kernel:
        key = (comp.name, instr.name)
        if key not in self._kernels:
            self._kernels[key] = self.pricer.price(comp, instr)
        return self._kernels[key]

    def _launch(self, kernels: list[Kernel]) -> None:
        for k in kernels:
            self.flops += k.flops
            self.matmul_flops += k.matmul_flops
            self.bytes += k.bytes
        self.clocks.kernel(sum(k.seconds for k in kernels))

    def run(self, comp: Computation) -> None:
        clocks, pending = self.clocks, {}
        for instr in comp.instructions:
            op = instr.opcode
            if op in FREE or op in _IGNORED:
                continue
            if op in _STARTS:
                name = self._wrapped(instr) if op == "async-start" else instr.name
                if name is None:  # an async computation that is no collective: its kernels
                    self._launch([self._kernel(self.module[c], i) for _, c in instr.calls
                                  if c in self.module for i in self.module[c].instructions if i.opcode not in FREE])
                    continue
                clocks.num_async += 1
                pending[instr.name] = clocks.collective(self._collective_s(name))
            elif op in _DONES:
                clocks.wait(pending.pop(instr.operands[0], clocks.t) if instr.operands else clocks.t)
            elif op in _COLLECTIVES:
                clocks.num_sync += 1
                clocks.wait(clocks.collective(self._collective_s(instr.name)))
            elif op == "while":
                body = next((self.module[c] for a, c in instr.calls if a == "body" and c in self.module), None)
                for _ in range(trip_count(instr) if body is not None else 0):
                    self.run(body)
            elif op == "conditional":
                branches = [self.module[c] for a, c in instr.calls if c in self.module]
                if branches:
                    self.run(max(branches, key=self._static_s))
            elif op == "call":
                for _, c in instr.calls:
                    if c in self.module:
                        self.run(self.module[c])
            else:
                self._launch([self._kernel(comp, instr)])
        for end in pending.values():  # a start never waited on still ends the step
            clocks.wait(end)

    def _static_s(self, comp: Computation) -> float:
        return sum(self._kernel(comp, i).seconds for i in comp.instructions
                   if i.opcode not in FREE and i.opcode not in _STARTS + _DONES + _COLLECTIVES)


def replay(hlo_text: str, cluster: Cluster, num_devices: int, *, contention: float = CONTENTION,
           device_ids=None) -> Replayed:
    """Replay the scheduled program ``hlo_text`` (optimized HLO of a GPU compile) on ``cluster``.
    ``device_ids``: the cluster device of each device position (a pipeline stage's), as in ``price``."""
    r = _Replay(hlo_text, cluster, num_devices, contention, device_ids)
    entry = entry_of(r.module)
    if entry is not None:
        r.run(entry)
    c = r.clocks
    total = max(c.t, c.net_free)
    return Replayed(total, c.compute_s, c.comm_s, c.extra_s, c.num_async, c.num_sync, r.flops, r.matmul_flops, r.bytes)
