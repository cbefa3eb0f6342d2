"""Pipelined rows: a count's devices cut into S pipeline stages, one more row of the table.

``ss.advise(..., stages=(2, 4))`` adds, for every count of at least S devices, the plan
``ss.plan(..., pipeline=S)`` makes on the mesh ``(nodes, devices per node)`` (the stage
search picks each stage's layers and submesh, the microbatches and the schedule;
``shardsearch.pipeline.choose``). Its row is priced like any other (step time, memory,
cost), so the table says whether pipelining pays at that count. A count the pipeline
search cannot cut into S stages (too few layers, nothing fits) gets a note instead.
Pipelined rows are planned to the end (no cutoff): each costs the stage search's unit
solves and one intra-op plan per stage program, several times a mesh's.
"""

from __future__ import annotations

import dataclasses
import time

from cost_model import MeshShape
from shardsearch.advise.configs import Config
from shardsearch.errors import ShardsearchError


def stage_counts(n: int, stages) -> list[int]:
    return sorted({s for s in stages if 2 <= s <= n})


def pipeline_mesh(n: int, per_node: int) -> tuple[int, int]:
    """Whole nodes as rows: stage submeshes are pieces of a node or whole nodes."""
    return (max(1, n // per_node), min(n, per_node))


def plan_pipelined(traced, phash: str, n: int, num_stages: int, whole_plan, settings, batch: int):
    """(Planned, "") for ``num_stages`` stages on ``n`` devices, or (None, why not).
    ``whole_plan``: the count's fastest plan over the whole mesh, which the pipeline is
    weighed against in its ``pipeline_why``."""
    from shardsearch.advise.sweep import Planned, peak_bytes
    from shardsearch.pipeline.choose import with_pipeline
    from shardsearch.search import Searched

    shape = pipeline_mesh(n, settings.cluster.devices_per_node)
    mesh = MeshShape(("data", "model"), shape)
    config = dataclasses.replace(settings.search_config, pipeline=num_stages)
    t0 = time.perf_counter()
    try:
        plan = with_pipeline(Searched(traced, whole_plan), traced, phash, mesh=mesh, cluster=settings.cluster,
                             memory_budget=settings.memory_budget, config=config).plan
    except ShardsearchError as err:
        return None, str(err)
    if plan.pipeline is None:
        return None, plan.pipeline_why or "the pipeline search found no stages"
    fits = peak_bytes(plan) <= settings.memory_budget
    return Planned(Config(n, shape, num_stages), batch, plan, fits, None if fits else peak_bytes(plan), None,
                   time.perf_counter() - t0), ""
