"""The public entry points: ``auto`` and ``plan``."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import jax
from jax.sharding import PartitionSpec

from cost_model import Cluster
from shardsearch.apply import as_auto_mesh, build_jitted, mesh_shape, place_args
from shardsearch.apply.calling import Bound, CallingConvention
from shardsearch.apply.mesh import device_mesh
from shardsearch.apply.plan_io import program_mismatch
from shardsearch.config import SearchConfig
from shardsearch.errors import PlanError
from shardsearch.graph import OpGraph
from shardsearch.plan import Plan
from shardsearch.runtime.distributed import agree_on_plan
from shardsearch.search import retrace, search
from shardsearch.trace import abstract_args

PLAN_MESH_MISMATCH = (
    "this plan was made for mesh {planned} but is being applied on mesh {given}; "
    "plan again for the new mesh (shardsearch.auto / shardsearch.plan)"
)


@dataclasses.dataclass(frozen=True)
class _Entry:
    graph: OpGraph
    plan: Plan
    jitted: Callable


def _signature(args: tuple, calling: CallingConvention) -> tuple:
    leaves, tree = jax.tree_util.tree_flatten(abstract_args(args, name=calling.name, params=calling.params))
    return tree, tuple((tuple(x.shape), str(x.dtype)) for x in leaves)


class AutoSharded:
    """A callable like ``jax.jit(fn)`` whose sharding shardsearch chose.

    The first call for each input signature (and each value of the static arguments)
    traces, searches and compiles; later calls with the same signature reuse the result.
    Static and donated arguments follow ``jax.jit``: ``static_argnums`` /
    ``static_argnames`` (hashable values, one plan each), ``donate_argnums`` /
    ``donate_argnames``.
    """

    def __init__(self, fn, *, mesh, cluster=None, memory_budget=None, donate_argnums=(), config=None, plan=None,
                 static_argnums=(), static_argnames=(), donate_argnames=()):
        self.fn = fn
        self.mesh = as_auto_mesh(mesh)
        self.cluster = Cluster.load(cluster)
        self.memory_budget = self.cluster.memory_bytes if memory_budget is None else float(memory_budget)
        self.calling = CallingConvention.of(fn, static_argnums=static_argnums, static_argnames=static_argnames,
                                            donate_argnums=donate_argnums, donate_argnames=donate_argnames)
        self.donate_argnums = self.calling.donate_argnums
        self.config = config or SearchConfig()
        self._fixed_plan = plan
        self._entries: dict[tuple, _Entry] = {}
        functools.update_wrapper(self, fn)

    @classmethod
    def from_plan(cls, fn, plan: Plan, *, mesh=None, donate_argnums=(), **calling) -> "AutoSharded":
        mesh = device_mesh(plan.mesh) if mesh is None else mesh  # keeps the plan's axis names
        out = cls(fn, mesh=mesh, donate_argnums=donate_argnums, plan=plan, **calling)
        given = mesh_shape(out.mesh)
        if given != plan.mesh:
            raise PlanError(PLAN_MESH_MISMATCH.format(planned=plan.mesh, given=given))
        return out

    def _entry(self, args: tuple, kwargs: dict | None = None) -> _Entry:
        return self._bound_entry(args, kwargs or {})[0]

    def _bound_entry(self, args: tuple, kwargs: dict) -> tuple[_Entry, Bound]:
        bound = self.calling.bind(self.fn, args, kwargs)
        key = (_signature(bound.dynamic, self.calling), bound.static_key, self.config.pins)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._make_entry(bound.fn, bound.dynamic)
            self._entries[key] = entry
        return entry, bound

    def _make_entry(self, fn: Callable, args: tuple) -> _Entry:
        if self._fixed_plan is not None:
            graph, phash = retrace(fn, args)
            if phash != self._fixed_plan.program_hash:
                name = self.calling.name
                raise PlanError(program_mismatch(self._fixed_plan, graph, name, phash))
            plan = self._fixed_plan.with_trees(graph.in_tree, graph.out_tree)
        else:
            found = search(
                fn,
                args,
                mesh=mesh_shape(self.mesh),
                cluster=self.cluster,
                memory_budget=self.memory_budget,
                config=self.config,
            )
            graph, plan = found.graph, found.plan
            plan = agree_on_plan(plan, graph.in_tree, graph.out_tree)  # a no-op with one process
        jitted = build_jitted(
            graph, plan, self.mesh, donate_argnums=self.donate_argnums, constrain=self.config.constrain_intermediates
        )
        return _Entry(graph, plan, jitted)

    def __call__(self, *args, **kwargs):
        entry, bound = self._bound_entry(args, kwargs)
        return entry.jitted(*place_args(bound.dynamic, entry.graph, entry.plan, self.mesh))

    def lower(self, *args, **kwargs) -> jax.stages.Lowered:
        """Lower for these arguments (arrays or ShapeDtypeStructs) without running."""
        entry, bound = self._bound_entry(args, kwargs)
        return entry.jitted.lower(*abstract_args(bound.dynamic))

    def plan_for(self, *args, **kwargs) -> Plan:
        """The plan for these arguments (arrays or ShapeDtypeStructs), without executing."""
        return self._entry(args, kwargs).plan


def auto(
    fn: Callable,
    *,
    mesh,
    cluster: Cluster | str | None = None,
    memory_budget: float | None = None,
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
    ``memory_budget``: bytes per device; ``None`` means the cluster's device memory.
    ``pins``: argument layouts to keep, ``{path: PartitionSpec}``; a path is the
    ``jax.tree_util.keystr`` of a leaf in the argument tuple (``"[0]['embed']['wte']"``)
    or a regex fully matching such paths. The search chooses the rest around them.
    ``static_argnums`` / ``static_argnames``, ``donate_argnums`` / ``donate_argnames``: as
    for ``jax.jit`` (a static argument is hashable and gets a plan per value; a static
    position stays in argument paths as an empty ``None``, so ``args[1]`` is the second
    argument whether or not the first is static).
    ``options``: fields of ``shardsearch.SearchConfig`` (``time_limit_s``, ``verbose``,
    ``cache`` (reuse plans from the on-disk plan cache), ...).
    """
    config = SearchConfig.from_options(_with_pins(options, pins))
    return AutoSharded(
        fn, mesh=mesh, cluster=cluster, memory_budget=memory_budget, donate_argnums=donate_argnums, config=config,
        static_argnums=static_argnums, static_argnames=static_argnames, donate_argnames=donate_argnames,
    )


def _with_pins(options: dict, pins) -> dict:
    return options if pins is None else {**options, "pins": pins}


def plan(fn: Callable, *args, mesh, cluster=None, memory_budget=None, pins=None, static_argnums=(),
         **options) -> Plan:
    """Search a plan for ``fn(*args)`` without compiling or running it.

    Needs no devices: ``mesh`` may be a shape tuple (e.g. ``(8, 8)`` on a laptop),
    a ``jax.sharding.Mesh`` or an ``AbstractMesh``; ``args`` may be ShapeDtypeStructs.
    ``pins``, ``static_argnums`` and ``options`` as for ``shardsearch.auto``.
    """
    config = SearchConfig.from_options(_with_pins(options, pins))
    cluster = Cluster.load(cluster)
    budget = cluster.memory_bytes if memory_budget is None else float(memory_budget)
    bound = CallingConvention.of(fn, static_argnums=static_argnums).bind(fn, args, {})
    found = search(bound.fn, bound.dynamic, mesh=mesh_shape(mesh), cluster=cluster, memory_budget=budget,
                   config=config)
    return found.plan
