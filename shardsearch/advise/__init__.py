"""How many devices, which mesh, at what cost, and how to share a cluster between jobs.

``advise`` sweeps device counts and mesh shapes for one training step (``sweep.py``)
and answers with ``Advice`` (``advice.py``); ``allocate`` splits a cluster between jobs
from their advice (``allocate.py``); ``simulate`` replays a job trace against
allocation policies (``simulate.py``).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence

from cost_model import Cluster
from shardsearch.advise.advice import Advice, Row, RowStatus
from shardsearch.advise.allocate import Allocation, Job, Share, allocate
from shardsearch.advise.batch import BatchMode
from shardsearch.advise.configs import Config, check_counts, default_counts, mesh_shapes
from shardsearch.advise.sweep import SweepSettings, run_sweep
from shardsearch.fit.budget import parse_budget
from shardsearch.config import SearchConfig

__all__ = ["Advice", "Allocation", "BatchMode", "Config", "Job", "Row", "RowStatus", "Share", "advise", "allocate",
           "default_counts", "mesh_shapes"]


def advise(
    fn: Callable,
    *args,
    cluster: Cluster | str | None = None,
    devices: Sequence[int] | None = None,
    max_devices: int | None = None,
    batch_mode: str | BatchMode = "global",
    memory_budget: float | str | None = None,
    price_per_device_hour: float | None = None,
    static_argnums: Sequence[int] | int = (),
    prune: bool = True,
    progress: bool | None = None,
    workers: int = 1,
    target: str | None = None,
    stages: Sequence[int] = (),
    **options,
) -> Advice:
    """Plan ``fn(*args)`` on every device count in ``devices`` and every mesh shape of
    each that lines up with the cluster's nodes; returns ``Advice`` (``.rows``,
    ``.best(goal)``, ``.plot(path)``, ``print(advice)``).

    ``devices``: counts to sweep (default: 1, 2, 4, ... up to ``max_devices`` or what the
    cluster holds). ``batch_mode``: "global" keeps the batch passed as the global batch
    at every count (strong scaling); "per_device" takes it as one device's batch and runs
    ``n`` times it on ``n`` devices (weak scaling). ``memory_budget``: bytes per device
    (default: the cluster's memory). ``price_per_device_hour``: overrides the cluster
    profile's price. ``prune``: skip meshes the solver proves slower than a fitting mesh
    with as many devices (rows marked "dominated"). ``progress``: a progress bar (default:
    on a terminal). ``workers``: processes to share the device counts between (spawned;
    each traces the step itself, so the step must pickle, or be named by ``target``, a
    ``MODULE:FUNCTION`` returning ``(fn, args)`` as the command line takes it).
    ``stages``: pipeline stage counts; each adds, for every count of at least that many
    devices, the row of ``ss.plan(..., pipeline=S)`` (``advise/stages.py``; several times a
    mesh's planning time each).
    ``options``: as for ``shardsearch.plan`` (``time_limit_s``, ``cache``, ...), except
    that ``compare`` defaults to False: a row's plan is the one ``ss.plan`` finds, without
    the recipes priced beside it (``plan.alternatives()`` is empty; three more solves per
    row, a third of a sweep's time); pass ``compare=True`` to have them.
    Raises ``AdviseError`` for a count the cluster cannot hold, a global batch no count
    divides, and a model that fits on no count (naming the least memory it needs; the
    error's ``advice`` holds the table).
    """
    import dataclasses

    from shardsearch.apply.calling import CallingConvention

    cluster = Cluster.load(cluster)
    if price_per_device_hour is not None:
        cluster = dataclasses.replace(cluster, price_per_device_hour=price_per_device_hour)
    counts = check_counts(cluster, devices) if devices is not None else default_counts(cluster, max_devices)
    budget = parse_budget(memory_budget, cluster.memory_bytes)
    bound = CallingConvention.of(fn, static_argnums=static_argnums).bind(fn, args, {})
    with _progress_bar(progress) as report:
        search_config = SearchConfig.from_options({"compare": False, **options})
        settings = SweepSettings(cluster, BatchMode.of(batch_mode), budget, search_config, prune,
                                 stages=tuple(int(s) for s in stages))
        advice = run_sweep(bound.fn, bound.dynamic, counts=counts, settings=settings, workers=workers,
                           target=target, progress=report)
    if not advice.usable():
        raise advice.nothing_fits()  # the error carries the table: err.advice
    return advice


@contextlib.contextmanager
def _progress_bar(show: bool | None):
    """A rich progress bar on stderr (by default only on a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if show is False or (show is None and not console.is_terminal):
        yield None
        return
    with Progress(TextColumn("shardsearch advise: {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("tracing", total=None)

        def report(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        yield report
