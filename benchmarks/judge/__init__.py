"""Judge plans by the program XLA compiled, not by the planner's prediction."""

from benchmarks.judge.hlo import HloCollective, device_groups, parse_collectives
from benchmarks.judge.price import Judged, PricedCollective, ideal_s, judge, judge_text, price_collective

__all__ = [
    "HloCollective", "device_groups", "parse_collectives",
    "Judged", "PricedCollective", "ideal_s", "judge", "judge_text", "price_collective",
]
