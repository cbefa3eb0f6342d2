"""The sweep: one traced program planned on every configuration, fast.

* Trace once: the global-batch program is traced and hashed once for the whole sweep
  (weak scaling traces once per device count: the batch, hence the program, changes).
* Reuse: each configuration runs the ordinary search after tracing (``search.plan_graph``,
  after gradient accumulation's ``microbatched`` as ``ss.plan`` does), so a row's plan is
  exactly what ``ss.plan`` gives for that mesh, and the on-disk plan cache answers a
  configuration planned before.
* Skip what cannot win: within one device count every goal (time, cost, throughput)
  prefers the faster mesh, since the devices, batch and price are the same. So once a
  mesh of n devices fits in memory at t seconds per step, the next mesh of n devices is
  solved with ``cutoff=t`` and the solver stops as soon as its bound proves it cannot be
  faster (a "dominated" row, planned no further). Meshes are tried in the order most
  likely to win first: the winning ``model`` width of the previous count, then the 1-D
  mesh, then the rest.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

from cost_model import Cluster, MeshShape
from shardsearch.advise.advice import Advice, Row, RowStatus
from shardsearch.advise.batch import BatchInfo, BatchMode, batch_info, check_divisible, scaled_args
from shardsearch.advise.configs import Config, mesh_shapes
from shardsearch.advise.stages import plan_pipelined, stage_counts
from shardsearch.apply.mesh import default_axis_names
from shardsearch.config import SearchConfig
from shardsearch.errors import MemoryBudgetError
from shardsearch.graph import OpGraph
from shardsearch.memory import carried_args
from shardsearch.pipeline.program import microbatched
from shardsearch.search import plan_graph
from shardsearch.solve import AboveCutoff
from shardsearch.trace import abstract_args, program_hash, trace


@dataclasses.dataclass(frozen=True)
class Planned:
    """What the search said about one configuration, before rows are priced."""

    config: Config
    batch: int  # samples per step at this count
    plan: object | None  # Plan
    fits: bool | None
    needs_bytes: float | None  # least memory per device any plan needs, when none fits
    bound_s: float | None  # dominated: no plan of this mesh is faster than this
    search_s: float


def _quiet(_msg: str) -> None:
    pass


def _order(shapes: list[tuple[int, int]], last_model: int | None) -> list[tuple[int, int]]:
    first = [s for s in shapes if s[1] == last_model]
    return first + [s for s in shapes if s not in first]


def plan_config(graph: OpGraph, phash: str, config: Config, *, cluster: Cluster, budget: float,
                search_config: SearchConfig, cutoff: float | None) -> tuple:
    """(plan, fits, needs_bytes, bound_s) for one configuration. A mesh no plan fits is
    planned again without the budget, so its row still says how fast it would be (unless
    that cannot beat the cutoff either)."""
    mesh = MeshShape(default_axis_names(len(config.mesh_shape)), config.mesh_shape)
    graph, pipeline = microbatched(graph, search_config.num_microbatches, mesh)
    # training loops donate the carried state: the budget is checked against that peak
    run = dict(mesh=mesh, cluster=cluster, config=search_config, log=_quiet, pipeline=pipeline,
               donated=frozenset(carried_args(graph)))
    try:
        plan = plan_graph(graph, phash, memory_budget=budget, cutoff=cutoff, **run).plan
    except AboveCutoff as skip:
        return None, None, None, skip.cutoff
    except MemoryBudgetError as err:
        if cluster.overlap_contention is not None and (err.least_bytes or 0) > cluster.memory_bytes:
            # no plan fits the device: plan_graph would plan it with overlap, find that, and
            # plan it again with every collective in full (as XLA runs such a step); go there
            run["cluster"] = dataclasses.replace(cluster, overlap_contention=None)
        try:
            plan = plan_graph(graph, phash, memory_budget=None, cutoff=cutoff, **run).plan
        except AboveCutoff as skip:
            return None, False, err.least_bytes, skip.cutoff
        return plan, False, err.least_bytes or peak_bytes(plan), None
    return plan, peak_bytes(plan) <= budget, None, None


def peak_bytes(plan) -> float:
    """The step's peak per device with the carried state donated (as training loops run)."""
    return plan.predicted.peak_donated_bytes or plan.predicted.peak_bytes


class _Traces:
    """The traced program per global batch: one for strong scaling, one per count for weak."""

    def __init__(self, fn: Callable, abstract: tuple):
        self.fn, self.abstract = fn, abstract
        self.graph = trace(fn, abstract)
        self.batch = batch_info(self.graph)
        self._by_scale: dict[int, tuple[OpGraph, str]] = {1: (self.graph, program_hash(self.graph))}

    def at(self, scale: int) -> tuple[OpGraph, str]:
        if scale not in self._by_scale:
            graph = trace(self.fn, scaled_args(self.abstract, self.batch, scale))
            self._by_scale[scale] = (graph, program_hash(graph))
        return self._by_scale[scale]

    def graph_at(self, scale: int) -> OpGraph:
        return self.at(scale)[0]


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    """Everything a sweep needs besides the step: plain data, so a worker process gets it."""

    cluster: Cluster
    batch_mode: BatchMode
    memory_budget: float
    search_config: SearchConfig
    prune: bool = True
    stages: tuple[int, ...] = ()  # pipeline stage counts to add a row for (stages.py)

    def configs_of(self, n: int) -> int:
        return len(mesh_shapes(n, self.cluster)) + len(stage_counts(n, self.stages))


@dataclasses.dataclass
class Swept:
    planned: list[Planned]
    notes: list[str]  # what the sweep could not plan, in words (a count no pipeline fits)


def plan_counts(traces: "_Traces", counts: Sequence[int], settings: SweepSettings,
                progress: Callable[[str], None] | None = None) -> Swept:
    """Every mesh of each count, ascending; within a count the solver's cutoff is the
    fastest fitting mesh so far. Then the count's pipelined rows, if asked for."""
    out = Swept([], [])
    planned = out.planned
    last_model = None
    for n in counts:
        scale = n if settings.batch_mode is BatchMode.PER_DEVICE else 1
        graph, phash = traces.at(scale)
        best = None  # fastest fitting step time at this count so far
        for shape in _order(mesh_shapes(n, settings.cluster), last_model):
            config = Config(n, shape)
            if progress is not None:
                progress(f"{n} devices, mesh {config.label}")
            t0 = time.perf_counter()
            plan, fits, needs, bound = plan_config(
                graph, phash, config, cluster=settings.cluster, budget=settings.memory_budget,
                search_config=settings.search_config, cutoff=best if settings.prune else None)
            planned.append(Planned(config, traces.batch.samples(scale), plan, fits, needs, bound,
                                   time.perf_counter() - t0))
            if fits and (best is None or plan.predicted.total_s < best):
                best, last_model = plan.predicted.total_s, shape[1]
        whole = min((p for p in planned if p.config.devices == n and p.plan is not None),
                    key=lambda p: (not p.fits, p.plan.predicted.total_s))
        for s in stage_counts(n, settings.stages):
            if progress is not None:
                progress(f"{n} devices in {s} pipeline stages")
            row, why = plan_pipelined(traces.graph_at(scale), phash, n, s, whole.plan, settings,
                                      traces.batch.samples(scale))
            if row is None:
                out.notes.append(f"{n} devices in {s} pipeline stages: {why}")
            else:
                planned.append(row)
    return out


def run_sweep(
    fn: Callable,
    args: Sequence,
    *,
    counts: Sequence[int],
    settings: SweepSettings,
    workers: int = 1,
    target: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Advice:
    """Plan every configuration of ``counts`` and price the rows (see ``Advice``);
    ``workers`` > 1 shares the counts between spawned processes (``parallel.py``)."""
    start, cpu0 = time.perf_counter(), process_cpu_s()
    traces = _Traces(fn, abstract_args(args))
    if settings.batch_mode is BatchMode.GLOBAL:
        check_divisible(traces.batch, counts)
    total = sum(settings.configs_of(n) for n in counts)
    if workers > 1 and len(counts) > 1:
        from shardsearch.advise.parallel import plan_in_workers

        swept = plan_in_workers(fn, args, counts, settings, workers=workers, target=target, progress=progress,
                                total=total)
    else:
        done = []

        def say(what: str) -> None:
            if progress is not None:
                progress(what, len(done), total)
            done.append(what)

        swept = plan_counts(traces, counts, settings, say)
    if progress is not None:
        progress("done", total, total)
    cluster = settings.cluster
    rows = price_rows(swept.planned, cluster.price_per_device_hour, traces.batch, settings.memory_budget)
    return Advice(rows=rows, cluster=cluster.name, batch_mode=settings.batch_mode,
                  memory_budget=settings.memory_budget, price_per_device_hour=cluster.price_per_device_hour,
                  batch=traces.batch, sweep_s=time.perf_counter() - start, cpu_s=process_cpu_s() - cpu0,
                  notes=tuple(swept.notes))


def process_cpu_s() -> float:
    """CPU seconds of this process and of its finished child processes (the workers)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def price_rows(planned: Sequence[Planned], price: float | None, batch: BatchInfo, budget: float) -> tuple[Row, ...]:
    """Throughput, scaling efficiency (against the fastest mesh of the smallest count, fit
    or not) and cost of each configuration, in sweep order by devices then mesh."""
    timed = [p for p in planned if p.plan is not None]
    base = min((p for p in timed if p.config.devices == min(q.config.devices for q in timed)),
               key=lambda p: p.plan.predicted.total_s, default=None)
    base_rate = base.batch / base.plan.predicted.total_s / base.config.devices if base else None
    rows = []
    for p in sorted(planned, key=lambda p: p.config):
        n, step = p.config.devices, (p.plan.predicted.total_s if p.plan is not None else None)
        per_step = None if step is None or price is None else n * step * price / 3600.0
        tokens = batch.tokens(p.batch // batch.size)
        status = (RowStatus.DOMINATED if p.plan is None else RowStatus.PLANNED if p.fits else RowStatus.OVER_MEMORY)
        rows.append(Row(
            devices=n, mesh_shape=p.config.mesh_shape, stages=p.config.stages, batch=p.batch,
            tokens_per_step=tokens, step_s=step,
            throughput=None if step is None else p.batch / step,
            tokens_per_s=None if step is None or tokens is None else tokens / step,
            efficiency=None if step is None or not base_rate else p.batch / step / n / base_rate,
            fits=p.fits, peak_bytes=None if p.plan is None else peak_bytes(p.plan), memory_budget=budget,
            needs_bytes=p.needs_bytes, cost_per_step=per_step,
            cost_per_million_samples=None if per_step is None else per_step / p.batch * 1e6,
            cost_per_million_tokens=None if per_step is None or tokens is None else per_step / tokens * 1e6,
            status=status, bound_s=p.bound_s, search_s=p.search_s, plan=p.plan,
        ))
    return tuple(rows)
