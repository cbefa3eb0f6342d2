"""A function compiled with a plan: what ``plan.apply(fn)`` returns, and the base of
``shardsearch.auto``'s callable (which finds its plan per signature by searching).

One compiled entry per input signature (shapes, dtypes, pytree structure) and value of
the static arguments, which follow ``jax.jit`` (``apply.calling``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Callable

import jax

from shardsearch.apply.calling import Bound, CallingConvention
from shardsearch.apply.executable import build_jitted, place_args
from shardsearch.apply.mesh import as_auto_mesh, device_mesh, mesh_shape
from shardsearch.apply.plan_io import program_mismatch
from shardsearch.errors import PlanError
from shardsearch.graph import OpGraph
from shardsearch.pipeline.program import step_graph
from shardsearch.trace import abstract_args, retrace

if TYPE_CHECKING:  # the plan module imports this one (plan.apply)
    from shardsearch.plan import Plan

PLAN_MESH_MISMATCH = (
    "this plan was made for mesh {planned} but is being applied on mesh {given}; "
    "plan again for the new mesh (shardsearch.auto / shardsearch.plan)"
)


@dataclasses.dataclass(frozen=True)
class Entry:
    graph: OpGraph
    plan: Plan
    jitted: Callable


def signature(args: tuple, calling: CallingConvention) -> tuple:
    leaves, tree = jax.tree_util.tree_flatten(abstract_args(args, name=calling.name, params=calling.params))
    return tree, tuple((tuple(x.shape), str(x.dtype)) for x in leaves)


class Planned:
    """A callable like ``jax.jit(fn)`` that runs ``fn`` with the shardings of ``plan``.

    The first call for each input signature traces ``fn`` (checking that it is the
    program the plan was made for) and compiles; later calls reuse the result.
    """

    def __init__(self, fn, *, mesh, donate_argnums=(), plan: Plan | None = None, constrain: bool = True,
                 static_argnums=(), static_argnames=(), donate_argnames=()):
        self.fn = fn
        self.mesh = as_auto_mesh(mesh)
        self.calling = CallingConvention.of(fn, static_argnums=static_argnums, static_argnames=static_argnames,
                                            donate_argnums=donate_argnums, donate_argnames=donate_argnames)
        self.donate_argnums = self.calling.donate_argnums
        self._fixed_plan = plan
        self._constrain = constrain
        self._entries: dict[tuple, Entry] = {}
        functools.update_wrapper(self, fn)

    @classmethod
    def from_plan(cls, fn, plan: Plan, *, mesh=None, donate_argnums=(), **calling):
        """``fn`` compiled with ``plan`` (what ``plan.apply(fn)`` returns), on ``mesh`` or
        the plan's mesh shape over ``jax.devices()``; refused when the mesh differs."""
        mesh = device_mesh(plan.mesh) if mesh is None else mesh  # keeps the plan's axis names
        out = cls(fn, mesh=mesh, donate_argnums=donate_argnums, plan=plan, **calling)
        given = mesh_shape(out.mesh)
        if given != plan.mesh:
            raise PlanError(PLAN_MESH_MISMATCH.format(planned=plan.mesh, given=given))
        return out

    def _key(self, bound: Bound) -> tuple:
        return signature(bound.dynamic, self.calling), bound.static_key

    def _entry(self, args: tuple, kwargs: dict | None = None) -> Entry:
        return self._bound_entry(args, kwargs or {})[0]

    def _bound_entry(self, args: tuple, kwargs: dict) -> tuple[Entry, Bound]:
        bound = self.calling.bind(self.fn, args, kwargs)
        key = self._key(bound)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._make_entry(bound.fn, bound.dynamic)
            self._entries[key] = entry
        return entry, bound

    def _find_plan(self, fn: Callable, args: tuple) -> tuple[OpGraph, Plan]:
        """The traced program and the plan for these arguments: the given plan, checked."""
        graph, phash = retrace(fn, args)
        if phash != self._fixed_plan.program_hash:
            raise PlanError(program_mismatch(self._fixed_plan, graph, self.calling.name, phash))
        graph = step_graph(graph, self._fixed_plan)  # the microbatch loop of a plan that has one
        return graph, self._fixed_plan.with_trees(graph.in_tree, graph.out_tree)

    def _make_entry(self, fn: Callable, args: tuple) -> Entry:
        graph, plan = self._find_plan(fn, args)
        if _pipelined(plan):  # stage programs on submeshes, run in schedule order
            from shardsearch.pipeline.step import PipelinedStep

            return Entry(graph, plan, PipelinedStep(graph, plan, self.mesh, constrain=self._constrain))
        jitted = build_jitted(graph, plan, self.mesh, donate_argnums=self.donate_argnums, constrain=self._constrain)
        return Entry(graph, plan, jitted)

    def __call__(self, *args, **kwargs):
        entry, bound = self._bound_entry(args, kwargs)
        if _pipelined(entry.plan):  # the runner places every argument on its stage
            return entry.jitted(*bound.dynamic)
        return entry.jitted(*place_args(bound.dynamic, entry.graph, entry.plan, self.mesh))

    def lower(self, *args, **kwargs) -> jax.stages.Lowered:
        """Lower for these arguments (arrays or ShapeDtypeStructs) without running. A
        pipelined plan gives a ``pipeline.step.PipelineLowered`` (``compile().stages``)."""
        entry, bound = self._bound_entry(args, kwargs)
        return entry.jitted.lower(*abstract_args(bound.dynamic))

    def lower_for_cluster(self, *args, **kwargs) -> jax.stages.Lowered:
        """Lower for the cluster's own GPUs and topology, deviceless (``shardsearch.target``;
        needs ``pip install "shardsearch[gpu-aot]"``): ``.compile()`` is the program XLA's GPU
        compiler makes for the cluster, and its ``memory_analysis()`` the GPU's. The cluster
        is the one planned for (``auto``'s ``cluster=``; for ``plan.apply(fn)``, the plan's preset)."""
        from shardsearch.target import lower_for_cluster

        entry, bound = self._bound_entry(args, kwargs)
        return lower_for_cluster(entry.graph, entry.plan, self._cluster(entry.plan), bound.dynamic,
                                 donate_argnums=self.donate_argnums, constrain=self._constrain)

    def _cluster(self, plan: Plan):
        from cost_model import Cluster

        return Cluster.load(plan.cluster)

    def plan_for(self, *args, **kwargs) -> Plan:
        """The plan for these arguments (arrays or ShapeDtypeStructs), without executing."""
        return self._entry(args, kwargs).plan


def _pipelined(plan) -> bool:
    """Whether ``plan`` runs as stages on submeshes (rather than as one jitted program)."""
    return plan.pipeline is not None and plan.pipeline.num_stages > 1
