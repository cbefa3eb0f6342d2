"""What a pipelined plan compiles to: a callable like ``jax.jit(fn)``, and its lowering.

``PipelinedStep(graph, plan, mesh)`` builds each stage's submesh from the plan's device
positions (device i of ``mesh`` in its order), compiles every stage program with its
plan and runs steps with ``pipeline.runtime.PipelineRunner``.

``step.lower(*args)`` -> ``PipelineLowered``; its ``compile()`` -> ``PipelineCompiled``:
``stages[s]`` with ``devices`` (global jax device ids), ``per_microbatch`` (the
``jax.stages.Compiled`` forward and backward programs, run once per microbatch) and
``per_step`` (PRE and POST programs, once per step), and ``programs``: the same
``Compiled`` objects by their plan key (``"forward"``, ``"backward"``, ``"pre"``,
``"post.1"``: ``Program.key``, as in ``StagePlan.programs``), so that a judge can tell
a forward from a backward and match each program to its plan; ``num_microbatches``, ``schedule``
and ``transfers``: per boundary between stages s and s + 1, the bytes sent across it per
microbatch, (forward, backward); ``step_transfers``: the values moved between stages once per
step (``step_transfer_bytes``: a parameter's gradient partials, each to the other stages
that keep a copy of it, a tied embedding's, after the loop).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from shardsearch.apply.mesh import to_partition_spec

from shardsearch.pipeline.assignment import StageKind
from shardsearch.pipeline.pipelined import programs_of
from shardsearch.pipeline.plan_data import PipelinePlan
from shardsearch.pipeline.programs import Form, Key, StagePrograms
from shardsearch.pipeline.runtime import PipelineRunner, compile_program
from shardsearch.pipeline.transfer import STAGES, _union_sharding


def stage_meshes(pipeline: PipelinePlan, mesh: Mesh) -> list[Mesh]:
    flat = list(mesh.devices.flat)
    names = mesh.axis_names
    return [Mesh(np.array([flat[i] for i in st.devices]).reshape(st.shape), names,
                 axis_types=(AxisType.Auto,) * len(names)) for st in pipeline.stages]


def arg_shardings(plan, mesh: Mesh) -> list[NamedSharding]:
    """Where each argument of a pipelined plan lives between steps: on its owner stage's
    submesh, or, layer-stacked for a split loop, over the submeshes of the stages holding
    its layers (one array, each stage's layers on its own devices), or, kept on several
    stages (a tied embedding), over theirs (replicated on the stages' axis)."""
    p = plan.pipeline
    meshes = stage_meshes(p, mesh)
    a = p.assignment
    ranges = {s: r for s, r in enumerate(a.loop_splits[0].iterations) if r[1] > r[0]} if a.loop_splits else {}
    out = []
    for i, spec in enumerate(plan.flat_in_specs):
        part = NamedSharding(meshes[a.owner(i) or 0], to_partition_spec(spec))
        node = p.input_nodes[i] if p.input_nodes else None
        copies = a.copies.get(node, ()) if node is not None else ()
        if len({meshes[s].devices.shape for s in copies}) == 1:
            union = Mesh(np.stack([meshes[s].devices for s in copies]), (STAGES, *mesh.axis_names),
                         axis_types=(AxisType.Auto,) * (1 + len(mesh.axis_names)))
            part = NamedSharding(union, to_partition_spec(spec))
        elif node in a.layer_dims and ranges:
            stages = sorted(ranges, key=lambda s: ranges[s][0])
            joined = _union_sharding([NamedSharding(meshes[s], to_partition_spec(spec)) for s in stages],
                                     a.layer_dims[node], len(spec))
            part = joined or NamedSharding(meshes[stages[0]], PartitionSpec())
        out.append(part)
    return out


def boundary_bytes(sp: StagePrograms) -> tuple[tuple[int, int], ...]:
    """Per boundary: bytes per microbatch crossing it forward and backward (a value sent
    past several stages crosses each boundary on its way)."""
    made = {}
    for p in sp.programs:
        if p.per_microbatch:
            for key in p.outputs:
                made.setdefault(key.ref, p)
    out = [[0, 0] for _ in range(sp.num_stages - 1)]
    sent = set()
    for p in sp.programs:
        if not p.per_microbatch:
            continue
        for n, key in zip(p.graph.input_nodes, p.inputs):
            src = made.get(key.ref) if key.form is Form.MICRO else None
            if src is None or src.stage == p.stage or (key.ref, p.stage) in sent:
                continue
            sent.add((key.ref, p.stage))
            for b in range(min(src.stage, p.stage), max(src.stage, p.stage)):
                out[b][src.stage > p.stage] += p.graph.nodes[n].outputs[0].nbytes
    return tuple((f, b) for f, b in out)


def step_transfer_bytes(sp: StagePrograms, input_nodes) -> tuple[tuple[int, int, int, bool, bool], ...]:
    """(source stage, reading stage, bytes, after the loop, an argument) of each value that moves between
    stages once per step: an argument read on a stage other than its own, a PRE or POST
    result, a running total (ACC), a per-microbatch value read whole after the loop (LAST,
    STACK) or a value sliced per microbatch (SLICE) made on another stage; not a batch
    input, which the host feeds to every stage that reads it, as it feeds a flat plan. ``after the
    loop``: a POST program reads it (else PRE or per-microbatch work waits for it); ``an
    argument``: it can leave when the step starts (else when its source program ends). Each
    value is counted once per reading stage (the runtime moves it once per step); a stage's
    own layers of a layer-stacked argument are a view, not a move."""
    made = {}
    for p in sp.programs:
        for key in p.outputs:
            made.setdefault(key, p.stage)
    arg = {n: i for i, n in enumerate(input_nodes)}
    out, seen = [], set()
    for p in sp.programs:
        for n, key in zip(p.graph.input_nodes, p.inputs):
            if key.form is Form.MICRO:
                continue  # per microbatch: ``boundary_bytes``
            if key.form is Form.SLICE and key.ref.node in arg:
                continue  # a batch input: fed from the host to each stage that reads it, as to a flat plan
            if key.form is Form.WHOLE and key.ref.node in arg:
                if key.part is not None and (key.part == p.stage or key.ref.node not in sp.copies):
                    continue  # its own layers of a layer-stacked argument, or its own copy: a view
                src = sp.arg_stage[arg[key.ref.node]] if key.part is None else key.part
            else:
                source = {Form.LAST: Form.MICRO, Form.STACK: Form.MICRO, Form.SLICE: Form.WHOLE}.get(key.form, key.form)
                src = made.get(Key(key.ref, source, part=key.part))
            if src is None or src == p.stage or (key.ref, key.part, key.form, p.stage) in seen:
                continue
            seen.add((key.ref, key.part, key.form, p.stage))
            nbytes = p.graph.nodes[n].outputs[0].nbytes * (sp.num_microbatches if key.form is Form.SLICE else 1)
            out.append((src, p.stage, int(nbytes), p.kind is StageKind.POST, key.ref.node in arg))
    return tuple(out)


class PipelinedStep:
    def __init__(self, graph, plan, mesh: Mesh, *, constrain: bool = True):
        self.plan, self.pipeline = plan, plan.pipeline
        self.programs = programs_of(graph, self.pipeline)
        self.meshes = stage_meshes(self.pipeline, mesh)
        compiled = []
        for p in self.programs.programs:
            compiled.append(compile_program(p, self.pipeline.stages[p.stage].programs[p.key], self.meshes[p.stage],
                                            constrain=constrain))
        self.compiled = compiled
        self.input_nodes = tuple(graph.input_nodes)
        self.runner = PipelineRunner(self.programs, compiled, self.meshes, self.pipeline.schedule,
                                     input_nodes=graph.input_nodes, in_tree=graph.in_tree, out_tree=graph.out_tree)

    def __call__(self, *args):
        return self.runner(*args)

    def lower(self, *args) -> "PipelineLowered":
        return PipelineLowered(self)


@dataclasses.dataclass(frozen=True)
class CompiledStage:
    devices: tuple[int, ...]  # global jax device ids of the stage's submesh
    per_microbatch: list  # jax.stages.Compiled: forward and backward, once per microbatch
    per_step: list  # jax.stages.Compiled: before and after the microbatch loop, once per step
    programs: dict = dataclasses.field(default_factory=dict)  # Program.key -> the same Compiled


@dataclasses.dataclass(frozen=True)
class PipelineCompiled:
    stages: tuple[CompiledStage, ...]
    num_microbatches: int
    schedule: str
    transfers: tuple[tuple[int, int], ...]
    step_transfers: tuple[tuple[int, int, int, bool, bool], ...] = ()  # once a step: step_transfer_bytes


class PipelineLowered:
    """The lowering of a pipelined step: ``compile()`` compiles every stage's programs."""

    def __init__(self, step: PipelinedStep):
        self.step = step

    def compile(self, compiler_options: dict | None = None) -> PipelineCompiled:
        """``compiler_options``: passed to every program's ``Lowered.compile``."""
        step = self.step
        stages = []
        for s, mesh in enumerate(step.meshes):
            per_micro, per_step, by_key = [], [], {}
            for c in step.compiled:
                if c.program.stage != s:
                    continue
                compiled = c.fn.lower(*c.abstract_inputs()).compile(compiler_options)
                (per_micro if c.program.kind in (StageKind.FORWARD, StageKind.BACKWARD) else per_step).append(compiled)
                by_key[c.program.key] = compiled
            stages.append(CompiledStage(tuple(int(d.id) for d in mesh.devices.flat), per_micro, per_step, by_key))
        return PipelineCompiled(tuple(stages), step.pipeline.num_microbatches, step.pipeline.schedule.value,
                                boundary_bytes(step.programs), step_transfer_bytes(step.programs, step.input_nodes))
