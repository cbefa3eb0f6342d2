"""Judge plans by the program XLA compiled, not by the planner's prediction."""

from benchmarks.judge.hlo import HloCollective, parse_collectives

__all__ = ["HloCollective", "parse_collectives"]
