"""The HLO parsers live in the library (``shardsearch.hlo``: collectives, which the
fidelity report uses, and matmuls); re-exported here for the
judge and existing imports."""

from shardsearch.hlo import (HloCollective, HloCompute, HloMatmul, device_groups, hlo_compute, parse_collectives,
                             parse_matmuls)

__all__ = ["HloCollective", "device_groups", "parse_collectives",
           "HloCompute", "HloMatmul", "hlo_compute", "parse_matmuls"]
