"""Judge plans by the program XLA compiled, not by the planner's prediction."""

from benchmarks.judge.hlo import (HloCollective, HloCompute, HloMatmul, device_groups, hlo_compute,
                                  parse_collectives, parse_matmuls)
from benchmarks.judge.price import (Judged, PricedCollective, ideal_s, judge, judge_text, matmul_seconds,
                                    price_collective)

__all__ = [
    "HloCollective", "HloCompute", "HloMatmul", "device_groups", "hlo_compute", "parse_collectives",
    "parse_matmuls",
    "Judged", "PricedCollective", "ideal_s", "judge", "judge_text", "matmul_seconds", "price_collective",
]
