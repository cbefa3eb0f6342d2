"""dot_general: every placement of mesh axes on the logical dims of the einsum.

Logical dims are the batch dims, the lhs free dims, the rhs free dims and the
contracting dims. An axis on a batch or free dim splits the output (data parallel,
Megatron column); an axis on a contracting dim leaves partial sums that are
all-reduced (Megatron row).

There is no reduce-scatter strategy: XLA's SPMD partitioner emits an output split
over a contracting axis as an all-reduce and a local slice (the CPU compiler has no
reduce-scatter creator), and on some device orders as a slice over another axis plus
a collective-permute. The all-reduce strategy followed by a free slice on the
consumer's edge is that program, priced as XLA emits it.
"""

from __future__ import annotations

import math

from cost_model.collectives import Collective, CollectiveKind
from cost_model.mesh import MeshShape, Spec

from shardsearch.strategies.base import OpView, Strategy, register
from shardsearch.strategies.specs import enumerate_specs, io_bytes, spec_bytes, spec_name


def _dims(op: OpView):
    """Logical dim of every lhs / rhs dim, logical sizes, and counts (batch, free, free)."""
    (lc, rc), (lb, rb) = op.params["dimension_numbers"]
    lhs, rhs = op.in_shapes[0], op.in_shapes[1]
    lf = [d for d in range(len(lhs)) if d not in lc and d not in lb]
    rf = [d for d in range(len(rhs)) if d not in rc and d not in rb]
    nb, nlf, nrf = len(lb), len(lf), len(rf)
    lhs_map = [0] * len(lhs)
    rhs_map = [0] * len(rhs)
    for i, (l, r) in enumerate(zip(lb, rb)):
        lhs_map[l] = rhs_map[r] = i
    for j, d in enumerate(lf):
        lhs_map[d] = nb + j
    for j, d in enumerate(rf):
        rhs_map[d] = nb + nlf + j
    for k, (l, r) in enumerate(zip(lc, rc)):
        lhs_map[l] = rhs_map[r] = nb + nlf + nrf + k
    sizes = [lhs[d] for d in lb] + [lhs[d] for d in lf] + [rhs[d] for d in rf] + [lhs[d] for d in lc]
    return lhs_map, rhs_map, tuple(sizes), nb + nlf + nrf


def _name(lhs: Spec, rhs: Spec, out: Spec, coll: Collective | None) -> str:
    name = f"{spec_name(lhs)} @ {spec_name(rhs)} -> {spec_name(out)}"
    if coll is not None:
        name += f" [AR({','.join(coll.axes)})]"
    return name


@register("dot_general")
def dot_general_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    lhs_map, rhs_map, sizes, n_out = _dims(op)
    out_shape, itemsize = op.out_shapes[0], op.out_dtypes[0].itemsize
    total_flops = 2.0 * math.prod(sizes)
    result = []
    for assign in enumerate_specs(sizes, mesh):
        lhs = tuple(assign[i] for i in lhs_map)
        rhs = tuple(assign[i] for i in rhs_map)
        out = tuple(assign[:n_out])
        used = [a for d in assign for a in d]
        flops = total_flops / mesh.group_size(used)
        caxes = tuple(a for d in assign[n_out:] for a in d)
        if not caxes:
            result.append(Strategy(_name(lhs, rhs, out, None), (lhs, rhs), (out,), (),
                                   flops, io_bytes(op, (lhs, rhs), (out,), mesh)))
            continue
        full = spec_bytes(tuple(out_shape), itemsize, out, mesh)  # partial sums each device holds
        # An all-reduce is over a set of axes: mesh order keeps names canonical.
        ar = Collective(CollectiveKind.ALL_REDUCE, tuple(a for a in mesh.axis_names if a in caxes), full)
        result.append(Strategy(_name(lhs, rhs, out, ar), (lhs, rhs), (out,), (ar,),
                               flops, io_bytes(op, (lhs, rhs), (out,), mesh)))
    return result
