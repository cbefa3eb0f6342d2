"""Pieces a pipelined plan is run from (no plan import: ``plan.apply`` reaches this module).

``even_stages(mesh_shape, S)``: S equal submeshes of the mesh, in device order.
``programs_of(graph, pipeline)``: the stage programs a pipelined plan was made of,
rebuilt from the traced step (``pipeline.stage_plan.plan_stages`` made the plan).
"""

from __future__ import annotations

import math

from cost_model import MeshShape
from shardsearch.pipeline.microbatch import micro_graph, split_microbatches
from shardsearch.pipeline.plan_data import PipelinePlan
from shardsearch.pipeline.programs import split_as_assigned, stage_programs


def even_stages(mesh: MeshShape, num_stages: int) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
    """(device positions in mesh order, submesh shape) of ``num_stages`` equal, contiguous
    submeshes: the leading mesh axes are cut first (a (2, 4) mesh in 2 stages: two 1x4
    rows; in 4: four 1x2 halves of rows)."""
    sizes, left, shape = list(mesh.axis_sizes), num_stages, []
    for n in sizes:
        cut = math.gcd(n, left)
        shape.append(n // cut)
        left //= cut
    if left != 1:
        raise ValueError(f"{num_stages} stages do not tile mesh {tuple(sizes)}")
    per = math.prod(shape)
    return tuple((tuple(range(s * per, (s + 1) * per)), tuple(shape)) for s in range(num_stages))


def programs_of(graph, pipeline: PipelinePlan):
    """The stage programs a pipelined plan was made of, rebuilt from the traced step."""
    split = split_as_assigned(split_microbatches(graph, batch_size=pipeline.batch_size), pipeline.assignment)
    micro = micro_graph(graph, split, pipeline.num_microbatches)
    return stage_programs(graph, split, micro, pipeline.assignment)
