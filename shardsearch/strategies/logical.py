"""Strategies over the logical dims of an operator (conv, gather, scatter; dot in spirit).

A *logical dim* is one index of the computation that appears in some of the operands
and outputs (at most once in each). Splitting it splits those tensor dims together.
Splitting a *partial* logical dim (one absent from the output: a contracted feature
dim, a masked row lookup, a scattered-from batch dim) leaves each device with a
partial result of the whole local output: it is all-reduced. (No reduce-scatter: XLA
emits one as an all-reduce and a local slice, see strategies/dot.py.)
Tensor dims that no logical dim names (spatial dims, index vectors) stay whole.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from cost_model.collectives import Collective, CollectiveKind
from cost_model.mesh import MeshShape, Spec

from shardsearch.strategies.base import OpView, Strategy
from shardsearch.strategies.specs import enumerate_specs, spec_bytes, spec_name


@dataclasses.dataclass(frozen=True)
class LDim:
    """A logical dim: its size, its position in each operand then each output (None: absent)."""

    size: int
    at: tuple[int | None, ...]
    partial: bool = False


# (in_specs, out_specs before any reduce-scatter, mesh axes in use) -> per-device flops
FlopsFn = Callable[[tuple[Spec, ...], tuple[Spec, ...], tuple[str, ...]], float]
# (in_specs, out_specs) -> per-device bytes accessed
BytesFn = Callable[[tuple[Spec, ...], tuple[Spec, ...]], float]


def _name(ins, outs, coll: Collective | None) -> str:
    name = f"{', '.join(spec_name(s) for s in ins)} -> {', '.join(spec_name(s) for s in outs)}"
    if coll is not None:
        name += f" [AR({','.join(coll.axes)})]"
    return name


def logical_strategies(op: OpView, mesh: MeshShape, dims: Sequence[LDim],
                       flops: FlopsFn, nbytes: BytesFn) -> list[Strategy]:
    """Every placement of mesh axes on ``dims`` (replicated first), with its collectives."""
    n_in = len(op.in_shapes)
    ranks = [len(s) for s in op.in_shapes + op.out_shapes]
    out_shape, itemsize = tuple(op.out_shapes[0]), op.out_dtypes[0].itemsize
    result = []
    for assign in enumerate_specs([d.size for d in dims], mesh):
        specs = [[()] * r for r in ranks]
        for d, axes in zip(dims, assign):
            for t, pos in enumerate(d.at):
                if pos is not None:
                    specs[t][pos] = axes
        ins, outs = tuple(map(tuple, specs[:n_in])), tuple(map(tuple, specs[n_in:]))
        used = tuple(a for axes in assign for a in axes)
        caxes = tuple(a for d, axes in zip(dims, assign) if d.partial for a in axes)
        work = flops(ins, outs, used)
        if not caxes:
            result.append(Strategy(_name(ins, outs, None), ins, outs, (), work, nbytes(ins, outs)))
            continue
        full = spec_bytes(out_shape, itemsize, outs[0], mesh)  # the partial sums each device holds
        # An all-reduce is over a set of axes: mesh order keeps names canonical.
        ar = Collective(CollectiveKind.ALL_REDUCE, tuple(a for a in mesh.axis_names if a in caxes), full)
        result.append(Strategy(_name(ins, outs, ar), ins, outs, (ar,), work, nbytes(ins, outs)))
    return result
