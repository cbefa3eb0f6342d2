"""Where a search spends its time: process CPU seconds and wall seconds per stage.

    with stage_times() as times:
        ss.plan(step, *args, mesh=(2, 4), cache=False, compare=False)
    times.cpu["solve: MIP"], times.wall["trace"]

The stages are the functions the search calls, wrapped for the duration of the block
(the library is not changed): trace, program hash, strategies, tie labels, build
(pricing: graph -> Problem), solve (split into the reductions, the heuristic start and
the MIP), assemble (Problem's answer -> Plan). CPU time is this process's
(``time.process_time``): on a machine other developers load, it is the figure that
means something for single-threaded work; wall time is reported beside it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import importlib
import time

# (module, attribute, stage): each wrapped where the caller looks it up
WRAPPED = (
    ("shardsearch.search", "trace", "trace"),
    ("shardsearch.search", "program_hash", "program hash"),
    ("shardsearch.search", "graph_strategies", "strategies"),
    ("shardsearch.search", "tie_labels", "tie labels"),
    ("shardsearch.search", "build_problem", "build"),
    ("shardsearch.search", "solve", "solve"),
    ("shardsearch.search", "assemble_plan", "assemble"),
    ("shardsearch.search", "plan_memory", "assemble"),  # a plan's peak alone (its memory analysis)
    ("shardsearch.solve.ilp", "reduce_problem", "solve: reduce"),
    ("shardsearch.solve.ilp", "tie_problem", "solve: tie"),
    ("shardsearch.solve.ilp", "prune_dominated", "solve: prune"),
    ("shardsearch.solve.ilp", "local_search", "solve: heuristic start"),
    ("shardsearch.solve.ilp", "solve_mip", "solve: MIP"),
)
# Parts of "solve" (reported inside it): the rest is "solve: other".
SOLVE_PARTS = ("solve: reduce", "solve: tie", "solve: prune", "solve: heuristic start", "solve: MIP")


@dataclasses.dataclass
class StageTimes:
    cpu: dict[str, float] = dataclasses.field(default_factory=lambda: collections.defaultdict(float))
    wall: dict[str, float] = dataclasses.field(default_factory=lambda: collections.defaultdict(float))
    calls: dict[str, int] = dataclasses.field(default_factory=lambda: collections.defaultdict(int))
    total_cpu: float = 0.0
    total_wall: float = 0.0

    def rows(self) -> list[tuple[str, float, float, int]]:
        """(stage, cpu s, wall s, calls) in pipeline order, with "solve: other" and
        "other" (what no stage covers: pins, cache key, copies' bookkeeping, ...)."""
        out = []
        for _, _, stage in WRAPPED:
            if stage in self.cpu and stage not in [r[0] for r in out]:
                out.append((stage, self.cpu[stage], self.wall[stage], self.calls[stage]))
        if "solve" in self.cpu:
            parts_cpu = sum(self.cpu.get(p, 0.0) for p in SOLVE_PARTS)
            parts_wall = sum(self.wall.get(p, 0.0) for p in SOLVE_PARTS)
            out.append(("solve: other", self.cpu["solve"] - parts_cpu, self.wall["solve"] - parts_wall, 0))
        top = [r for r in out if not r[0].startswith("solve:")]
        out.append(("other", self.total_cpu - sum(r[1] for r in top), self.total_wall - sum(r[2] for r in top), 0))
        return out


@contextlib.contextmanager
def stage_times():
    times = StageTimes()
    saved = []
    depth: dict[str, int] = collections.defaultdict(int)

    def timed(fn, stage):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            depth[stage] += 1
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[stage] -= 1
                if depth[stage] == 0:  # a stage that calls itself counts once
                    times.cpu[stage] += time.process_time() - c0
                    times.wall[stage] += time.perf_counter() - w0
                    times.calls[stage] += 1
        return wrapper

    for module, attr, stage in WRAPPED:
        mod = importlib.import_module(module)
        saved.append((mod, attr, getattr(mod, attr)))
        setattr(mod, attr, timed(getattr(mod, attr), stage))
    c0, w0 = time.process_time(), time.perf_counter()
    try:
        yield times
    finally:
        times.total_cpu = time.process_time() - c0
        times.total_wall = time.perf_counter() - w0
        for mod, attr, fn in reversed(saved):
            setattr(mod, attr, fn)
