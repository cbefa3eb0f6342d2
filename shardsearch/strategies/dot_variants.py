"""Matmuls beyond dot_general: ragged_dot_general and scaled_dot.

ragged_dot_general (lax.ragged_dot: grouped matmuls of mixture-of-experts layers).

The lhs ragged dim is cut into consecutive groups by ``group_sizes``; each group meets
its own slice of the rhs group dim. Which group a row belongs to depends on all the
sizes before it, so the ragged dim, the rhs group dim and group_sizes stay whole. The
other dims are a dot's: batch and free dims split the output, a contracting dim leaves
partial sums (all-reduced). The three modes differ in where the ragged dim sits:

  non-contracting   lhs [m, k] x rhs [g, k, n] -> [m, n]        (the forward pass)
  contracting       lhs [k(m), ...] x rhs [k(m), ...] -> [g, ...]  (the rhs gradient)
  batch             a ragged batch dim, no rhs group dim

scaled_dot (lax.scaled_dot: (lhs * lhs_scale) @ (rhs * rhs_scale), block-scaled low
precision): a dot whose scales carry each operand's dims, a contracting dim shortened by
the subchannel size. Its logical dims are the dot's; a contracting split has the size of
the scales' contracting dim, so that every device keeps whole subchannels.
"""

from __future__ import annotations

import math

from cost_model.mesh import MeshShape

from shardsearch.strategies.base import OpView, Strategy, register
from shardsearch.strategies.logical import LDim, logical_strategies
from shardsearch.strategies.specs import io_bytes


def _dims(op: OpView) -> tuple[list[LDim], float] | None:
    """The splittable logical dims, and the op's flops: 2 x lhs size x rhs free (non-group) size."""
    rdn = op.params["ragged_dot_dimension_numbers"]
    (lc, rc), (lb, rb) = rdn.dot_dimension_numbers
    (ragged,) = rdn.lhs_ragged_dimensions
    group = tuple(rdn.rhs_group_dimensions)
    lhs, rhs, out = op.in_shapes[0], op.in_shapes[1], op.out_shapes[0]
    if len(op.in_shapes) != 3 or len(op.in_shapes[2]) != 1:
        return None  # group sizes per batch element: keep it whole
    lf = [d for d in range(len(lhs)) if d not in lc and d not in lb]
    rf = [d for d in range(len(rhs)) if d not in rc and d not in rb and d not in group]
    pos = 1 if ragged in lc else 0  # the contracting mode puts the groups first in the output
    if len(out) != pos + len(lb) + len(lf) + len(rf):
        return None
    dims = []
    for l, r in zip(lb, rb):
        if l != ragged:
            dims.append(LDim(lhs[l], (l, r, None, pos)))
        pos += 1
    for d in lf:
        if d != ragged:
            dims.append(LDim(lhs[d], (d, None, None, pos)))
        pos += 1
    for d in rf:
        dims.append(LDim(rhs[d], (None, d, None, pos)))
        pos += 1
    for l, r in zip(lc, rc):
        if l != ragged:
            dims.append(LDim(lhs[l], (l, r, None, None), partial=True))
    return dims, 2.0 * math.prod(lhs) * math.prod(rhs[d] for d in rf)


@register("ragged_dot_general")
def ragged_dot_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    found = _dims(op)
    if found is None:
        return []
    dims, total = found
    return logical_strategies(op, mesh, dims, flops=lambda ins, outs, used: total / mesh.group_size(used),
                              nbytes=lambda ins, outs: io_bytes(op, ins, outs, mesh))


@register("scaled_dot")
def scaled_dot_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    if len(op.in_shapes) != 4:
        return []
    (lc, rc), (lb, rb) = op.params["dimension_numbers"]
    lhs, rhs, lscale = op.in_shapes[0], op.in_shapes[1], op.in_shapes[2]
    lf = [d for d in range(len(lhs)) if d not in lc and d not in lb]
    rf = [d for d in range(len(rhs)) if d not in rc and d not in rb]
    dims = [LDim(lhs[l], (l, r, l, r, i)) for i, (l, r) in enumerate(zip(lb, rb))]
    dims += [LDim(lhs[d], (d, None, d, None, len(lb) + j)) for j, d in enumerate(lf)]
    dims += [LDim(rhs[d], (None, d, None, d, len(lb) + len(lf) + j)) for j, d in enumerate(rf)]
    dims += [LDim(lscale[l], (l, r, l, r, None), partial=True) for l, r in zip(lc, rc)]
    total = 2.0 * math.prod(lhs) * math.prod(rhs[d] for d in rf)
    return logical_strategies(op, mesh, dims, flops=lambda ins, outs, used: total / mesh.group_size(used),
                              nbytes=lambda ins, outs: io_bytes(op, ins, outs, mesh))
