"""Judge plans by the program XLA compiled, not by the planner's prediction."""

from benchmarks.judge.hlo import (HloCollective, HloCompute, HloMatmul, device_groups, hlo_compute,
                                  parse_collectives, parse_matmuls)
from benchmarks.judge.price import (Judged, PricedCollective, ideal_s, judge, judge_text, matmul_seconds,
                                    price_collective)
from benchmarks.judge.gpu import judge_gpu, judge_gpu_text
from benchmarks.judge.lhs import compile_with_estimate, schedule_estimate_s
from benchmarks.judge.replay import Replayed, replay
from benchmarks.judge.pipeline import JudgedPipeline, JudgedStage, judge_pipeline

__all__ = [
    "HloCollective", "HloCompute", "HloMatmul", "device_groups", "hlo_compute", "parse_collectives",
    "parse_matmuls",
    "Judged", "PricedCollective", "ideal_s", "judge", "judge_text", "matmul_seconds", "price_collective",
    "judge_gpu", "judge_gpu_text", "compile_with_estimate", "schedule_estimate_s", "Replayed", "replay",
    "JudgedPipeline", "JudgedStage", "judge_pipeline",
]
