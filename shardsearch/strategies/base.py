"""What a strategy is, what a rule sees, and the per-primitive rule registry."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from cost_model.collectives import Collective
from cost_model.mesh import MeshShape, Spec


@dataclasses.dataclass(frozen=True)
class OpView:
    """The facts about one operator that a strategy rule may use (no jax objects)."""

    primitive: str
    params: Mapping[str, Any]
    in_shapes: tuple[tuple[int, ...], ...]
    in_dtypes: tuple[np.dtype, ...]
    out_shapes: tuple[tuple[int, ...], ...]
    out_dtypes: tuple[np.dtype, ...]


@dataclasses.dataclass(frozen=True)
class Strategy:
    """One way to run an operator on the mesh.

    ``in_specs`` are the layouts the operator needs its operands in (one per operand),
    ``out_specs`` the layouts it produces, ``collectives`` what it must communicate
    itself (e.g. the all-reduce of a contracting-dim split), ``flops`` and
    ``bytes_accessed`` its per-device work.
    """

    name: str
    in_specs: tuple[Spec, ...]
    out_specs: tuple[Spec, ...]
    collectives: tuple[Collective, ...] = ()
    flops: float = 0.0
    bytes_accessed: float = 0.0


Rule = Callable[[OpView, MeshShape], list[Strategy]]

_RULES: dict[str, Rule] = {}
# Primitives with no rule on purpose: why replicated is their only correct layout, or why
# the planner never sees them as operators (strategies/reasons.py fills it).
_REASONS: dict[str, str] = {}


def register(*primitives: str) -> Callable[[Rule], Rule]:
    def deco(rule: Rule) -> Rule:
        for name in primitives:
            _RULES[name] = rule
        return rule

    return deco


def register_reason(reason: str, *primitives: str) -> None:
    """``primitives`` keep the replicated layout (or never reach the planner) because of ``reason``."""
    assert reason and "\n" not in reason, "a reason is one line"
    for name in primitives:
        assert name not in _RULES, f"{name} has a rule: it needs no reason"
        _REASONS[name] = reason


def has_rule(primitive: str) -> bool:
    return primitive in _RULES


def reason_for(primitive: str) -> str | None:
    """Why ``primitive`` has no rule, if it has none on purpose."""
    return _REASONS.get(primitive)


def covered() -> dict[str, str]:
    """Every primitive the registry knows: name -> 'rule' or its reason."""
    return {**{n: "rule" for n in _RULES}, **_REASONS}


def rule_for(primitive: str) -> Rule | None:
    return _RULES.get(primitive)
