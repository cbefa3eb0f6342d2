"""The plan of a step run as a pipeline: every stage program planned on its submesh.

``plan_stages(graph, phash, split, assignment, M, schedule, stages, ...) -> Plan``: the
intra-op plan of every stage program (``pipeline.programs``) on its stage's submesh
(``search.plan_graph``; identical programs read with the same pins are solved once),
gathered in one ``Plan`` whose ``pipeline`` (``PipelinePlan``) holds the stages (device
positions, submesh shape, layer units, predicted time and memory, their programs'
plans), the assignment of nodes to stages, M and the schedule. The top-level plan's
argument / result layouts are those of the programs that read / make them on their
stage (the owner's first); its prediction is the pipeline's (``stage_search.step_time``
with the transfers between stages, ``boundary_times``, and the once-per-step ones,
``stage_search.once_exposed``). ``stages``: per stage, (device
positions in the mesh's order, submesh shape), e.g. ``pipelined.even_stages``.
``config.pins`` fix the layout each stage program reads a pinned argument in
(``stage_pins``). A per-microbatch program's predicted memory counts the running totals
the runtime adds to it (``runtime.compile_program``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from cost_model import MeshShape
from cost_model.mesh import local_bytes
from shardsearch.pipeline.assignment import StageAssignment, StageKind
from shardsearch.pipeline.microbatch import MicrobatchSplit, micro_graph
from shardsearch.pipeline.plan_data import PipelinePlan, StagePlan
from shardsearch.pipeline.programs import Form, Key, StagePrograms, split_as_assigned, stage_programs
from shardsearch.pipeline.stage_search import Links, Schedule, bubble_fraction, once_exposed, step_time


def _top_specs(sp: StagePrograms, plans: list, graph) -> tuple[list, list]:
    """Each result's layout where it is made, and each argument's where it lives between
    steps: as its next value is made (a parameter, as its update leaves it), else where
    its owner stage reads it (else where any stage does); None where nothing says."""
    input_of = {n: i for i, n in enumerate(graph.input_nodes)}
    arg_spec: dict[int, tuple] = {}
    made: dict = {}
    for p, plan in zip(sp.programs, plans):
        for key, spec in zip(p.inputs, plan.flat_in_specs):
            i = input_of.get(key.ref.node) if key.form is Form.WHOLE else None
            if i is not None and (i not in arg_spec or (p.stage == sp.arg_stage[i] and arg_spec[i][0])):
                arg_spec[i] = (p.stage != sp.arg_stage[i], spec)  # (read off its owner?, layout)
        for key, spec in zip(p.outputs, plan.flat_out_specs):
            made.setdefault((key.ref, key.form), spec)
    ins = [arg_spec[i][1] if i in arg_spec else None for i in range(len(graph.input_nodes))]
    outs = []
    for key in sp.outputs:
        if not isinstance(key, Key):
            outs.append(None)
        elif key.ref.node in input_of:
            outs.append(ins[input_of[key.ref.node]])
        else:
            outs.append(made.get((key.ref, Form.MICRO if key.form in (Form.STACK, Form.LAST) else key.form)))
    for out, arg in zip(outs, graph.output_aliases or ()):
        if arg is not None and out is not None:
            ins[arg] = out
    return ins, outs


def _planning_order(p) -> tuple:
    """Forward programs in stage order, backward ones in reverse, then the once-per-step
    ones: each is planned knowing how the values it reads per microbatch are handed to it."""
    rank = {StageKind.FORWARD: 0, StageKind.BACKWARD: 1, StageKind.POST: 2, StageKind.PRE: 3}[p.kind]
    return (rank, -p.stage if p.kind is StageKind.BACKWARD else p.stage, p.wave)


def _handover_pins(p, handed: dict, mesh: MeshShape) -> tuple:
    """Pins that read each input in the layout an earlier planned program made or read it
    in, where that layout fits this stage's submesh: no resharding between programs (per
    microbatch: activations, residuals, cotangents; per step: parameters, totals)."""
    from jax.sharding import PartitionSpec

    from shardsearch.strategies.specs import fits

    out, seen = [], set()
    for k, key in enumerate(p.inputs):
        spec, path = handed.get(key), p.graph.in_paths[k]
        if spec is None or path in seen or not fits(p.graph.input_info(k).shape, spec, mesh):
            continue
        seen.add(path)
        out.append((path, PartitionSpec(*[tuple(d) if d else None for d in spec])))
    return tuple(out)


def _with_running_totals(plan, program, mesh: MeshShape):
    """``plan`` with its memory as the runtime compiles the program: a per-microbatch
    program also takes the running total of each partial result it makes (donated, the
    sum written over it), one more buffer of each per device."""
    graph = program.graph
    totals = sum(local_bytes(graph.info(ref).shape, graph.info(ref).dtype.itemsize, spec, mesh)
                 for key, ref, spec in zip(program.outputs, graph.outputs, plan.flat_out_specs) if key.form is Form.ACC)
    if not totals:
        return plan
    p = plan.predicted
    return dataclasses.replace(plan, predicted=dataclasses.replace(
        p, peak_bytes=p.peak_bytes + totals, peak_donated_bytes=p.peak_donated_bytes + totals if
        p.peak_donated_bytes else 0.0))


def _structure(graph, phash: str) -> tuple:
    """What makes two programs the same problem: the hash of their operators and edges,
    and what it leaves out (arguments, aliases, regions)."""
    return (phash, graph.input_nodes, graph.output_aliases, repr(graph.regions))


def boundary_times(assignment: StageAssignment, devices: Sequence[Sequence[int]], cluster) -> tuple[list, list]:
    """Per boundary between stages s and s + 1: the seconds its transfers take per
    microbatch (forward and backward, ``stage_search.Links`` as the stage search prices
    them: stage s's devices, at most a node's, sending at once) and once a step (what
    crosses whole: the gradient partials of a parameter kept on several stages, each way
    at once; a transfer goes straight from its source to its reader, so it is counted at
    the first boundary it passes, on the link between those two stages)."""
    links, dpn = Links.of(cluster), cluster.devices_per_node
    per_step = [[0.0, 0.0] for _ in range(max(assignment.num_stages - 1, 0))]  # per boundary: each way
    for t in assignment.transfers:
        if t.kind in (StageKind.PRE, StageKind.POST) and t.src != t.dst:
            lo, hi = min(t.src, t.dst), max(t.src, t.dst)
            same = devices[lo][0] // dpn == devices[hi][-1] // dpn
            per_step[lo][t.src > t.dst] += float(links.once(t.nbytes, min(len(devices[t.src]), dpn), same))
    micro, step = [], []
    for b, (fwd, bwd) in enumerate(assignment.boundary_bytes()):
        same = devices[b][-1] // dpn == devices[b + 1][0] // dpn
        senders = min(len(devices[b]), dpn)
        micro.append(float(links.time(fwd, senders, same) + links.time(bwd, senders, same)) / 2)
        step.append(max(per_step[b]))
    return micro, step


def plan_stages(graph, phash: str, split: MicrobatchSplit, assignment: StageAssignment, num_microbatches: int,
                schedule: Schedule, stages: Sequence[tuple[tuple[int, ...], tuple[int, ...]]], *, mesh: MeshShape,
                cluster, memory_budget, config):
    """The Plan of ``graph`` run as a pipeline (see the module notes)."""
    from shardsearch.pipeline.stage_pins import program_pins  # (jax's PartitionSpec)
    from shardsearch.compare.baselines import argument_roles
    from shardsearch.plan import Plan
    from shardsearch.plan_records import Predicted, SolveStats
    from shardsearch.search import plan_graph
    from shardsearch.trace import program_hash

    split = split_as_assigned(split, assignment)
    micro = micro_graph(graph, split, num_microbatches)
    sp = stage_programs(graph, split, micro, assignment)
    inner = dataclasses.replace(config, pins=(), num_microbatches=1)
    plans: list = [None] * len(sp.programs)
    handed: dict = {}  # value (Key) -> the layout the first program planned with it gives or reads it in
    solved: dict = {}  # identical programs (a pipeline's middle stages, layer for layer) are solved once
    for i in sorted(range(len(sp.programs)), key=lambda i: _planning_order(sp.programs[i])):
        p = sp.programs[i]
        shape = MeshShape(mesh.axis_names, stages[p.stage][1])
        pins = program_pins(config.pins, graph, p, shape) + _handover_pins(p, handed, shape)
        phash_p = program_hash(p.graph)
        key = (_structure(p.graph, phash_p), shape, tuple((p.graph.in_paths.index(k), str(v)) for k, v in pins))
        if key not in solved:
            solved[key] = plan_graph(p.graph, phash_p, mesh=shape, cluster=cluster, memory_budget=memory_budget,
                                     config=dataclasses.replace(inner, pins=pins)).plan
        planned = dataclasses.replace(solved[key], in_paths=p.graph.in_paths, out_paths=p.graph.out_paths)
        plans[i] = _with_running_totals(planned, p, shape)
        for key, spec in [*zip(p.inputs, plans[i].flat_in_specs), *zip(p.outputs, plans[i].flat_out_specs)]:
            handed.setdefault(key, spec)
    s_count = assignment.num_stages
    micro_s = [sum(pl.predicted.total_s for p, pl in zip(sp.programs, plans) if p.stage == s and p.per_microbatch)
               for s in range(s_count)]
    once_s = [sum(pl.predicted.total_s for p, pl in zip(sp.programs, plans) if p.stage == s and not p.per_microbatch)
              for s in range(s_count)]
    stage_s = [t + o / num_microbatches for t, o in zip(micro_s, once_s)]
    per_micro_x, per_step_x = boundary_times(assignment, [devices for devices, _ in stages], cluster)
    total = step_time(stage_s, per_micro_x, num_microbatches) + float(np.sum(
        once_exposed(per_step_x, stage_s[:-1])))  # the step waits for the copies' partials
    sizes = [math.prod(shape) for _, shape in stages]
    stage_plans = tuple(
        StagePlan(devices=tuple(stages[s][0]), shape=tuple(stages[s][1]), layers=tuple(assignment.unit_ranges[s]),
                  micro_s=micro_s[s], step_s=once_s[s],
                  peak_bytes=max([pl.predicted.peak_bytes for p, pl in zip(sp.programs, plans) if p.stage == s]
                                 or [0.0]),
                  programs={p.key: pl for p, pl in zip(sp.programs, plans) if p.stage == s})
        for s in range(s_count))
    pipeline = PipelinePlan(num_microbatches, split.batch_size, split.batch_args, stage_plans, schedule,
                            bubble_fraction(stage_s, sizes, total, num_microbatches),
                            transfers=assignment.boundary_bytes(), assignment=assignment,
                            input_nodes=tuple(graph.input_nodes))
    ins, outs = _top_specs(sp, plans, graph)
    ins = [s if s is not None else ((),) * len(graph.input_info(i).shape) for i, s in enumerate(ins)]
    outs = [s if s is not None else ((),) * len(graph.info(r).shape) for s, r in zip(outs, graph.outputs)]
    stats = [pl.stats for pl in plans]
    plan = Plan(
        mesh=mesh, cluster=cluster.name, in_specs=None, out_specs=None, flat_in_specs=tuple(ins),
        flat_out_specs=tuple(outs), in_paths=graph.in_paths, out_paths=graph.out_paths, node_out_specs={},
        node_operand_specs={}, node_strategy={}, node_primitive={},
        predicted=Predicted(compute_s=sum(pl.predicted.compute_s for pl in plans),
                            comm_s=sum(pl.predicted.comm_s for pl in plans), total_s=total,
                            peak_bytes=max(s.peak_bytes for s in stage_plans)),
        stats=SolveStats(num_nodes=len(graph.nodes), num_variables=sum(s.num_variables for s in stats),
                         num_constraints=sum(s.num_constraints for s in stats),
                         reduced_nodes=sum(s.reduced_nodes for s in stats), solve_s=sum(s.solve_s for s in stats),
                         status="OPTIMAL" if all(s.status == "OPTIMAL" for s in stats) else "FEASIBLE",
                         objective=total, bound=float(np.nan), search_s=sum(s.search_s for s in stats)),
        fallback=(), program_hash=phash,
        in_avals=tuple((graph.input_info(i).shape, graph.input_info(i).dtype.name)
                       for i in range(len(graph.input_nodes))),
        pipeline=pipeline,
        in_roles=argument_roles(graph),
        remat_regions=len(graph.remats),
    )
    return plan.with_trees(graph.in_tree, graph.out_tree)
