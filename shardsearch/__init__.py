"""shardsearch: automatic parallelization of JAX training steps.

The public names below are imported on first use (PEP 562), so ``import shardsearch``
and the ``shardsearch`` command start without importing jax; ``shardsearch.auto`` and
the rest behave as ordinary attributes. Add a public name by adding it to ``_EXPORTS``
(and to the ``TYPE_CHECKING`` block, for type checkers and the API reference).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "Advice": "shardsearch.advise",
    "advise": "shardsearch.advise",
    "allocate": "shardsearch.advise",
    "AutoSharded": "shardsearch.api",
    "auto": "shardsearch.api",
    "plan": "shardsearch.api",
    "apply_rules": "shardsearch.apply.export",
    "SearchConfig": "shardsearch.config",
    "AdviseError": "shardsearch.errors",
    "ArgumentError": "shardsearch.errors",
    "CheckpointError": "shardsearch.errors",
    "ClusterError": "shardsearch.errors",
    "MemoryBudgetError": "shardsearch.errors",
    "MeshError": "shardsearch.errors",
    "MicrobatchError": "shardsearch.errors",
    "OptionError": "shardsearch.errors",
    "PinError": "shardsearch.errors",
    "PlanError": "shardsearch.errors",
    "ShardsearchError": "shardsearch.errors",
    "TargetError": "shardsearch.errors",
    "TraceError": "shardsearch.errors",
    "Plan": "shardsearch.plan",
    "Predicted": "shardsearch.plan",
    "SolveStats": "shardsearch.plan",
    "stage_boundary": "shardsearch.pipeline.marker",
    "restore_checkpoint": "shardsearch.runtime.checkpoint",
    "save_checkpoint": "shardsearch.runtime.checkpoint",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:  # what the lazy names are, for type checkers and documentation tools
    from shardsearch.advise import Advice, advise, allocate
    from shardsearch.api import AutoSharded, auto, plan
    from shardsearch.apply.export import apply_rules
    from shardsearch.config import SearchConfig
    from shardsearch.errors import (
        AdviseError,
        ArgumentError,
        CheckpointError,
        ClusterError,
        MemoryBudgetError,
        MeshError,
        MicrobatchError,
        OptionError,
        PinError,
        PlanError,
        ShardsearchError,
        TargetError,
        TraceError,
    )
    from shardsearch.pipeline.marker import stage_boundary
    from shardsearch.plan import Plan, Predicted, SolveStats
    from shardsearch.runtime.checkpoint import restore_checkpoint, save_checkpoint


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shardsearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """Importing the submodule ``shardsearch.plan`` binds it on the package; the public
    name ``plan`` is the function ``shardsearch.api.plan``, so a submodule never shadows
    a public name (``import shardsearch.plan`` still works through ``sys.modules``)."""

    def __setattr__(self, name, value):
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
