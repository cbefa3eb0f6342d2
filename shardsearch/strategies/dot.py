"""dot_general: every placement of mesh axes on the logical dims of the einsum.

Logical dims are the batch dims, the lhs free dims, the rhs free dims and the
contracting dims. An axis on a batch or free dim splits the output (data parallel,
Megatron column); an axis on a contracting dim leaves partial sums that are
all-reduced (Megatron row).

An output split over the contracting axes (``[RS(axes)]``) is that program in one
strategy: each device keeps its shard of the summed result, as FSDP/ZeRO's weight
gradients are, so the operators that follow it (the optimizer's update) can run on the
shard. Without it a weight gradient could only come whole, its followers took it as it
came, and the update ran on the gathered weight, which XLA then kept live to the step's
end (issue 13). The GPU compiler's reduce-scatter creator turns the all-reduce and slice
into one reduce-scatter (half the traffic); it is priced as the all-reduce all the same.
The CPU compiler has no such pass. The search keeps these strategies only with
``SearchConfig.sharded_updates`` on a cluster with a GPU target, and only for operators
off the critical path (weight gradients, which only the optimizer reads:
``search._Candidate``). Offered by default they made two searches worse, from the search
rather than the programs: an MLP (8192 x 512, 6 layers, Adam, 4 devices, h100-8) stayed
data parallel at 231.7 us/step though FSDP with sharded updates prices at 229.7 (the
gathers' latency share starts from a whole launch and never moves in a plan without
gathers), and the same MLP at 4096 wide under a 1 GB budget found no whole-batch fit (the
memory row does not see the gathered copies these plans keep for the backward) and fell
back to 2 microbatches, 8.37 ms/step against 6.08. Only an output dim not split already
takes the contracting axes.
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


def _name(lhs: Spec, rhs: Spec, out: Spec, coll: Collective | None, scatter: bool = False) -> str:
    name = f"{spec_name(lhs)} @ {spec_name(rhs)} -> {spec_name(out)}"
    if coll is not None:
        name += f" [{'RS' if scatter else 'AR'}({','.join(coll.axes)})]"
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
        for d in range(n_out):  # the same, reduce-scattered onto output dim d
            if out[d] or out_shape[d] % mesh.group_size(ar.axes):
                continue
            scattered = out[:d] + (ar.axes,) + out[d + 1:]
            result.append(Strategy(_name(lhs, rhs, scattered, ar, scatter=True), (lhs, rhs), (scattered,), (ar,),
                                   flops, io_bytes(op, (lhs, rhs), (scattered,), mesh)))
    return result


def reduce_scatters(s: Strategy) -> bool:
    """Whether ``s`` all-reduces partial sums into a result split over the same axes."""
    out_axes = {a for spec in s.out_specs for d in spec for a in d}
    return any(c.kind is CollectiveKind.ALL_REDUCE and set(c.axes) <= out_axes for c in s.collectives)


def without_reduce_scatter(per_node: list[list[Strategy]], keep=frozenset()) -> list[list[Strategy]]:
    """``per_node`` less the reduce-scatter strategies, but for the nodes in ``keep``;
    repeated layers keep sharing one list."""
    memo: dict[int, list[Strategy]] = {}
    out = []
    for i, strats in enumerate(per_node):
        if i in keep:
            out.append(strats)
            continue
        if id(strats) not in memo:
            kept = [s for s in strats if not reduce_scatters(s)]
            memo[id(strats)] = kept if len(kept) < len(strats) else strats
        out.append(memo[id(strats)])
    return out
