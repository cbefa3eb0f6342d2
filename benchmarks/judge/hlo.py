"""The HLO parsers live in the library (``shardsearch.hlo`` for collectives, which the
fidelity report uses; ``shardsearch.hlo_compute`` for matmuls); re-exported here for the
judge and existing imports."""

from shardsearch.hlo import HloCollective, device_groups, parse_collectives
from shardsearch.hlo_compute import HloCompute, HloMatmul, hlo_compute, parse_matmuls

__all__ = ["HloCollective", "device_groups", "parse_collectives",
           "HloCompute", "HloMatmul", "hlo_compute", "parse_matmuls"]
