"""Strategies of one operator: its rule's, deduplicated, plus the always-correct replicated one."""

from __future__ import annotations

import math

from cost_model.collectives import CollectiveKind
from cost_model.mesh import MeshShape, replicated

# Importing the rule modules fills the registry.
from shardsearch.strategies import dot, elementwise, layout, reduce, slicing  # noqa: F401
from shardsearch.strategies import batched, conv, dot_variants, gather, loop, misc, passthrough, prng  # noqa: F401
from shardsearch.strategies import reasons  # noqa: F401
from shardsearch.strategies.base import OpView, Strategy, reason_for, rule_for


def replicated_strategy(op: OpView, flops: float | None = None) -> Strategy:
    """Every operand and output whole on every device; ``flops`` defaults to the output size."""
    ins = tuple(replicated(len(s)) for s in op.in_shapes)
    outs = tuple(replicated(len(s)) for s in op.out_shapes)
    nbytes = sum(math.prod(s) * d.itemsize for s, d in zip(op.in_shapes + op.out_shapes, op.in_dtypes + op.out_dtypes))
    if flops is None:
        flops = float(sum(math.prod(s) for s in op.out_shapes))
    return Strategy("replicated", ins, outs, (), flops, float(nbytes))


def _comm_weight(s: Strategy) -> tuple[float, float]:
    """Mesh-independent proxy of communication cost: an all-reduce moves twice the bytes."""
    w = sum(c.nbytes * (2 if c.kind is CollectiveKind.ALL_REDUCE else 1) for c in s.collectives)
    return (w, s.flops)


def strategies_for(op: OpView, mesh: MeshShape) -> tuple[list[Strategy], bool]:
    """(strategies, whether a rule or a reason covers the primitive); the replicated
    strategy is always first (for a primitive with a reason, it is the only one)."""
    rule = rule_for(op.primitive)
    if rule is None:
        return [replicated_strategy(op)], reason_for(op.primitive) is not None
    best: dict = {}
    for s in rule(op, mesh):
        key = (s.in_specs, s.out_specs)
        if key not in best or _comm_weight(s) < _comm_weight(best[key]):
            best[key] = s
    rep = replicated_strategy(op)
    rep = best.pop((rep.in_specs, rep.out_specs), rep)
    return [rep, *best.values()], True
