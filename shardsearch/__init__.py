"""shardsearch: automatic parallelization of JAX training steps."""

from shardsearch.api import AutoSharded, auto, plan
from shardsearch.apply.export import apply_rules
from shardsearch.config import SearchConfig
from shardsearch.errors import (
    CheckpointError,
    ClusterError,
    MemoryBudgetError,
    MeshError,
    OptionError,
    PinError,
    PlanError,
    ShardsearchError,
    TraceError,
)
from shardsearch.plan import Plan, Predicted, SolveStats
from shardsearch.runtime.checkpoint import restore_checkpoint, save_checkpoint

__all__ = [
    "AutoSharded",
    "CheckpointError",
    "ClusterError",
    "MemoryBudgetError",
    "MeshError",
    "OptionError",
    "PinError",
    "Plan",
    "PlanError",
    "Predicted",
    "SearchConfig",
    "ShardsearchError",
    "SolveStats",
    "TraceError",
    "apply_rules",
    "auto",
    "plan",
    "restore_checkpoint",
    "save_checkpoint",
]

__version__ = "0.1.0"
