"""Pins reach a pipeline's stage programs: each program reads a pinned argument in the
pinned layout (a microbatch of a batch input too), on its own stage's submesh."""

import pytest
from jax.sharding import PartitionSpec as P

from cost_model import MeshShape
from pipeline_helpers import assign_even
from shardsearch.config import SearchConfig
from shardsearch.errors import PinError
from shardsearch.pipeline.microbatch import split_microbatches
from shardsearch.pipeline.pipelined import even_stages
from shardsearch.pipeline.stage_plan import plan_stages
from shardsearch.pipeline.stage_search import Schedule
from shardsearch.trace import program_hash, trace
from test_numerics import SLOW_COMPUTE
from test_pipeline_runtime import embed_head_step

MESH = MeshShape(("data", "model"), (4, 2))


def _plan(pins, m=4):
    fn, args = embed_head_step(batch=16)
    graph = trace(fn, args)
    split = split_microbatches(graph)
    return plan_stages(graph, program_hash(graph), split, assign_even(graph, split, 2, m), m, Schedule.GPIPE,
                       even_stages(MESH, 2), mesh=MESH, cluster=SLOW_COMPUTE, memory_budget=None,
                       config=SearchConfig(time_limit_s=10, pins=pins))


def _read_as(plan, stage: int, key: str, path_part: str):
    prog = plan.pipeline.stages[stage].programs[key]
    return [spec for path, spec in zip(prog.in_paths, prog.flat_in_specs) if path_part in path]


def test_stage_programs_read_pinned_arguments_as_pinned():
    # stage submeshes are (2, 2): the head split on its vocab over "model", the batch over "data"
    plan = _plan({"[0]['head']": P(None, "model"), r"\[2\]\['tokens'\]": P("data")})
    assert _read_as(plan, 1, "forward", "['head']") == [((), ("model",))]
    assert _read_as(plan, 1, "backward", "['head']") in ([], [((), ("model",))])
    # each microbatch of 4 rows is split over data (2 devices) too
    assert _read_as(plan, 0, "forward", "['tokens']") == [(("data",), ())]


def test_a_microbatch_too_small_for_the_pinned_axes_is_read_whole():
    plan = _plan({r"\[2\]\['tokens'\]": P(("data", "model"))}, m=16)  # 1 row per microbatch
    assert _read_as(plan, 0, "forward", "['tokens']") == [((), ())]


def test_a_pin_that_names_nothing_still_fails():
    with pytest.raises(PinError, match="names no argument leaf"):
        _plan({"[0]['nope']": P("model")})
