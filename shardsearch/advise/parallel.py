"""The sweep over several processes: the device counts are shared between spawned worker
processes, each tracing the step itself and planning its counts as the serial sweep does
(the cutoff works within a count, so a count never spans workers).

Spawned, not forked: a forked child inherits jax's and HiGHS's thread pools without their
threads. A worker gets the step either as a ``MODULE:FUNCTION`` target it imports (the
command line's) or pickled (``cloudpickle`` when installed, for closures; else ``pickle``,
which takes module-level functions).
"""

from __future__ import annotations

import pickle
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Sequence

from shardsearch.advise.configs import mesh_shapes
from shardsearch.errors import AdviseError

NOT_PICKLABLE = ("workers={workers} sends the train step to worker processes, but it does not pickle ({why}). "
                 "Pass workers=1, install cloudpickle (it pickles closures), or run `shardsearch advise "
                 "MODULE:FUNCTION --workers {workers}`")


def _dumps(obj) -> bytes:
    try:
        import cloudpickle
    except ImportError:
        return pickle.dumps(obj)
    return cloudpickle.dumps(obj)


def balance(counts: Sequence[int], cluster, workers: int) -> list[list[int]]:
    """Counts per worker, the ones with most meshes first, each to the least loaded."""
    groups: list[list[int]] = [[] for _ in range(workers)]
    load = [0] * workers
    for n in sorted(counts, key=lambda n: (-len(mesh_shapes(n, cluster)), -n)):
        w = load.index(min(load))
        groups[w].append(n)
        load[w] += len(mesh_shapes(n, cluster))
    return [sorted(g) for g in groups if g]


def _work(step: tuple[str, object], counts: list[int], settings) -> list:
    """In a worker: trace the step, plan its counts."""
    from shardsearch.advise.sweep import _Traces, plan_counts
    from shardsearch.trace import abstract_args

    kind, what = step
    if kind == "target":
        from shardsearch.cli import _load_target

        fn, args = _load_target(what)
    else:
        fn, args = pickle.loads(what)
    return plan_counts(_Traces(fn, abstract_args(args)), counts, settings)  # a Swept


def plan_in_workers(fn: Callable, args: Sequence, counts: Sequence[int], settings, *, workers: int,
                    target: str | None, progress: Callable[[str, int, int], None] | None, total: int):
    from shardsearch.advise.sweep import Swept

    if target is not None:
        step = ("target", target)
    else:
        try:
            step = ("pickled", _dumps((fn, tuple(args))))
        except Exception as err:  # pickling can fail in many ways; all mean the same here
            raise AdviseError(NOT_PICKLABLE.format(workers=workers, why=f"{type(err).__name__}: {err}")) from err
    import multiprocessing

    groups = balance(counts, settings.cluster, workers)
    swept, done = Swept([], []), 0
    with ProcessPoolExecutor(len(groups), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_work, step, group, settings): group for group in groups}
        if progress is not None:
            progress(f"{len(groups)} workers planning counts {[g for g in groups]}", 0, total)
        for future in as_completed(futures):
            got = future.result()
            swept.planned += got.planned
            swept.notes += got.notes
            done += sum(settings.configs_of(n) for n in futures[future])
            if progress is not None:
                progress(f"counts {futures[future]} planned", done, total)
    swept.planned.sort(key=lambda p: p.config)
    swept.notes.sort()
    return swept
