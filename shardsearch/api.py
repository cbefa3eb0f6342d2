"""The public entry points: ``auto`` and ``plan``."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from jax.sharding import PartitionSpec

from cost_model import Cluster
from shardsearch.apply.calling import Bound, CallingConvention
from shardsearch.apply.mesh import mesh_shape
from shardsearch.apply.planned import Planned
from shardsearch.config import SearchConfig
from shardsearch.fit import parse_budget
from shardsearch.graph import OpGraph
from shardsearch.plan import Plan
from shardsearch.runtime.distributed import agree_on_plan
from shardsearch.search import search

class AutoSharded(Planned):
    """A callable like ``jax.jit(fn)`` whose sharding shardsearch chose.

    The first call for each input signature (and each value of the static arguments)
    traces, searches and compiles; later calls with the same signature reuse the result.
    Static and donated arguments follow ``jax.jit``: ``static_argnums`` /
    ``static_argnames`` (hashable values, one plan each), ``donate_argnums`` /
    ``donate_argnames``.
    """

    def __init__(self, fn, *, mesh, cluster=None, memory_budget=None, donate_argnums=(), config=None, plan=None,
                 static_argnums=(), static_argnames=(), donate_argnames=()):
        self.cluster = Cluster.load(cluster)
        self.memory_budget = parse_budget(memory_budget, self.cluster.memory_bytes)
        self.config = config or SearchConfig()
        super().__init__(fn, mesh=mesh, donate_argnums=donate_argnums, plan=plan,
                         constrain=self.config.constrain_intermediates, static_argnums=static_argnums,
                         static_argnames=static_argnames, donate_argnames=donate_argnames)

    def _key(self, bound: Bound) -> tuple:
        return (*super()._key(bound), self.config.pins)

    def _cluster(self, plan: Plan) -> Cluster:
        return self.cluster

    def _find_plan(self, fn: Callable, args: tuple) -> tuple[OpGraph, Plan]:
        if self._fixed_plan is not None:
            return super()._find_plan(fn, args)
        found = search(
            fn,
            args,
            mesh=mesh_shape(self.mesh),
            cluster=self.cluster,
            memory_budget=self.memory_budget,
            config=self.config,
            donate_argnums=self.donate_argnums,
        )
        # all processes run one plan (a no-op with one process)
        return found.graph, agree_on_plan(found.plan, found.graph.in_tree, found.graph.out_tree)


def auto(
    fn: Callable,
    *,
    mesh,
    cluster: Cluster | str | None = None,
    memory_budget: float | str | None = None,
    donate_argnums: Sequence[int] | int = (),
    pins: Mapping[str, PartitionSpec] | Sequence[tuple[str, PartitionSpec]] | None = None,
    static_argnums: Sequence[int] | int = (),
    static_argnames: Sequence[str] | str = (),
    donate_argnames: Sequence[str] | str = (),
    **options: Any,
) -> AutoSharded:
    """Automatically shard ``fn`` over ``mesh``; returns a callable like ``jax.jit(fn)``.

    ``mesh``: a ``jax.sharding.Mesh`` (any axis types) or a shape tuple such as ``(2, 4)``.
    ``cluster``: the hardware to optimize for: a ``cost_model.Cluster``, a preset name
    (``cost_model.preset_names()``) or a profile JSON path; default ``"h100-8"``.
    ``memory_budget``: per device: bytes, or a string ("8GB", "7.5GiB", "80%" of the
    cluster's device memory); ``None`` means the cluster's device memory. The plan's peak
    (with the donated arguments' buffers reused) fits it, or MemoryBudgetError says what
    the least is and what would bring it down.
    ``pins``: argument layouts to keep, ``{path: PartitionSpec}``; a path is the
    ``jax.tree_util.keystr`` of a leaf in the argument tuple (``"[0]['embed']['wte']"``)
    or a regex fully matching such paths. The search chooses the rest around them.
    ``static_argnums`` / ``static_argnames``, ``donate_argnums`` / ``donate_argnames``: as
    for ``jax.jit`` (a static argument is hashable and gets a plan per value; a static
    position stays in argument paths as an empty ``None``, so ``args[1]`` is the second
    argument whether or not the first is static).
    ``options``: fields of ``shardsearch.SearchConfig`` (``time_limit_s``, ``verbose``,
    ``cache`` (reuse plans from the on-disk plan cache), ``pipeline`` ("auto", the
    default: pipeline stages where the cost model predicts them 10% faster, with the
    reason in ``plan.pipeline_why``; None: never; S: that many stages),
    ``num_microbatches``, ``schedule``, ...).
    """
    config = SearchConfig.from_options(_with_pins(options, pins))
    return AutoSharded(
        fn, mesh=mesh, cluster=cluster, memory_budget=memory_budget, donate_argnums=donate_argnums, config=config,
        static_argnums=static_argnums, static_argnames=static_argnames, donate_argnames=donate_argnames,
    )


def _with_pins(options: dict, pins) -> dict:
    return options if pins is None else {**options, "pins": pins}


def plan(fn: Callable, *args, mesh, cluster=None, memory_budget=None, pins=None, static_argnums=(),
         donate_argnums: Sequence[int] | int = (), **options) -> Plan:
    """Search a plan for ``fn(*args)`` without compiling or running it.

    Needs no devices: ``mesh`` may be a shape tuple (e.g. ``(8, 8)`` on a laptop),
    a ``jax.sharding.Mesh`` or an ``AbstractMesh``; ``args`` may be ShapeDtypeStructs.
    ``pins``, ``static_argnums`` and ``options`` as for ``shardsearch.auto``;
    ``donate_argnums``: the arguments the caller will donate (``plan.apply(fn,
    donate_argnums=...)``), so the budget is checked against that step's peak.
    """
    config = SearchConfig.from_options(_with_pins(options, pins))
    cluster = Cluster.load(cluster)
    budget = parse_budget(memory_budget, cluster.memory_bytes)
    bound = CallingConvention.of(fn, static_argnums=static_argnums).bind(fn, args, {})
    donate = (donate_argnums,) if isinstance(donate_argnums, int) else tuple(donate_argnums)
    found = search(bound.fn, bound.dynamic, mesh=mesh_shape(mesh), cluster=cluster, memory_budget=budget,
                   config=config, donate_argnums=donate)
    return found.plan
