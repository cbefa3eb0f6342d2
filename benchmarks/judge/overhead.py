"""What a plan's step spends beyond the ideal (the replicated program's kernels / devices).

``gpu_target``'s "overhead closed" compares a plan with compute alone: the replicated
program's kernel time divided by the devices, no communication. A plan's step with
overlap (``replay``) exceeds it by

* matmul kernels: the same FLOPs cut into smaller gemms run lower on the matmul
  efficiency curve (any split across the devices pays this; no layout avoids it);
* the optimizer update: the kernels that write the step's results (new parameters and
  optimizer state) run on every device over the whole state unless the state is split;
* the other kernels (norms, softmax, casts, layout copies);
* the contention: kernels slowed while collectives are in flight;
* the stalls: compute waiting at a ``done`` for its collective.

python -m benchmarks.judge.overhead PLAN.hlo REPLICATED.hlo --cluster h100-8 --devices 8
(optimized HLO text of the two GPU-target programs: ``compiled.as_text()``).
"""

from __future__ import annotations

import argparse
import dataclasses

from benchmarks.judge.kernels import FREE
from benchmarks.judge.replay import _COLLECTIVES, _DONES, _IGNORED, _STARTS, CONTENTION, _Replay, replay
from cost_model.cluster import Cluster
from shardsearch.hlo.compute import trip_count
from shardsearch.hlo.module import entry_of

_NOT_KERNELS = FREE | _IGNORED | frozenset(_STARTS + _DONES + _COLLECTIVES)


@dataclasses.dataclass(frozen=True)
class Kernels:
    matmul_s: float  # kernels with a dot or convolution
    update_s: float  # the entry's kernels that write its results (the optimizer update)
    other_s: float

    @property
    def total_s(self) -> float:
        return self.matmul_s + self.update_s + self.other_s


def kernels(hlo_text: str, cluster: Cluster, num_devices: int) -> Kernels:
    """The program's kernel seconds (loops per iteration), by kind."""
    r = _Replay(hlo_text, cluster, num_devices, CONTENTION)
    entry = entry_of(r.module)
    by_name = {i.name: i for i in entry.instructions}
    writes, stack = set(), [entry.instructions[-1].name]  # the ROOT, or its producers through tuples
    while stack:
        instr = by_name.get(stack.pop())
        if instr is None or instr.name in writes:
            continue
        if instr.opcode in _NOT_KERNELS:
            stack += list(instr.operands)
        else:
            writes.add(instr.name)
    sums = {"matmul": 0.0, "update": 0.0, "other": 0.0}

    def walk(comp, times: int) -> None:
        for instr in comp.instructions:
            if instr.opcode in _NOT_KERNELS:
                continue
            called = [r.module[c] for a, c in instr.calls if c in r.module]
            if instr.opcode == "while":
                body = next((r.module[c] for a, c in instr.calls if a == "body" and c in r.module), None)
                if body is not None:
                    walk(body, times * trip_count(instr))
                continue
            if instr.opcode in ("call", "conditional") and called:
                walk(called[0], times)
                continue
            k = r._kernel(comp, instr)
            kind = "update" if comp is entry and instr.name in writes else "matmul" if k.matmul_flops else "other"
            sums[kind] += k.seconds * times

    if entry is not None:
        walk(entry, 1)
    return Kernels(sums["matmul"], sums["update"], sums["other"])


@dataclasses.dataclass(frozen=True)
class Overhead:
    ideal: Kernels  # the replicated program's, divided by the devices
    plan: Kernels
    step_s: float  # the plan's step with overlap
    contention_s: float
    stall_s: float

    @property
    def ideal_s(self) -> float:
        return self.ideal.total_s

    def lines(self) -> list[str]:
        d = self.step_s - self.ideal_s
        parts = [("matmul kernels (smaller gemms)", self.plan.matmul_s - self.ideal.matmul_s),
                 ("optimizer update (results' kernels)", self.plan.update_s - self.ideal.update_s),
                 ("other kernels", self.plan.other_s - self.ideal.other_s),
                 ("contention", self.contention_s), ("stalls at done", self.stall_s)]
        return [f"step {self.step_s * 1e3:.3f} ms, ideal {self.ideal_s * 1e3:.3f} ms, overhead {d * 1e3:.3f} ms"] + [
            f"  {name}: {s * 1e3:+.3f} ms ({s / d:.0%})" for name, s in parts]


def overhead(plan_hlo: str, replicated_hlo: str, cluster: Cluster, num_devices: int) -> Overhead:
    rep = kernels(replicated_hlo, cluster, num_devices)
    ideal = Kernels(rep.matmul_s / num_devices, rep.update_s / num_devices, rep.other_s / num_devices)
    r = replay(plan_hlo, cluster, num_devices)
    return Overhead(ideal, kernels(plan_hlo, cluster, num_devices), r.total_s, r.contention_s,
                    r.total_s - r.compute_s - r.contention_s)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.judge.overhead", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("plan_hlo")
    ap.add_argument("replicated_hlo")
    ap.add_argument("--cluster", default="h100-8")
    ap.add_argument("--devices", type=int, default=8)
    a = ap.parse_args(argv)
    with open(a.plan_hlo) as f, open(a.replicated_hlo) as g:
        print("\n".join(overhead(f.read(), g.read(), Cluster.load(a.cluster), a.devices).lines()))


if __name__ == "__main__":
    main()
