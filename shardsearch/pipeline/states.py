"""What the microbatch pass says about each value and node (plain data)."""

from __future__ import annotations

import dataclasses
import enum


class Phase(enum.Enum):
    PRE = "pre"  # once per step, before the microbatch loop
    MICRO = "micro"  # once per microbatch
    ACCUM = "accum"  # once per microbatch, its output a partial result combined across them
    POST = "post"  # once per step, after the loop


class Reduction(enum.Enum):
    """How the partial results of the microbatches combine."""

    SUM = "sum"
    MAX = "max"
    MIN = "min"
    PROD = "prod"
    AND = "and"
    OR = "or"



@dataclasses.dataclass(frozen=True)
class Local:
    dim: int


@dataclasses.dataclass(frozen=True)
class Partial:
    reduction: Reduction
    origin: int  # the operator that reduced over the batch


@dataclasses.dataclass(frozen=True)
class Whole:
    phase: Phase  # PRE, MICRO or POST
    origin: int | None = None  # POST: the operator whose batch-wide result made it wait for the loop


PRE = Whole(Phase.PRE)
State = Local | Partial | Whole
