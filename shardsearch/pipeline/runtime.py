"""The MPMD pipeline runtime: each stage's programs on its own submesh, in schedule order.

``PipelineRunner(programs, plans, meshes, schedule, ...)`` runs a step cut by
``pipeline.programs.stage_programs``: every ``Program`` compiled once (``jax.jit`` of its
graph with its intra-op plan pinned inside, on its stage's submesh; a per-microbatch
program also adds its partial results into running totals, donated), then per call:

1. the PRE programs (by wave, then stage);
2. the FORWARD / BACKWARD programs, once per microbatch, in the order of
   ``schedule.dispatch_order`` (GPipe or 1F1B); jax dispatches asynchronously, so stages
   on disjoint devices run at once;
3. the POST programs (the optimizer update), by wave then stage.

Values move to the layout and submesh each program reads them in (``transfer.move``):
``jax.device_put`` within a process, a shard_map + ppermute program across processes. A
batch value read one microbatch at a time is laid out once per step as [M, ..., B/M, ...]
on its reader's submesh and indexed per microbatch (no cross-device slicing). Arguments
and results are ordinary jax.Arrays: a parameter comes back on the submesh of the stage
that updates it, and is read from there next step without a copy; a parameter kept on
several stages (a tied embedding) comes back as one array over their submeshes, each
stage's copy on its own devices, of which each stage reads its own (``transfer.Mover.copy_of``).

In a multi-process run every process walks the same sequence and runs the programs of
the stages it holds devices of, and takes part in the transfers into or out of them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from shardsearch.apply.executable import constrained_runner
from shardsearch.apply.mesh import to_partition_spec
from shardsearch.graph import LiteralValue
from shardsearch.pipeline.assignment import StageKind
from shardsearch.pipeline.programs import Form, Key, Program, StagePrograms
from shardsearch.pipeline.states import Reduction
from shardsearch.pipeline.schedule import dispatch_order
from shardsearch.pipeline.stage_search import Schedule
from shardsearch.pipeline.transfer import Mover, local_devices, placeholder

COMBINE = {Reduction.SUM: jnp.add, Reduction.MAX: jnp.maximum, Reduction.MIN: jnp.minimum,
           Reduction.PROD: jnp.multiply, Reduction.AND: jnp.logical_and, Reduction.OR: jnp.logical_or}
IDENTITY = {Reduction.SUM: 0, Reduction.PROD: 1, Reduction.AND: True, Reduction.OR: False}


def _identity(red: Reduction, dtype):
    if red in IDENTITY:
        return IDENTITY[red]
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return -np.inf if red is Reduction.MAX else np.inf
    info = np.iinfo(dtype)
    return info.min if red is Reduction.MAX else info.max


@dataclasses.dataclass
class CompiledProgram:
    program: Program
    plan: Any  # shardsearch.Plan of program.graph on the stage's submesh
    mesh: Mesh
    fn: Any  # the jitted program: (inputs..., running totals...) -> outputs
    in_shardings: list[NamedSharding]
    out_shardings: list[NamedSharding]
    acc: list[int]  # output positions that are partial results (ACC keys)

    def abstract_inputs(self) -> list[jax.ShapeDtypeStruct]:
        infos = [self.program.graph.info(self.program.graph.outputs[k]) for k in self.acc]
        graph = self.program.graph
        ins = [graph.nodes[n].outputs[0] for n in graph.input_nodes] + infos
        shard = self.in_shardings + [self.out_shardings[k] for k in self.acc]
        return [jax.ShapeDtypeStruct(i.shape, i.dtype, sharding=s) for i, s in zip(ins, shard)]


def compile_program(program: Program, plan, mesh: Mesh, *, constrain: bool = True) -> CompiledProgram:
    named = lambda s: NamedSharding(mesh, to_partition_spec(s))  # noqa: E731
    in_sh = [named(s) for s in plan.flat_in_specs]
    out_sh = [named(s) for s in plan.flat_out_specs]
    acc = [k for k, key in enumerate(program.outputs) if key.form is Form.ACC]
    run_flat = constrained_runner(program.graph, plan, mesh, constrain=constrain)
    n_in = len(program.inputs)

    def run(*flat):
        outs = list(run_flat(flat[:n_in]))
        for total, k in zip(flat[n_in:], acc):
            outs[k] = COMBINE[program.reductions[k]](total, outs[k])
        return outs

    fn = jax.jit(run, in_shardings=in_sh + [out_sh[k] for k in acc], out_shardings=out_sh,
                 donate_argnums=tuple(range(n_in, n_in + len(acc))))
    return CompiledProgram(program, plan, mesh, fn, in_sh, out_sh, acc)


class PipelineRunner:
    def __init__(self, programs: StagePrograms, compiled: Sequence[CompiledProgram], meshes: Sequence[Mesh],
                 schedule: Schedule, *, input_nodes: Sequence[int], in_tree, out_tree):
        self.sp, self.compiled, self.meshes, self.schedule = programs, list(compiled), list(meshes), schedule
        self.input_of = {n: i for i, n in enumerate(input_nodes)}
        self.in_tree, self.out_tree = in_tree, out_tree
        by = lambda kind: sorted((c for c in self.compiled if c.program.kind is kind),  # noqa: E731
                                 key=lambda c: (c.program.wave, c.program.stage))
        self.pre, self.post = by(StageKind.PRE), by(StageKind.POST)
        self.micro = {}
        for c in self.compiled:
            if c.program.per_microbatch:
                self.micro.setdefault((c.program.stage, c.program.kind), []).append(c)
        self.order = dispatch_order(schedule, programs.num_stages, programs.num_microbatches)
        self.local = [bool(local_devices(m)) for m in self.meshes]
        self.mover = Mover(self.meshes)

    def __call__(self, *args):
        flat = jax.tree_util.tree_leaves(args)
        step = _Step(self, flat)
        for c in self.pre:
            step.run(c, None)
        for stage, kind, m in self.order:
            for c in self.micro.get((stage, kind), ()):
                step.run(c, m)
        for c in self.post:
            step.run(c, None)
        return jax.tree_util.tree_unflatten(self.out_tree, [step.result(k) for k in self.sp.outputs])


class _Step:
    """The values of one call: per step, per microbatch, and the running totals, each by
    (value, part): ``part`` is the stage holding that part of a split loop's value."""

    def __init__(self, runner: PipelineRunner, args: list):
        self.r, self.args = runner, args
        self.whole: dict = {}
        self.micro: dict = {}
        self.acc: dict = {}
        self.moved: dict = {}  # (value, part, sharding) -> the value there: a whole value moves once per step
        self.stacked: dict = {}

    def run(self, c: CompiledProgram, m: int | None) -> None:
        # Every process fetches the inputs (it takes part in the transfers out of its own
        # stages); only the processes holding the stage's devices run the program.
        ins = [self.fetch(k, m, sh) for k, sh in zip(c.program.inputs, c.in_shardings)]
        if self.r.local[c.program.stage]:
            outs = c.fn(*ins, *[self.total(c, k) for k in c.acc])
        else:
            graph = c.program.graph
            outs = [placeholder(graph.info(r).shape, graph.info(r).dtype, sh)
                    for r, sh in zip(graph.outputs, c.out_shardings)]
        for key, x in zip(c.program.outputs, outs):
            if key.form is Form.WHOLE:
                self.whole[(key.ref, key.part)] = x
            elif key.form is Form.MICRO:
                self.micro[(key.ref, key.part, m)] = x
            else:
                self.acc[(key.ref, key.part)] = x

    def total(self, c: CompiledProgram, k: int):
        key = c.program.outputs[k]
        name = (key.ref, key.part)
        if name not in self.acc:
            info = c.program.graph.info(c.program.graph.outputs[k])
            self.acc[name] = self.r.mover.full(info.shape, info.dtype, _identity(c.program.reductions[k], info.dtype),
                                               c.out_shardings[k])
        return self.acc.pop(name)  # donated into the program

    def value(self, key: Key, m: int | None):
        name = (key.ref, key.part)
        if key.form is Form.WHOLE:
            i = self.r.input_of.get(key.ref.node)
            return self.args[i] if i is not None else self.whole[name]
        if key.form is Form.MICRO:
            return self.micro[(*name, m)]
        if key.form is Form.ACC:
            return self.acc[name]
        if key.form is Form.LAST:
            return self.micro[(*name, self.r.sp.num_microbatches - 1)]
        raise KeyError(key)

    def fetch(self, key: Key, m: int | None, sharding: NamedSharding):
        mover, n_micro = self.r.mover, self.r.sp.num_microbatches
        if key.form is Form.SLICE:
            cache = (key, sharding)
            if cache not in self.stacked:
                whole = self.value(Key(key.ref, Form.WHOLE, part=key.part), None)
                self.stacked[cache] = mover.stack(whole, key.dim, n_micro, sharding)
            return mover.index(self.stacked[cache], m, sharding)
        if key.form is Form.STACK:
            pieces = [self.micro[(key.ref, key.part, i)] for i in range(n_micro)]
            return mover.concatenate(pieces, key.dim, sharding)
        x = self.value(key, m)
        if key.form is Form.WHOLE:
            cache = (key.ref, key.part, sharding)
            if cache not in self.moved:
                layers = self.r.sp.layers
                if key.part is not None and key.ref.node in self.r.sp.copies:  # a stage's copy of an argument
                    self.moved[cache] = mover.copy_of(x, sharding)
                elif key.part is not None and key.ref.node in self.r.input_of:  # a stage's layers of an argument
                    (a, b), dim = layers.ranges[key.part], layers.layer_dims[key.ref.node]
                    self.moved[cache] = mover.layers_of(x, dim, a, b, sharding)
                else:
                    self.moved[cache] = mover.move(x, sharding)
            return self.moved[cache]
        return mover.move(x, sharding)

    def result(self, key):
        if isinstance(key, LiteralValue):
            return key.value
        if key.form is Form.STACK:
            pieces = [self.micro[(key.ref, key.part, i)] for i in range(self.r.sp.num_microbatches)]
            return self.r.mover.concatenate(pieces, key.dim, None)
        copies = self.r.sp.copies.get(key.ref.node)
        if copies and key.part is None:
            if key.ref.node in self.r.input_of:
                return self.value(key, None)  # an argument returned as it came
            return self.r.mover.join_copies([self.value(dataclasses.replace(key, part=s), None) for s in copies])
        layers = self.r.sp.layers
        if layers is not None and key.part is None and key.ref.node in layers.layer_dims:
            if key.ref.node in self.r.input_of:
                return self.value(key, None)  # an argument returned as it came
            parts = [self.value(dataclasses.replace(key, part=s), None)
                     for s in sorted(layers.ranges, key=lambda s: layers.ranges[s][0])]
            return self.r.mover.join_layers(parts, layers.layer_dims[key.ref.node])
        return self.value(key, None)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
