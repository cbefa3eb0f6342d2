"""The per-microbatch program of a split step as an OpGraph of its own (numpy only).

``build_micro_graph(graph, split, M)`` (re-exported as ``microbatch.micro_graph``) keeps
the MICRO and ACCUM nodes of ``split`` in graph order, at B/M rows where they are split,
with the params that carry shapes rewritten (broadcast_in_dim / iota shape, reshape
new_sizes, gather / dynamic_slice slice sizes, slice limits); their payloads become
``Rebound`` (the equation's primitive with the new params), which ``trace.eval_graph``
runs like an equation. Regions (loops, remat, cond, while) inside come along renumbered.

Its boundary, in ``MicroGraph``:
- ``inputs[i]`` for input node i of the micro graph: a value of the original graph made
  before the loop (a PRE value, a batch input) read whole, or one microbatch at a time
  along ``dim`` (``MicroInput``);
- ``outputs[i]`` for output i of the micro graph: a value of the original graph that the
  once-per-step work after the loop (POST) or the step's results read, and how the
  microbatches' copies of it make the whole value (``MicroOutput``: STACK them back along
  the batch dim, ACCUM their partial results by ``reduction``, or take the LAST one of
  values every microbatch computes alike).
``node_map`` maps each original node id to its micro node id. The micro graph has no
pytrees (``in_tree``/``out_tree`` are None): plan it with the ordinary search and run it
with ``trace.eval_graph`` on flat lists.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Any, Mapping

from shardsearch.graph import Cond, LiteralValue, Loop, NodeKind, OpGraph, OpNode, Remat, TensorInfo, ValueRef, While
from shardsearch.pipeline.states import Phase, Reduction

if TYPE_CHECKING:
    from shardsearch.pipeline.microbatch import MicrobatchSplit


class OutKind(enum.Enum):
    STACK = "stack"  # one piece per microbatch, put back together along the batch dim
    ACCUM = "accum"  # a partial result per microbatch, combined by a Reduction
    LAST = "last"  # the same in every microbatch


@dataclasses.dataclass(frozen=True)
class MicroInput:
    value: ValueRef  # a value of the original graph, made before the microbatch loop
    dim: int | None  # read one microbatch at a time along this dim; None: whole


@dataclasses.dataclass(frozen=True)
class MicroOutput:
    value: ValueRef  # a value of the original graph
    kind: OutKind
    dim: int | None = None  # STACK: the batch dim
    reduction: Reduction | None = None  # ACCUM


@dataclasses.dataclass(frozen=True)
class MicroGraph:
    graph: OpGraph
    num_microbatches: int
    inputs: tuple[MicroInput, ...]
    outputs: tuple[MicroOutput, ...]
    node_map: Mapping[int, int]


@dataclasses.dataclass(frozen=True)
class Rebound:
    """A jax equation's primitive bound with other params (duck-types the equation for
    ``trace.eval_graph``: it reads ``primitive`` and ``params``)."""

    primitive: Any
    params: dict


def local_shape(shape: tuple[int, ...], dim: int | None, m: int) -> tuple[int, ...]:
    return shape if dim is None else shape[:dim] + (shape[dim] // m,) + shape[dim + 1:]


def rewrite_params(primitive: str, params: dict, old_in, new_in, old_out, new_out) -> dict:
    """``params`` of an operator whose operands / results changed shape (batch rows only)."""
    p = dict(params)
    if primitive in ("broadcast_in_dim", "iota"):
        p["shape"] = new_out[0]
    elif primitive == "reshape":
        p["new_sizes"] = new_out[0]
    elif primitive == "dynamic_slice":
        p["slice_sizes"] = new_out[0]
    elif primitive == "gather":
        # a dim taken whole shrinks with the operand; an indexed one keeps its slice size
        p["slice_sizes"] = tuple(n if s == o and o != n else s
                                 for s, o, n in zip(p["slice_sizes"], old_in[0], new_in[0]))
    elif primitive == "slice":
        limits = list(p["limit_indices"])
        for d, (o, n) in enumerate(zip(old_in[0], new_in[0])):
            if o != n:
                if p["start_indices"][d] != 0 or limits[d] != o:
                    raise ValueError(f"slice of part of a split dim {d}: {p}")
                limits[d] = n
        p["limit_indices"] = tuple(limits)
    elif isinstance(p.get("shape"), tuple) and tuple(p["shape"]) == tuple(old_out[0]):
        p["shape"] = new_out[0]
    return p


class _Builder:
    def __init__(self, graph: OpGraph, split: "MicrobatchSplit", m: int):
        self.graph, self.split, self.m = graph, split, m
        self.members = split.nodes(Phase.MICRO, Phase.ACCUM)
        self.member_set = frozenset(self.members)
        self.nodes: list[OpNode] = []
        self.node_map: dict[int, int] = {}
        self.inputs: list[MicroInput] = []
        self.input_of: dict[tuple[ValueRef, int | None], int] = {}

    def boundary(self, ref: ValueRef, dim: int | None) -> ValueRef:
        key = (ref, dim)
        if key not in self.input_of:
            info = self.graph.info(ref)
            src = self.graph.nodes[ref.node]
            name = src.label if src.kind is NodeKind.INPUT else f"{src.primitive} #{src.id}"
            label = f"micro<{name}>" + ("" if dim is None else f"[microbatch along dim {dim}]")
            nid = len(self.nodes)
            self.nodes.append(OpNode(nid, NodeKind.INPUT, "input", {}, (),
                                     (TensorInfo(local_shape(info.shape, dim, self.m), info.dtype),), label))
            self.input_of[key] = nid
            self.inputs.append(MicroInput(ref, dim))
        return ValueRef(self.input_of[key])

    def operand(self, node: int, j: int, ref):
        if isinstance(ref, LiteralValue):
            return ref
        if ref.node in self.member_set:
            return ValueRef(self.node_map[ref.node], ref.index)
        dim = self.split.batch_dims.get(ref, self.split.slices.get((node, j)))
        return self.boundary(ref, dim)

    def region_ref(self, ref):
        """An operand named by a region (a loop's next carry, a remat's input): as the
        region's own nodes read it."""
        if isinstance(ref, LiteralValue) or ref.node in self.member_set:
            return self.operand(-1, -1, ref)
        dim = next((d for (r, d) in self.input_of if r == ref), self.split.batch_dims.get(ref))
        return self.boundary(ref, dim)

    def add(self, n: OpNode) -> None:
        inputs = tuple(self.operand(n.id, j, r) for j, r in enumerate(n.inputs))
        dims = self.split.batch_dims
        outs = tuple(TensorInfo(local_shape(o.shape, dims.get(ValueRef(n.id, k)), self.m), o.dtype)
                     for k, o in enumerate(n.outputs))
        params, payload = n.params, n.payload
        new_in = tuple(self.info(r) for r in inputs)
        old_in = tuple(self.graph.info(r).shape for r in n.inputs)
        if outs != n.outputs or tuple(i.shape for i in new_in) != old_in:
            shapes = (old_in, tuple(i.shape for i in new_in), tuple(o.shape for o in n.outputs),
                      tuple(o.shape for o in outs))
            params = rewrite_params(n.primitive, params, *shapes)
            if payload is not None:  # (a loop's slice / carry nodes have none: the loop runs them)
                payload = Rebound(payload.primitive, rewrite_params(n.primitive, payload.params, *shapes))
        nid = len(self.nodes)
        self.nodes.append(dataclasses.replace(n, id=nid, params=params, inputs=inputs, outputs=outs, payload=payload))
        self.node_map[n.id] = nid

    def info(self, ref) -> TensorInfo:
        return ref.info if isinstance(ref, LiteralValue) else self.nodes[ref.node].outputs[ref.index]

    def region(self, r):
        ids = lambda xs: tuple(self.node_map[x] for x in xs)
        refs = lambda xs: tuple(self.region_ref(x) for x in xs)
        if isinstance(r, Loop):
            return dataclasses.replace(r, slices=ids(r.slices), carries=ids(r.carries), body=ids(r.body),
                                       carry_out=refs(r.carry_out), ys=refs(r.ys), outs=ids(r.outs),
                                       stacks=ids(r.stacks))
        if isinstance(r, Remat):
            return dataclasses.replace(r, members=ids(r.members), inputs=refs(r.inputs), outputs=refs(r.outputs))
        if isinstance(r, Cond):
            return dataclasses.replace(r, index=self.region_ref(r.index), branches=tuple(map(ids, r.branches)),
                                       results=tuple(map(refs, r.results)), merges=ids(r.merges))
        return dataclasses.replace(r, carries=ids(r.carries), cond=ids(r.cond), pred=self.region_ref(r.pred),
                                   body=ids(r.body), carry_out=refs(r.carry_out), outs=ids(r.outs))

    def outputs(self) -> list[MicroOutput]:
        """Member values that POST work or the step's results read."""
        wanted: dict[ValueRef, None] = {}
        post = self.split.nodes(Phase.POST)
        for n in post:
            for r in self.graph.nodes[n].inputs:
                if isinstance(r, ValueRef) and r.node in self.member_set:
                    wanted[r] = None
        for r in self.graph.outputs:
            if isinstance(r, ValueRef) and r.node in self.member_set:
                wanted[r] = None
        out = []
        for r in wanted:
            if r in self.split.batch_dims:
                out.append(MicroOutput(r, OutKind.STACK, dim=self.split.batch_dims[r]))
            elif r.node in self.split.reductions:
                out.append(MicroOutput(r, OutKind.ACCUM, reduction=self.split.reductions[r.node]))
            else:
                out.append(MicroOutput(r, OutKind.LAST))
        return out


def build_micro_graph(graph: OpGraph, split: "MicrobatchSplit", num_microbatches: int) -> MicroGraph:
    """The per-microbatch program of ``graph`` under ``split`` (see the module notes)."""
    split.check(graph, num_microbatches)
    b = _Builder(graph, split, num_microbatches)
    for n in b.members:
        b.add(graph.nodes[n])
    regions: dict[type, list] = {Loop: [], Remat: [], Cond: [], While: []}
    for r in graph.regions:
        inside = [m in b.member_set for m in r.members]
        if all(inside):
            regions[type(r)].append(b.region(r))
        elif any(inside):
            raise ValueError(f"a {type(r).__name__} region is split between phases")  # split_microbatches prevents it
    outs = b.outputs()
    names = lambda r: f"{graph.nodes[r.node].primitive} #{r.node}[{r.index}]"
    micro = OpGraph(
        nodes=b.nodes,
        outputs=tuple(b.operand(-1, -1, o.value) for o in outs),
        input_nodes=tuple(b.input_of[(i.value, i.dim)] for i in b.inputs),
        in_paths=tuple(b.nodes[b.input_of[(i.value, i.dim)]].label for i in b.inputs),
        out_paths=tuple(f"micro>{names(o.value)}" for o in outs),
        in_tree=None,
        out_tree=None,
        output_aliases=(None,) * len(outs),
        loops=tuple(regions[Loop]),
        remats=tuple(regions[Remat]),
        conds=tuple(regions[Cond]),
        whiles=tuple(regions[While]),
    )
    return MicroGraph(micro, num_microbatches, tuple(b.inputs), tuple(outs), dict(b.node_map))
