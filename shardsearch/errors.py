"""Error types. Every message names the offending input and says how to fix it."""

from cost_model.errors import ClusterError, ShardsearchError

__all__ = [
    "ShardsearchError",
    "ClusterError",
    "MeshError",
    "TraceError",
    "MemoryBudgetError",
    "OptionError",
    "PlanError",
    "CheckpointError",
    "DistributedError",
    "PinError",
    "StageError",
    "ArgumentError",
    "MicrobatchError",
    "TargetError",
    "AdviseError",
]


class MeshError(ShardsearchError):
    """The mesh cannot be built or does not fit the devices at hand."""


class TraceError(ShardsearchError):
    """The function could not be traced to a jaxpr with the given arguments."""


class ArgumentError(TraceError, TypeError):
    """An argument leaf is not an array (a string, an object): named by its path, as
    ``jax.jit`` names it; a ``TypeError`` too, as jax.jit's own error is."""


class MemoryBudgetError(ShardsearchError):
    """No plan keeps per-device memory within the budget.

    ``least_bytes``: the smallest per-device memory a plan needs, where it is known."""

    def __init__(self, message: str, least_bytes: float | None = None):
        super().__init__(message)
        self.least_bytes = least_bytes


class OptionError(ShardsearchError):
    """An unknown or invalid search option was passed."""


class PlanError(ShardsearchError):
    """A plan does not match the program, mesh or arguments it is used with."""


class DistributedError(ShardsearchError):
    """A multi-process run is set up wrongly (launch settings, processes that disagree)."""


class CheckpointError(ShardsearchError):
    """A checkpoint cannot be written or read back into the state it is restored as."""


class PinError(ShardsearchError):
    """A pinned sharding (``pins=``) names no argument or is not a valid layout for it."""


class MicrobatchError(ShardsearchError):
    """A step cannot be split into microbatches without changing its result (a batch
    statistic flows back into per-example work), or not at the number asked for."""


class StageError(ShardsearchError):
    """The step cannot be cut into pipeline stages (the unpipelined plan is used)."""


class TargetError(ShardsearchError):
    """The cluster's own compiler cannot be reached: no target description, no plugin, or
    a mesh the target's topology cannot hold."""


class AdviseError(ShardsearchError):
    """The advisor's question has no answer as asked: a device count the cluster cannot
    hold, a batch no device count divides, a model that fits on no count, a goal no
    configuration meets."""
