"""Issue 12's memory acceptance on the tests/models GPT: each stage's predicted peak
(``plan.pipeline.stages[s].peak_bytes``) within 20% of the largest ``memory_analysis()``
peak of the stage's compiled programs, and each program's own prediction too, in 2 and 4
stages on a (2, 4) mesh of 2x4-slow (2 layers, AdamW: the update's moments are part of the
peak; ~10 s CPU each, mostly compiling the stage programs).
benchmarks/pipeline_memory.py measures the same at gpt-350M widths."""

import pytest

from cost_model import Cluster, MeshShape
from models import gpt
from pipeline_helpers import assign_even
from shardsearch.config import SearchConfig
from shardsearch.pipeline.microbatch import split_microbatches
from shardsearch.pipeline.pipelined import even_stages
from shardsearch.pipeline.stage_plan import plan_stages
from shardsearch.pipeline.stage_search import Schedule
from shardsearch.trace import program_hash, trace

MESH = MeshShape(("data", "model"), (2, 4))


@pytest.mark.slow
@pytest.mark.parametrize("num_stages", [2, 4])
def test_gpt_stage_peaks_predicted_within_20_percent(num_stages):
    case = gpt.make()  # embedding, 2 layers, head: 4 layer units
    fn, args = case.train_step, case.args
    graph = trace(fn, args)
    split = split_microbatches(graph)
    assignment = assign_even(graph, split, num_stages, 4)
    plan = plan_stages(graph, program_hash(graph), split, assignment, 4, Schedule.ONE_F_ONE_B,
                       even_stages(MESH, num_stages), mesh=MESH, cluster=Cluster.load("2x4-slow"),
                       memory_budget=None, config=SearchConfig(time_limit_s=10))
    report = plan.fidelity(plan.apply(fn).lower(*args).compile())
    assert len(report.stages) == num_stages
    for st_plan, st in zip(plan.pipeline.stages, report.stages):
        compiled = st.compiled_peak_bytes
        assert compiled > 0 and abs(st_plan.peak_bytes - compiled) / compiled < 0.2, str(report)
        assert all(abs(f.memory_error) < 0.2 for f in st.programs.values()), str(report)
