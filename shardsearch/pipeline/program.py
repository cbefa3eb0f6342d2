"""The program a plan with microbatches runs, for the search and for ``plan.apply``.

``microbatched(graph, num_microbatches, mesh) -> (graph, PipelinePlan | None)``: the
graph to plan: the traced step as an accumulation over M microbatches
(``pipeline.accumulate``) with the ``PipelinePlan`` that says so, or, when the step
cannot be split (``MicrobatchError``: batch statistics flow back into per-example work,
or no batch input), the traced step unchanged and None, with a warning that names the
operator. A count M that the batch does not divide raises ``MicrobatchError``.

``step_graph(graph, plan) -> OpGraph``: the graph a plan's node ids refer to, rebuilt
from the traced step (deterministically) when the plan accumulates microbatches.

Remat and accumulation together: the layers are recomputed inside each microbatch, so
the rewrite (``remat.remat_graph``) is applied to the per-microbatch program before it
becomes the loop's body (``RematPlan.in_microbatch``). Rewriting the traced step first
would not split: its recomputation waits on a scalar reduced over the whole batch.
"""

from __future__ import annotations

import dataclasses

from cost_model import MeshShape
from shardsearch.errors import MicrobatchError
from shardsearch.graph import OpGraph
from shardsearch.pipeline.accumulate import accumulation_graph
from shardsearch.pipeline.microbatch import MicrobatchSplit, micro_graph, split_microbatches
from shardsearch.pipeline.plan_data import PipelinePlan, StagePlan
from shardsearch.progress import warn_user

NOT_SPLIT = "shardsearch: num_microbatches={m} asked for, but the step runs whole: {why}"


def accumulation_plan(split: MicrobatchSplit, num_microbatches: int, mesh: MeshShape) -> PipelinePlan:
    """One stage on the whole mesh running ``num_microbatches`` microbatches in a scan."""
    stage = StagePlan(devices=tuple(range(mesh.size)), shape=tuple(mesh.axis_sizes))
    return PipelinePlan(num_microbatches, split.batch_size, split.batch_args, (stage,))


def microbatched(graph: OpGraph, num_microbatches: int, mesh: MeshShape,
                 remat=None) -> tuple[OpGraph, PipelinePlan | None]:
    """``remat``: a ``RematPlan`` (``in_microbatch``) each microbatch recomputes its layers by."""
    if num_microbatches <= 1:
        return graph, None
    try:
        split = split_microbatches(graph)
    except MicrobatchError as err:
        warn_user(NOT_SPLIT.format(m=num_microbatches, why=err))
        return graph, None
    split.check(graph, num_microbatches)
    return (remat_program(graph, split, num_microbatches, remat),
            accumulation_plan(split, num_microbatches, mesh))


def remat_program(graph: OpGraph, split: MicrobatchSplit, num_microbatches: int, remat=None) -> OpGraph:
    """``graph`` as an accumulation over microbatches, each recomputing the layers of
    ``remat`` (a plan ``micro_remat_choices`` made; None: none recomputed)."""
    if remat is None:
        return accumulation_graph(graph, split, num_microbatches)
    from shardsearch.remat import remat_graph

    micro = micro_graph(graph, split, num_microbatches)
    # (node_map keeps the unrewritten body's ids: the accumulation reads only the boundary)
    micro = dataclasses.replace(micro, graph=remat_graph(micro.graph, remat))
    return accumulation_graph(graph, split, num_microbatches, micro)


def micro_remat_choices(graph: OpGraph, num_microbatches: int, policies=None) -> list:
    """The remat plans (``remat.choices``, least recompute first) of the per-microbatch
    program of ``graph`` split in ``num_microbatches``; [] when it has no layers to recompute."""
    from shardsearch.remat import POLICIES, choices

    split = split_microbatches(graph)
    micro = micro_graph(graph, split, num_microbatches)
    return choices(micro.graph, POLICIES if policies is None else policies, in_microbatch=True)[1]


def step_graph(graph: OpGraph, plan) -> OpGraph:
    """The graph ``plan`` was made over, from the traced step ``graph``: its layers
    recomputed (``plan.remat``), then its microbatch loop."""
    remat = getattr(plan, "remat", None)
    inside = remat is not None and remat.in_microbatch
    if remat is not None and not inside:
        from shardsearch.remat import remat_graph

        graph = remat_graph(graph, remat)
    p: PipelinePlan | None = getattr(plan, "pipeline", None)
    if p is None or p.num_microbatches <= 1 or p.num_stages > 1:
        return graph  # (a multi-stage plan runs the traced step cut into stage programs)
    split = split_microbatches(graph, batch_size=p.batch_size)
    return remat_program(graph, split, p.num_microbatches, remat if inside else None)
