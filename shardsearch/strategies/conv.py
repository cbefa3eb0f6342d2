"""conv_general_dilated: split the batch, the output features, or the input features.

Logical dims: B (lhs batch = output batch), O (kernel out-features = output features)
and I (lhs features = kernel in-features; a split leaves partial sums, all-reduced or
reduce-scattered onto B or O). Spatial dims are never split: a window would need its
neighbours' halo. Any dimension numbers work, so the gradient convs jax.grad emits
(the weight gradient is a conv with permuted dimension numbers, batch and feature
roles swapped; the input gradient a conv of the flipped kernel) get the same rule.

Grouped convs (feature_group_count > 1, e.g. depthwise) only split the batch; convs
with batch_group_count > 1 (the weight gradient of a grouped conv) stay replicated.
"""

from __future__ import annotations

import math

from cost_model.mesh import MeshShape

from shardsearch.strategies.base import OpView, Strategy, register
from shardsearch.strategies.logical import LDim, logical_strategies
from shardsearch.strategies.specs import io_bytes


def _specs(op: OpView):
    """(lhs_spec, rhs_spec, out_spec): (batch, feature, spatial...) / (out-f, in-f, spatial...)."""
    dn = op.params.get("dimension_numbers")
    if dn is None:
        return tuple(tuple(range(len(s))) for s in (op.in_shapes[0], op.in_shapes[1], op.out_shapes[0]))
    return tuple(dn.lhs_spec), tuple(dn.rhs_spec), tuple(dn.out_spec)


@register("conv_general_dilated")
def conv_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    lhs_spec, rhs_spec, out_spec = _specs(op)
    lhs, rhs, out = op.in_shapes[0], op.in_shapes[1], op.out_shapes[0]
    kernel_window = math.prod(rhs[d] for d in rhs_spec[2:])
    total = 2.0 * math.prod(out) * kernel_window * rhs[rhs_spec[1]]  # in-features per group

    b = LDim(lhs[lhs_spec[0]], (lhs_spec[0], None, out_spec[0]))
    o = LDim(rhs[rhs_spec[0]], (None, rhs_spec[0], out_spec[1]))
    i = LDim(lhs[lhs_spec[1]], (lhs_spec[1], rhs_spec[1], None), partial=True)
    if op.params.get("batch_group_count", 1) != 1:
        dims = []  # the lhs batch dim holds groups: replicated only
    elif op.params.get("feature_group_count", 1) != 1:
        dims = [b]  # features are tied to their group: only the batch splits
    else:
        dims = [b, o, i]
    return logical_strategies(op, mesh, dims,
                              flops=lambda ins, outs, used: total / mesh.group_size(used),
                              nbytes=lambda ins, outs: io_bytes(op, ins, outs, mesh))
