"""The HLO collective parser now lives in the library (``shardsearch.hlo``), which the
fidelity report uses; re-exported here for the judge and existing imports."""

from shardsearch.hlo import HloCollective, device_groups, parse_collectives

__all__ = ["HloCollective", "device_groups", "parse_collectives"]
