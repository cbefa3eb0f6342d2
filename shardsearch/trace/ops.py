"""Single operators made by tracing a tiny jax function, to add to a graph built by hand.

A graph transformation (the microbatch loop of ``pipeline/accumulate.py``) needs a few
operators of its own: a reshape, a transpose, a broadcast of a constant, an add. Tracing
``lambda x: jnp.reshape(x, shape)`` gives the equation with exactly the params this jax
version's primitive takes, so nothing here depends on a primitive's private signature.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.extend import core as jcore

from shardsearch.graph import LiteralValue, TensorInfo
from shardsearch.trace.jaxpr import _info


@dataclasses.dataclass(frozen=True)
class TracedOp:
    primitive: str
    params: dict
    payload: Any  # the equation, for trace.eval_graph
    operands: tuple[int | LiteralValue, ...]  # per equation operand: argument index, or a literal
    outputs: tuple[TensorInfo, ...]


def traced_op(fn: Callable, *infos: TensorInfo) -> TracedOp:
    """The one equation ``fn`` traces to on arguments of ``infos``."""
    sds = [jax.ShapeDtypeStruct(i.shape, i.dtype) for i in infos]
    closed = jax.make_jaxpr(fn)(*sds)
    eqns = closed.jaxpr.eqns
    if len(eqns) != 1 or closed.consts:
        raise ValueError(f"{fn} traces to {len(eqns)} equations, not one: {closed}")
    eqn = eqns[0]
    args = {v: i for i, v in enumerate(closed.jaxpr.invars)}
    operands = tuple(LiteralValue(v.val, _info(v.aval)) if isinstance(v, jcore.Literal) else args[v]
                     for v in eqn.invars)
    return TracedOp(eqn.primitive.name, dict(eqn.params), eqn, operands, tuple(_info(v.aval) for v in eqn.outvars))


def reshape(info: TensorInfo, shape: Sequence[int]) -> TracedOp:
    return traced_op(lambda x: jax.lax.reshape(x, tuple(shape)), info)


def transpose(info: TensorInfo, perm: Sequence[int]) -> TracedOp:
    return traced_op(lambda x: jax.lax.transpose(x, tuple(perm)), info)


def full(info: TensorInfo, value) -> TracedOp:
    """A constant-filled tensor (a broadcast of a literal)."""
    fill = np.asarray(value, dtype=info.dtype)[()]
    return traced_op(lambda: jax.lax.broadcast_in_dim(jax.numpy.asarray(fill, info.dtype), info.shape, ()))


def binary(name: str, info: TensorInfo) -> TracedOp:
    """``jax.lax.<name>(a, b)`` on two tensors of ``info`` (add, max, min, mul, and, or)."""
    fn = getattr(jax.lax, {"and": "bitwise_and", "or": "bitwise_or"}.get(name, name))
    return traced_op(fn, info, info)


def identity_value(name: str, dtype: np.dtype):
    """The value that ``name``-combining leaves unchanged (0 for add, -inf for max, ...)."""
    dtype = np.dtype(dtype)
    if name in ("add",):
        return 0
    if name == "mul":
        return 1
    if name in ("and", "or"):
        return name == "and"
    if dtype.kind == "f":
        return -np.inf if name == "max" else np.inf
    return np.iinfo(dtype).min if name == "max" else np.iinfo(dtype).max
