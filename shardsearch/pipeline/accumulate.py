"""Gradient accumulation as one program: PRE, a scan over the microbatches, POST.

``accumulation_graph(graph, split, M) -> OpGraph`` rewrites a traced step into the same
step run over M microbatches, as a graph the ordinary search plans and ``build_jitted``
runs (so the intra-op plan of the per-microbatch work is pinned inside the loop):

- PRE: the nodes of phase PRE (arguments, constants, work that reads no batch-split
  value) and the ``pre_copies``, at their traced shapes;
- each value the microbatches read one piece at a time (a batch input, dropout's random
  bits) is reshaped to [M, ..., B/M, ...] (its batch dim cut in M blocks, the block index
  first) and sliced per iteration by a ``scan_slice`` node;
- a ``graph.Loop`` of length M (run as ``jax.lax.scan``) whose body is the micro graph
  (``micro_graph``), with one carry per partial result (started at the reduction's
  identity, combined with each microbatch's part: add for sums, max, ...) and per value
  every microbatch computes alike; per-microbatch values that POST reads leave it as
  stacked outputs and are put back to [..., B, ...];
- POST: the nodes of phase POST (the optimizer update), reading the loop's results.

Arguments, results, pytrees and output aliases stay the original step's, so a plan of
this graph places and donates the user's arrays as for the unsplit step.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shardsearch.graph import Cond, LiteralValue, Loop, NodeKind, OpGraph, OpNode, Remat, TensorInfo, ValueRef, While
from shardsearch.pipeline.micro_graph import MicroGraph, OutKind
from shardsearch.pipeline.microbatch import MicrobatchSplit, micro_graph
from shardsearch.pipeline.states import Phase, Reduction
from shardsearch.pipeline.subgraph import remap_region
from shardsearch.trace import ops

COMBINE = {Reduction.SUM: "add", Reduction.MAX: "max", Reduction.MIN: "min", Reduction.PROD: "mul",
           Reduction.AND: "and", Reduction.OR: "or"}
LABEL = "microbatch loop"


class _Nodes:
    """Nodes appended in order, with their ids."""

    def __init__(self):
        self.nodes: list[OpNode] = []

    def copy(self, node: OpNode, inputs, trips: int | None = None) -> int:
        nid = len(self.nodes)
        self.nodes.append(dataclasses.replace(node, id=nid, inputs=tuple(inputs),
                                              trips=node.trips if trips is None else trips))
        return nid

    def op(self, traced: ops.TracedOp, args, trips: int = 1) -> ValueRef:
        inputs = [o if isinstance(o, LiteralValue) else args[o] for o in traced.operands]
        nid = len(self.nodes)
        self.nodes.append(OpNode(nid, NodeKind.OP, traced.primitive, traced.params, tuple(inputs), traced.outputs,
                                 LABEL, traced.payload, trips))
        return ValueRef(nid)

    def synthetic(self, primitive: str, length: int, operand, info: TensorInfo, trips: int = 1) -> int:
        """A loop seam (scan_slice / scan_carry / scan_out / scan_stack); the loop runs it."""
        nid = len(self.nodes)
        self.nodes.append(OpNode(nid, NodeKind.OP, primitive, {"length": length}, (operand,), (info,), LABEL,
                                 None, trips))
        return nid

    def info(self, ref) -> TensorInfo:
        return ref.info if isinstance(ref, LiteralValue) else self.nodes[ref.node].outputs[ref.index]


def _move(perm_dim: int, rank: int, to_front: bool) -> tuple[int, ...]:
    """The permutation that moves dim ``perm_dim`` to the front (or back from it)."""
    order = [perm_dim] + [d for d in range(rank) if d != perm_dim]
    if to_front:
        return tuple(order)
    return tuple(order.index(d) for d in range(rank))


def _blocks(b: _Nodes, ref, dim: int, m: int) -> ValueRef:
    """[..., B, ...] -> [M, ..., B/M, ...]: block k of the batch dim at index k."""
    info = b.info(ref)
    shape = info.shape[:dim] + (m, info.shape[dim] // m) + info.shape[dim + 1:]
    out = b.op(ops.reshape(info, shape), [ref])
    if dim:
        out = b.op(ops.transpose(b.info(out), _move(dim, len(shape), True)), [out])
    return out


def _unblocks(b: _Nodes, ref: ValueRef, dim: int) -> ValueRef:
    """[M, ..., B/M, ...] -> [..., B, ...]."""
    if dim:
        ref = b.op(ops.transpose(b.info(ref), _move(dim, len(b.info(ref).shape), False)), [ref])
    info = b.info(ref)
    shape = info.shape[:dim] + (info.shape[dim] * info.shape[dim + 1],) + info.shape[dim + 2:]
    return b.op(ops.reshape(info, shape), [ref])


def accumulation_graph(graph: OpGraph, split: MicrobatchSplit, num_microbatches: int,
                       micro: MicroGraph | None = None) -> OpGraph:
    """``graph`` run as ``num_microbatches`` microbatches in one scan (see the module notes)."""
    m = num_microbatches
    micro = micro or micro_graph(graph, split, m)
    b = _Nodes()
    pre: dict[int, int] = {}  # original node -> its PRE copy
    pre_ref = lambda r: r if isinstance(r, LiteralValue) else ValueRef(pre[r.node], r.index)
    for n in graph.nodes:
        if split.phases[n.id] is Phase.PRE or n.id in split.pre_copies:
            pre[n.id] = b.copy(n, [pre_ref(r) for r in n.inputs])

    # the loop's seams: slices of the values read per microbatch, carries of the combined
    # ones; what they read is made first (the loop runs whole from its first node on)
    body: dict[int, ValueRef] = {}  # micro graph node -> its value in the loop body
    sliced = []
    for nid, inp in zip(micro.graph.input_nodes, micro.inputs):
        if inp.dim is None:
            body[nid] = pre_ref(inp.value)
        else:
            sliced.append((nid, _blocks(b, pre_ref(inp.value), inp.dim, m)))
    carried = [(k, o) for k, o in enumerate(micro.outputs) if o.kind is not OutKind.STACK]
    inits = []
    for k, o in carried:
        info = micro.graph.info(micro.graph.outputs[k])
        start = ops.identity_value(COMBINE[o.reduction], info.dtype) if o.kind is OutKind.ACCUM else 0
        inits.append((info, LiteralValue(np.asarray(start, info.dtype)[()], info) if not info.shape  # no node
                      else b.op(ops.full(info, start), [])))
    slices = []
    for nid, stacked in sliced:
        slices.append(b.synthetic("scan_slice", m, stacked, micro.graph.nodes[nid].outputs[0]))
        body[nid] = ValueRef(slices[-1])
    carries = [b.synthetic("scan_carry", m, init, info) for info, init in inits]

    # the body: the micro graph's operators, run m times as often, then the combinations
    first = len(b.nodes)
    inner = lambda r: r if isinstance(r, LiteralValue) else ValueRef(body[r.node].node, r.index)
    for n in micro.graph.nodes:
        if n.kind is NodeKind.INPUT:
            continue
        body[n.id] = ValueRef(b.copy(n, [inner(r) for r in n.inputs], trips=n.trips * m))
    results = [inner(r) for r in micro.graph.outputs]
    carry_out = []
    for (k, o), c in zip(carried, carries):
        if o.kind is OutKind.ACCUM:
            info = b.info(results[k])
            carry_out.append(b.op(ops.binary(COMBINE[o.reduction], info), [ValueRef(c), results[k]], trips=m))
        else:
            carry_out.append(results[k])
    body_ids = tuple(range(first, len(b.nodes)))
    outs = [b.synthetic("scan_out", m, r, b.info(r)) for r in carry_out]
    stacked = [(k, o) for k, o in enumerate(micro.outputs) if o.kind is OutKind.STACK]
    stacks = []
    for k, o in stacked:
        info = b.info(results[k])
        stacks.append(b.synthetic("scan_stack", m, results[k], TensorInfo((m,) + info.shape, info.dtype)))
    loop = Loop(m, False, 1, tuple(slices), tuple(carries), body_ids, tuple(carry_out),
                tuple(results[k] for k, _ in stacked), tuple(outs), tuple(stacks))

    # what the loop hands to POST, in the original graph's terms
    done: dict[ValueRef, ValueRef] = {}
    for (k, o), out in zip(carried, outs):
        done[o.value] = ValueRef(out)
    for (k, o), st in zip(stacked, stacks):
        done[o.value] = _unblocks(b, ValueRef(st), o.dim)
    post: dict[int, int] = {}

    def after(r):
        if isinstance(r, LiteralValue):
            return r
        if r in done:
            return done[r]
        return ValueRef(post[r.node], r.index) if r.node in post else pre_ref(r)

    for n in graph.nodes:
        if split.phases[n.id] is Phase.POST:
            post[n.id] = b.copy(n, [after(r) for r in n.inputs])

    regions: dict[type, list] = {Loop: [], Remat: [], Cond: [], While: []}
    for table, refs, source in ((pre, pre_ref, graph.regions), (post, after, graph.regions)):
        for r in source:
            if all(x in table for x in r.members) and not any(x in split.pre_copies for x in r.members):
                regions[type(r)].append(remap_region(r, table, refs))
    micro_ids = {k: v.node for k, v in body.items()}
    for r in micro.graph.regions:
        regions[type(r)].append(remap_region(r, micro_ids, inner))
    regions[Loop].append(loop)
    return dataclasses.replace(
        graph,
        nodes=b.nodes,
        outputs=tuple(after(r) for r in graph.outputs),
        input_nodes=tuple(pre[i] for i in graph.input_nodes),
        loops=tuple(regions[Loop]),
        remats=tuple(regions[Remat]),
        conds=tuple(regions[Cond]),
        whiles=tuple(regions[While]),
    )
