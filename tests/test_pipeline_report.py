"""The benchmark report's Pipelines table (benchmarks/report.py), on hand-made rows: the
chosen plan against the best plan without stages and against the hand 3-D recipe."""

from benchmarks.megatron3d import NAME as MEGATRON_3D
from benchmarks.report import markdown, pipeline_verdicts
from benchmarks.runner import SHARDSEARCH, SHARDSEARCH_INTRA, Row

STAGED = "2 stages of 4 devices, 8 microbatches, 1F1B"


def row(strategy, ms, fits=True, staged=False):
    return Row(suite="gpt", config="gpt-x", cluster="2x4-slow", mesh="2x4", strategy=strategy, total_s=ms / 1e3,
               compute_s=ms / 2e3, comm_s=ms / 2e3, comm_bytes=0.0, memory_bytes=2**30, fits=fits, ideal_s=0.01,
               compile_s=1.0, pipeline=STAGED if staged else None,
               pipeline_ms="s0 1+2 x8, once 3; s1 1+2 x8, once 1; link0 0.5/0.5 x8; bubble 11%" if staged else None)


def test_chosen_pipeline_against_the_best_flat_plan_and_megatron_3d():
    rows = [row(SHARDSEARCH, 40.0, staged=True), row(SHARDSEARCH_INTRA, 70.0), row(MEGATRON_3D, 50.0, staged=True),
            row("data parallel", 60.0), row("FSDP (ZeRO-3)", 30.0, fits=False)]  # faster, but does not fit
    (config, mesh, chosen, x_flat, x_3d), = pipeline_verdicts(rows)
    assert chosen == STAGED
    assert abs(x_flat - 60.0 / 40.0) < 1e-9 and abs(x_3d - 50.0 / 40.0) < 1e-9
    text = markdown(rows, "gpt on 2x4-slow")
    assert f"| gpt-x | 2x4 | {STAGED} | 1.50 | 1.25 |" in text
    assert f"| gpt-x | 2x4 | {MEGATRON_3D} | 50.000 | s0 1+2 x8" in text  # where each pipelined step goes


def test_a_declined_pipeline_is_no_pipeline_against_megatron_3d():
    rows = [row(SHARDSEARCH, 40.0), row(MEGATRON_3D, 80.0, staged=True), row("data parallel", 60.0)]
    (_, _, chosen, x_flat, x_3d), = pipeline_verdicts(rows)
    # the chosen plan is itself the best plan without stages
    assert chosen == "no pipeline" and x_flat == 1.0 and abs(x_3d - 2.0) < 1e-9
