"""Judge plans by the program XLA compiled, not by the planner's prediction."""

from benchmarks.judge.hlo import HloCollective, device_groups, parse_collectives

__all__ = ["HloCollective", "device_groups", "parse_collectives"]
