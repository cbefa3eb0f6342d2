"""Whether to pipeline a step, and how: the search's stage decision, with its reason.

``choose_pipeline(graph, whole_s=..., mesh=..., cluster=..., memory_budget=..., config=...)
-> PipelineDecision``. ``whole_s`` is the predicted step of the best plan over the whole
mesh (the ordinary intra-op search). The step is cut into layer units (``layers.py``),
units are priced on submeshes by the intra-op planner (``stage_costs.py``), and the stage
DP (``stage_search.py``) picks stages, submeshes and M for each candidate M. The step is
pipelined when the best pipeline is predicted at least ``MIN_GAIN`` faster than
``whole_s`` (``config.pipeline == "auto"``), or always with a pinned stage count
(``config.pipeline = S``). Either way ``why`` says it in words for ``plan.summary()``.

"auto" is the default, so it first declines without pricing a stage where no pipeline
can pay: one device; one node with fast links (``FAST_LINKS``), or one node where the
whole-mesh plan spends under ``MIN_GAIN`` of its step communicating; a step that cannot
be split into microbatches; a batch no count divides; or when the least step any
pipeline could have, from its operators' rooflines alone (``floor.py``), is already
within ``MIN_GAIN`` of ``whole_s``; or fewer than two layer units.

Options (``SearchConfig``): ``pipeline`` ("auto", None: never, or a stage count),
``num_microbatches`` (an int > 1 pins M; otherwise M is searched over ``MICROBATCH_COUNTS``
that divide the batch), ``schedule`` (``Schedule``).
"""

from __future__ import annotations

import dataclasses
import time

from cost_model import Cluster, MeshShape
from shardsearch.config import SearchConfig
from shardsearch.errors import MicrobatchError, StageError
from shardsearch.graph import OpGraph
from shardsearch.pipeline.assignment import StageAssignment
from shardsearch.pipeline.floor import pipeline_floor
from shardsearch.pipeline.layers import LayerUnits, layer_units
from shardsearch.pipeline.microbatch import MicrobatchSplit, split_microbatches
from shardsearch.pipeline.stage_costs import UnitPricer, single_stage, submesh_shape, unit_cut_bytes, unit_step_bytes
from shardsearch.pipeline.stage_search import Links, Schedule, StageChoice, search_stages, submesh_choices
from shardsearch.pipeline.stages import assign_stages, unit_map

MIN_GAIN = 0.10  # "auto" pipelines only when predicted at least this much faster than the whole-mesh plan
# "auto" does not price stages on one node whose links carry at least this share of the
# device's memory bandwidth (every preset's node: NVLink, TPU ICI; not PCIe alone)
FAST_LINKS = 0.10
# the microbatch counts tried (those the batch allows): each costs a pricing of the units
# at that microbatch size and a stage DP
MICROBATCH_COUNTS = (4, 8, 16)


@dataclasses.dataclass(frozen=True)
class PipelineDecision:
    why: str  # in words, for plan.summary()
    whole_s: float  # the whole-mesh plan's predicted step
    choice: StageChoice | None = None  # the pipeline, when it is used
    assignment: StageAssignment | None = None
    split: MicrobatchSplit | None = None
    units: LayerUnits | None = None
    best: StageChoice | None = None  # the best pipeline found, used or not
    search_s: float = 0.0  # all of it: pricing units and the stage DP
    dp_s: float = 0.0  # the stage DP alone
    solves: int = 0  # intra-op solves of units
    reason: str = ""  # what makes the pipeline pay, in words

    @property
    def pipelined(self) -> bool:
        return self.choice is not None


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


def describe(choice: StageChoice) -> str:
    shapes = " / ".join(sorted({str(s) for s in choice.submeshes}))
    return (f"{choice.num_stages} stages on {shapes} submeshes, {choice.num_microbatches} microbatches, "
            f"{choice.schedule.value.upper()}, bubble {choice.bubble:.0%}")


def choose_pipeline(graph: OpGraph, *, whole_s: float, mesh: MeshShape, cluster: Cluster,
                    memory_budget: float | None, config: SearchConfig, whole_comm_s: float = 0.0,
                    whole_compute_s: float = 0.0, log=None) -> PipelineDecision:
    t0 = time.perf_counter()
    pinned = config.pipeline if isinstance(config.pipeline, int) else None
    if mesh.size < 2 or pinned == 1:
        return PipelineDecision("no pipeline: one device" if mesh.size < 2 else "no pipeline: pipeline=1", whole_s)
    if pinned is None and mesh.size <= cluster.devices_per_node:
        # One node: a pipeline's stages would talk over the same links as the whole-mesh
        # plan's collectives. Where those are fast (NVLink, ICI) intra-op plans win; on
        # slower ones a pipeline could gain at most what that plan spends communicating.
        link = cluster.intra_node.bandwidth / cluster.hbm_bandwidth
        if link >= FAST_LINKS:
            return PipelineDecision(
                f"no pipeline: one node with fast links ({cluster.intra_node.bandwidth / 1e9:.3g} GB/s per device, "
                f"{link:.0%} of its memory bandwidth), over which stages would talk as the plan over the whole "
                f"mesh does: stages not priced (pipeline=S prices them)", whole_s)
        if whole_s - whole_compute_s < MIN_GAIN * whole_s:
            return PipelineDecision(
                f"no pipeline: one node, and the plan over the whole mesh spends "
                f"{max(whole_s - whole_compute_s, 0.0) / whole_s:.0%} of its step communicating, under the "
                f"{MIN_GAIN:.0%} a pipeline would have to gain: stages not priced (pipeline=S prices them)", whole_s)
    try:
        split = split_microbatches(graph)
    except MicrobatchError as err:
        return PipelineDecision(f"no pipeline: {err}", whole_s)
    counts = (config.num_microbatches,) if isinstance(config.num_microbatches, int) and \
        config.num_microbatches > 1 else tuple(m for m in MICROBATCH_COUNTS if split.allows(m))
    if not counts:
        return PipelineDecision(f"no pipeline: the batch of {split.batch_size} cannot be split into microbatches",
                                whole_s)
    if pinned is None:
        floor = pipeline_floor(graph, split.phases, cluster, mesh, counts)
        if floor >= whole_s * (1 - MIN_GAIN):
            return PipelineDecision(
                f"no pipeline: none could beat the plan over the whole mesh ({_ms(whole_s)}/step) by "
                f"{MIN_GAIN:.0%}: its operators alone would take at least {_ms(floor)}/step as a pipeline "
                f"(pipeline=S prices stages)", whole_s, search_s=time.perf_counter() - t0)
    try:
        units = layer_units(graph)
        if len(units) < 2:
            return PipelineDecision("no pipeline: the step shows no layers to cut into stages", whole_s)
        umap = unit_map(graph, split, units)
    except (MicrobatchError, StageError) as err:
        return PipelineDecision(f"no pipeline: {err}", whole_s)
    subs = submesh_choices(mesh.size, min(cluster.devices_per_node, mesh.size))
    subs = tuple(s for s in subs if submesh_shape(mesh, s.size) is not None)
    pricer = UnitPricer(graph, split, units, umap, mesh=mesh, cluster=cluster, config=config, log=log)
    links = Links.of(cluster)
    whole = single_stage(subs, mesh.size)
    best, dp_s = None, 0.0
    step_bytes = unit_step_bytes(graph, umap, len(units))
    for m in counts:
        costs = pricer.stage_costs(m, subs, unit_cut_bytes(units, m), step_bytes)
        t_dp = time.perf_counter()
        if pinned is None and whole is not None:
            costs.time[0, len(units), whole] = float("inf")  # one stage is no pipeline
        got = search_stages(costs, num_devices=mesh.size, devices_per_node=min(cluster.devices_per_node, mesh.size),
                            links=links, num_microbatches=m, schedule=config.schedule, memory_budget=memory_budget,
                            submeshes=subs, num_stages=pinned)
        dp_s += time.perf_counter() - t_dp
        if log:
            log(f"pipeline with {m} microbatches: " + (f"{describe(got)}, {_ms(got.step_s)}/step" if got
                                                         else "nothing fits"))
        if got is not None and (best is None or got.step_s < best.step_s):
            best = got
    spent = time.perf_counter() - t0
    common = dict(whole_s=whole_s, split=split, units=units, best=best, search_s=spent, dp_s=dp_s,
                  solves=pricer.solves)
    if best is None:
        return PipelineDecision("no pipeline: no stages fit the memory budget", **common)
    pays = best.step_s < whole_s * (1 - MIN_GAIN)
    if pinned is None and not pays:
        why = (f"no pipeline: the best one ({describe(best)}) is predicted at {_ms(best.step_s)}/step, "
               f"the plan over the whole mesh at {_ms(whole_s)}/step")
        return PipelineDecision(why, **common)
    assignment = assign_stages(graph, split, units, best.ranges, best.num_microbatches, umap)
    moved = sum(f + b for f, b in assignment.boundary_bytes())
    why = (f"pipeline: {describe(best)}, predicted at {_ms(best.step_s)}/step against {_ms(whole_s)}/step "
           f"for the plan over the whole mesh ({whole_s / best.step_s:.2g}x)")
    reason = ""
    if whole_comm_s > 0.3 * whole_s:
        reason = (f"that plan spends {whole_comm_s / whole_s:.0%} of its step communicating, while the stages "
                  f"exchange {moved / 1e6:.3g} MB per microbatch across their boundaries")
    if pinned is not None and not pays:
        reason += f"{'; ' if reason else ''}pipeline={pinned} asked for"
    return PipelineDecision(why + (f": {reason}" if reason else ""), choice=best, assignment=assignment,
                            reason=reason, **common)


def with_pipeline(found, traced: OpGraph, phash: str, *, mesh: MeshShape, cluster: Cluster,
                  memory_budget: float | None, config: SearchConfig, log=None):
    """``found`` (search.Searched: the plan over the whole mesh) with the stage decision.
    Pipelined: the plan of the chosen stages (``stage_plan.plan_stages``: every stage
    program planned on its submesh); either way ``plan.pipeline_why`` says why."""
    from shardsearch.pipeline.stage_plan import plan_stages

    plan = found.plan
    p = plan.predicted
    decision = choose_pipeline(traced, whole_s=p.total_s, whole_comm_s=p.comm_s,
                               whole_compute_s=p.compute_s - p.collective_memory_s,
                               mesh=mesh, cluster=cluster, memory_budget=memory_budget, config=config, log=log)
    if log:
        log(decision.why + f" (stage search {decision.search_s:.2f} s: {decision.solves} unit solves, "
                           f"DP {decision.dp_s:.2f} s)")
    why = decision.why
    if decision.pipelined:
        c = decision.choice
        stages = [(tuple(range(o, o + sub.size)), submesh_shape(mesh, sub.size).axis_sizes)
                  for o, sub in zip(c.offsets, c.submeshes)]
        try:
            staged = plan_stages(traced, phash, decision.split, decision.assignment, c.num_microbatches,
                                 c.schedule, stages, mesh=mesh, cluster=cluster, memory_budget=memory_budget,
                                 config=config)
        except NotImplementedError as err:  # what the stage runtime cannot run yet (a split scan)
            why = f"no pipeline: {why[len('pipeline: '):]}; but {err}"
            return dataclasses.replace(found, plan=dataclasses.replace(plan, pipeline_why=why))
        exact = staged.predicted.total_s  # every stage program planned on its submesh
        if isinstance(config.pipeline, int) or exact < plan.predicted.total_s * (1 - MIN_GAIN):
            why = (f"pipelined: {describe(c)}, predicted at {_ms(exact)}/step (its stages planned on their "
                   f"submeshes; the stage search estimated {_ms(c.step_s)}) against {_ms(plan.predicted.total_s)}"
                   f"/step for the plan over the whole mesh ({plan.predicted.total_s / exact:.2g}x)"
                   + (f": {decision.reason}" if decision.reason else ""))
            return dataclasses.replace(found, graph=traced, plan=dataclasses.replace(staged, pipeline_why=why))
        why = (f"no pipeline: the stage search's best ({describe(c)}) was estimated at {_ms(c.step_s)}/step, but "
               f"with its stages planned on their submeshes it is predicted at {_ms(exact)}/step, against "
               f"{_ms(plan.predicted.total_s)}/step for the plan over the whole mesh")
    return dataclasses.replace(found, plan=dataclasses.replace(plan, pipeline_why=why))
