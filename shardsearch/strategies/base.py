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


def register(*primitives: str) -> Callable[[Rule], Rule]:
    def deco(rule: Rule) -> Rule:
        for name in primitives:
            _RULES[name] = rule
        return rule

    return deco


def has_rule(primitive: str) -> bool:
    return primitive in _RULES


def rule_for(primitive: str) -> Rule | None:
    return _RULES.get(primitive)
