"""The pass behind ``split_microbatches``: the state of every value, from the strategy rules.

A value is ``Local`` (per microbatch, split on its batch dim), ``Partial`` (per microbatch,
a partial result of a reduction over the batch) or ``Whole`` (the same in every microbatch:
computed once before the loop (PRE), by every microbatch inside a loop region that runs per
microbatch (MICRO), or after the loop (POST)). One pass visits the graph in order and
reads each operator's state off its strategies on the 1-D virtual mesh; what it learns
about later nodes (a generator to rebuild per microbatch, a loop carry that is split, a
region that runs per microbatch) becomes a hint for the next pass, until nothing changes.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from cost_model.collectives import CollectiveKind
from cost_model.mesh import MeshShape, Spec
from shardsearch.graph import LiteralValue, NodeKind, OpGraph, OpNode, ValueRef
from shardsearch.pipeline.batch_index import SCATTERS, BatchIndex
from shardsearch.pipeline.states import PRE, Local, Partial, Phase, Reduction, State, Whole
from shardsearch.strategies.per_node import _cache_key, _op_view
from shardsearch.strategies.registry import strategies_for

AXIS = "microbatch"
_REDUCTIONS = {"reduce_max": Reduction.MAX, "reduce_min": Reduction.MIN, "reduce_prod": Reduction.PROD,
               "reduce_and": Reduction.AND, "reduce_or": Reduction.OR}

RANDOM = frozenset({"random_bits", "rng_bit_generator", "rng_uniform"})
# Value-preserving moves and selections: a partial of any reduction passes through them.
LAYOUT = frozenset({"reshape", "transpose", "broadcast_in_dim", "squeeze", "slice", "rev", "copy", "copy_p",
                    "scan_slice", "scan_stack", "scan_carry", "scan_out", "while_carry", "while_out",
                    "dynamic_slice", "gather"})
SUMS = frozenset({"add", "add_any", "sub", "concatenate", "cond_merge"})  # every operand a partial sum (or zero)
UNARY_SUM = frozenset({"neg", "reduce_sum", "cumsum"})
ONE_FACTOR = frozenset({"mul", "dot_general", "conv_general_dilated"})  # linear in each operand


def describe(graph: OpGraph, node: OpNode) -> str:
    """``reduce_sum (float32[8,32] -> float32[32]) at model.py:12`` for messages."""
    shapes = lambda infos: ", ".join(f"{i.dtype.name}[{','.join(map(str, i.shape))}]" for i in infos)
    text = f"{node.primitive} ({shapes(graph.info(r) for r in node.inputs)} -> {shapes(node.outputs)})"
    return text + (f" at {node.label}" if node.label else "")


def split_dim(spec: Spec) -> int | None:
    return next((d for d, axes in enumerate(spec) if AXIS in axes), None)


@dataclasses.dataclass(frozen=True)
class Hints:
    localized: Mapping[int, int] = dataclasses.field(default_factory=dict)  # node -> dim, rebuilt per microbatch
    carries: Mapping[int, State] = dataclasses.field(default_factory=dict)  # loop carry node -> state
    micro_regions: frozenset[int] = frozenset()  # top-level regions that run per microbatch
    post_regions: frozenset[int] = frozenset()  # top-level regions that run after the loop


class Context:
    """What every pass shares: the graph, the virtual mesh, regions, strategies (cached)."""

    def __init__(self, graph: OpGraph, mesh: MeshShape, batch_nodes: frozenset[int], data_only: list[bool]):
        self.graph, self.mesh, self.batch_nodes, self.data_only = graph, mesh, batch_nodes, data_only
        self.users = graph.users()
        self.outputs = {r.node for r in graph.outputs if isinstance(r, ValueRef)}
        regions = graph.regions
        self.region_of: dict[int, int] = {}  # node -> its outermost region
        for i in sorted(range(len(regions)), key=lambda i: (-len(regions[i].members), i)):
            for m in regions[i].members:
                self.region_of.setdefault(m, i)
        self.top_regions = sorted(set(self.region_of.values()))
        self.carry_out = {c: ref for loop in graph.loops + graph.whiles for c, ref in zip(loop.carries, loop.carry_out)}
        self._strategies: dict = {}

    def strategies(self, node: OpNode):
        view = _op_view(self.graph, node)
        key = _cache_key(view)
        if key is None:
            return strategies_for(view, self.mesh)[0]
        if key not in self._strategies:
            self._strategies[key] = strategies_for(view, self.mesh)[0]
        return self._strategies[key]


def _is_all_reduce(strategy) -> bool:
    return any(c.kind is CollectiveKind.ALL_REDUCE and AXIS in c.axes for c in strategy.collectives)


class Pass(BatchIndex):
    def __init__(self, ctx: Context, hints: Hints):
        self.ctx, self.hints, self.graph = ctx, hints, ctx.graph
        self.state: dict[int, list[State]] = {}
        self.zero: set[ValueRef] = set()  # values known to be all zeros
        self.slices: dict[tuple[int, int], int] = {}  # (node, operand) -> dim of a whole value read sliced
        self.demands: dict[int, int] = {}  # generators to rebuild per microbatch next pass
        self.carries: dict[int, State] = dict(hints.carries)
        self.rescued: set[int] = set()  # parameter-free nodes PRE runs over the whole batch
        self.refusals: list[tuple[int, int, str]] = []  # (reader, origin, why)
        self.micro_regions: set[int] = set()
        self.post_regions: set[int] = set()

    # ------------------------------------------------------------------ the pass
    def run(self) -> "Pass":
        for n in self.graph.nodes:
            self.state[n.id] = self.visit(n)
            self.note_zero(n)
        self.check_regions()
        self.check_carries()
        return self

    def next_hints(self) -> Hints:
        return Hints({**self.hints.localized, **self.demands}, self.carries,
                     frozenset(self.micro_regions), frozenset(self.post_regions))

    def operand(self, ref) -> State:
        return PRE if isinstance(ref, LiteralValue) else self.state[ref.node][ref.index]

    def refuse(self, reader: int, origin: int | None, why: str = "") -> None:
        """Record that ``reader`` (per-microbatch work) cannot run as split; ``why`` says
        what ``origin`` does (default: from ``origin``'s state, see ``why_of``)."""
        self.refusals.append((reader, reader if origin is None else origin, why))

    def why_of(self, origin: int, why: str) -> str:
        if why:
            return why
        if any(isinstance(s, Partial) for s in self.state.get(origin, ())):
            return "reduces over the batch dimension"
        return "needs the whole batch at once"

    def visit(self, n: OpNode) -> list[State]:
        if n.kind is NodeKind.INPUT:
            return [Local(0) if n.id in self.ctx.batch_nodes else PRE]
        if n.kind is NodeKind.CONST:
            return [PRE]
        ins = [self.operand(r) for r in n.inputs]
        region = self.ctx.region_of.get(n.id)
        k = len(n.outputs)
        if n.id in self.hints.localized:
            got = self.match(n, ins, want=self.hints.localized[n.id])
            if got is not None:
                return self.run_local(n, ins, got, region)
        if n.id in self.carries:
            return self.carry(n, ins, self.carries[n.id])
        if any(isinstance(s, Partial) for s in ins):
            return [self.partial(n, ins, region)] * k
        if any(isinstance(s, Local) for s in ins):
            return self.local(n, ins, region)
        return [self.whole(n, ins, region)] * k

    # ------------------------------------------------------------------ per-microbatch work
    def local(self, n: OpNode, ins: list[State], region) -> list[State]:
        got = self.batched_index(n, ins) if n.primitive == "gather" or n.primitive in SCATTERS else None
        if got is None:
            got = self.match(n, ins)
        if got is not None and got[2] and self.ctx.data_only[n.id]:
            got = None  # a parameter-free reduction over the batch: PRE computes it whole
        if got is None:
            if self.ctx.data_only[n.id]:
                if region is not None:
                    self.refuse(n.id, None, "needs the whole batch at once inside a loop")
                self.rescued.add(n.id)
                return [PRE] * len(n.outputs)
            if region is not None:
                self.refuse(n.id, None, "needs the whole batch at once inside a loop")
            return [Whole(Phase.POST, n.id)] * len(n.outputs)
        return self.run_local(n, ins, got, region)

    def run_local(self, n: OpNode, ins, got, region) -> list[State]:
        out_dims, slices, partial = got
        for j, d in slices.items():
            self.read_sliced(n, j, d, ins[j])
        for s in ins:
            if isinstance(s, Whole) and s.phase is Phase.POST:
                self.refuse(n.id, s.origin)
        if partial:
            red = _REDUCTIONS.get(n.primitive, Reduction.SUM)
            return [Partial(red, n.id)] * len(n.outputs)
        inside = Whole(Phase.MICRO)
        return [Local(d) if d is not None else inside for d in out_dims]

    def match(self, n: OpNode, ins: list[State], want: int | None = None):
        """(output dims, {operand: dim of a whole value read sliced}, partial) of the
        strategy that runs ``n`` with its split operands as they are, reading fewest whole
        values sliced, or None. ``want``: the output must be split on that dim."""
        best = None
        for s in self.ctx.strategies(n):
            slices, ok = {}, True
            for j, (st, spec) in enumerate(zip(ins, s.in_specs)):
                d = split_dim(spec)
                if isinstance(st, Local):
                    ok = d == st.dim
                elif d is not None:
                    ok = not isinstance(n.inputs[j], LiteralValue) and isinstance(st, Whole)
                    slices[j] = d
                if not ok:
                    break
            if not ok:
                continue
            partial = _is_all_reduce(s)
            outs = [split_dim(o) for o in s.out_specs]
            if want is not None and (partial or outs[0] != want):
                continue
            if not partial and all(d is None for d in outs):
                continue  # a split operand leaves a trace in the output or is reduced
            if self.positional(n, s, allow_iota=want is not None) or (partial and not self.adds_once(n, ins)):
                continue
            rank = (len(slices), partial)
            if best is None or rank < best[0]:
                best = (rank, (outs, slices, partial))
        return None if best is None else best[1]

    def positional(self, n: OpNode, s, allow_iota: bool) -> bool:
        """Whether ``s`` splits a dim along which ``n``'s values depend on their global
        position, which a run on one microbatch's rows does not know."""
        p = n.primitive
        if p == "iota":
            return not allow_iota and split_dim(s.out_specs[0]) == n.params["dimension"]
        if p in RANDOM:
            keys = len(self.graph.info(n.inputs[0]).shape) if n.inputs else 0
            return any((d := split_dim(o)) is not None and (p != "random_bits" or d >= keys) for o in s.out_specs)
        if p == "gather":
            return split_dim(s.in_specs[0]) in tuple(n.params["dimension_numbers"].start_index_map)
        if p in SCATTERS:
            return split_dim(s.in_specs[0]) in tuple(n.params["dimension_numbers"].scatter_dims_to_operand_dims)
        return False

    def adds_once(self, n: OpNode, ins) -> bool:
        """A scatter-add's partial strategy adds its operand once in all: only a zero
        operand may be added by every microbatch."""
        return n.primitive not in SCATTERS or self.is_zero(n.inputs[0])

    def read_sliced(self, n: OpNode, j: int, d: int, st: State) -> None:
        self.slices[(n.id, j)] = d
        ref = n.inputs[j]
        if ref.node in self.hints.localized or self.demand(ref.node, d):
            return
        if isinstance(st, Whole) and st.phase is Phase.MICRO:
            self.refuse(n.id, ref.node, "is made inside a loop at the whole batch's shape (random bits "
                                        "inside a scanned layer), which cannot be sliced per microbatch yet")

    # ------------------------------------------------------------------ generators rebuilt per microbatch
    def demand(self, nid: int, d: int) -> bool:
        """Mark ``nid`` (and what it is made of) to be rebuilt per microbatch split on
        ``d`` next pass, if it can be: made of no batch input, random bits or positions."""
        if self.demands.get(nid) == d:
            return True
        trial: dict[int, int] = {}
        if self.localizable(nid, d, trial, 0):
            self.demands.update(trial)
            return True
        return False

    def localizable(self, nid: int, d: int, acc: dict, depth: int) -> bool:
        if nid in acc:
            return acc[nid] == d
        n = self.graph.nodes[nid]
        st = self.state[nid][0] if nid in self.state else None
        if isinstance(st, Local):
            return st.dim == d
        if (depth > 64 or n.kind is not NodeKind.OP or len(n.outputs) != 1 or n.primitive in RANDOM
                or not isinstance(st, Whole) or st.phase is Phase.POST):
            return False
        if n.primitive == "iota" and n.params["dimension"] == d and not self.index_only(n):
            return False
        for s in self.ctx.strategies(n):
            if split_dim(s.out_specs[0]) != d or _is_all_reduce(s) or self.positional(n, s, allow_iota=True):
                continue
            trial = {**acc, nid: d}
            if all(e is None or (isinstance(r, ValueRef) and self.localizable(r.node, e, trial, depth + 1))
                   for r, e in zip(n.inputs, map(split_dim, s.in_specs))):
                acc.update(trial)
                return True
        return False

    # ------------------------------------------------------------------ partial results
    def partial(self, n: OpNode, ins: list[State], region) -> State:
        first = next(s for s in ins if isinstance(s, Partial))
        same = all(s.reduction is first.reduction for s in ins if isinstance(s, Partial))
        if same and not any(isinstance(s, Local) for s in ins) and self.linear(n, ins, first.reduction):
            return Partial(first.reduction, first.origin)
        if region in self.hints.micro_regions:
            self.refuse(n.id, first.origin, "is combined across microbatches inside a loop")
        return Whole(Phase.POST, first.origin)

    def is_zero(self, ref) -> bool:
        if isinstance(ref, LiteralValue):
            return bool(np.all(np.asarray(ref.value) == 0))
        return ref in self.zero

    def note_zero(self, n: OpNode) -> None:
        if n.primitive in ("broadcast_in_dim", "convert_element_type", "reshape", "transpose", "squeeze",
                           "copy", "copy_p") and n.inputs and self.is_zero(n.inputs[0]):
            self.zero.add(ValueRef(n.id, 0))

    def linear(self, n: OpNode, ins: list[State], red: Reduction) -> bool:
        """Whether ``n`` of partial sums (or of partial maxima, ...) is the same reduction
        of its results per microbatch, so the combination can wait."""
        p = n.primitive
        part = lambda j: isinstance(ins[j], Partial)
        part_or_zero = lambda j: part(j) or self.is_zero(n.inputs[j])
        whole = lambda j: isinstance(ins[j], Whole) and ins[j].phase is not Phase.POST
        rest_whole = lambda first: all(whole(j) for j in range(first, len(ins)))
        if p in LAYOUT:
            return part(0) and rest_whole(1)
        if red is not Reduction.SUM:
            same = {"max": Reduction.MAX, "min": Reduction.MIN, "reduce_max": Reduction.MAX,
                    "reduce_min": Reduction.MIN}.get(p)
            return same is red and all(part(j) for j in range(len(ins)))
        if p in SUMS:
            return all(part_or_zero(j) for j in range(len(ins)))
        if p in UNARY_SUM:
            return part(0)
        if p == "convert_element_type":
            return part(0) and self.graph.info(n.inputs[0]).dtype.kind == "f" and n.outputs[0].dtype.kind == "f"
        if p == "select_n":
            return whole(0) and all(part_or_zero(j) for j in range(1, len(ins)))
        if p == "pad":
            return part(0) and self.is_zero(n.inputs[1])
        if p == "dynamic_update_slice":
            return part_or_zero(0) and part_or_zero(1) and rest_whole(2)
        if p in SCATTERS:
            return p in ("scatter-add", "scatter_add") and part_or_zero(0) and whole(1) and part(2)
        if p in ONE_FACTOR:
            return sum(map(part, range(len(ins)))) == 1 and all(part(j) or whole(j) for j in range(len(ins)))
        if p == "div":
            return part(0) and whole(1)
        return False

    # ------------------------------------------------------------------ whole values
    def whole(self, n: OpNode, ins: list[State], region) -> State:
        post = next((s for s in ins if isinstance(s, Whole) and s.phase is Phase.POST), None)
        if region in self.hints.micro_regions:
            if post is not None:
                self.refuse(n.id, post.origin)
            return Whole(Phase.MICRO)
        if post is not None:
            return post
        if region in self.hints.post_regions:
            return Whole(Phase.POST, self.graph.regions[region].members[0])
        if any(isinstance(s, Whole) and s.phase is Phase.MICRO for s in ins):
            return Whole(Phase.POST, n.id)  # reads what the last microbatch left
        return PRE

    # ------------------------------------------------------------------ loops and regions
    def carry(self, n: OpNode, ins: list[State], hint: State) -> list[State]:
        init = ins[0]
        if isinstance(hint, Local) and init != hint:
            if isinstance(init, Whole) and init.phase is not Phase.POST:
                self.read_sliced(n, 0, hint.dim, init)
            else:
                self.refuse(n.id, getattr(init, "origin", None), "enters a loop whose carry is split per microbatch")
        elif isinstance(hint, Partial) and init != hint and not self.is_zero(n.inputs[0]):
            self.refuse(n.id, hint.origin, "is accumulated in a loop carry that does not start at zero")
        return [hint]

    def check_carries(self) -> None:
        for c, ref in self.ctx.carry_out.items():
            now, nxt = self.state[c][0], self.operand(ref)
            if now == nxt or (isinstance(now, Whole) and isinstance(nxt, Whole)):
                continue
            if isinstance(nxt, (Local, Partial)) and isinstance(now, Whole):
                self.carries[c] = nxt
            elif isinstance(now, Local) and isinstance(nxt, Whole) and isinstance(ref, ValueRef) \
                    and nxt.phase is not Phase.POST and self.demand(ref.node, now.dim):
                continue
            elif isinstance(now, Partial) and self.is_zero(ref):
                continue
            else:
                self.refuse(c, getattr(nxt, "origin", None) or c,
                            "changes how a loop carry is split between iterations")

    def check_regions(self) -> None:
        for r in self.ctx.top_regions:
            region = self.graph.regions[r]
            states = [s for m in region.members for s in self.state[m]]
            if any(isinstance(s, (Local, Partial)) for s in states):
                self.micro_regions.add(r)
                post = next((s for s in states if isinstance(s, Whole) and s.phase is Phase.POST), None)
                if post is not None and post.origin is not None:
                    self.refuse(region.members[0], post.origin)
            elif any(isinstance(s, Whole) and s.phase is Phase.POST for s in states):
                self.post_regions.add(r)
        for cond in self.graph.conds:
            top = self.ctx.region_of.get(cond.merges[0])
            index = self.operand(cond.index)
            if not (isinstance(index, Whole) and index.phase is not Phase.POST):
                if top in self.micro_regions:
                    self.refuse(cond.merges[0], getattr(index, "origin", None), "decides a branch per microbatch")
                else:
                    self.post_regions.add(top)

    def pre_copies(self) -> set[int]:
        """Per-microbatch nodes PRE also runs whole: what the rescued reductions read."""
        out: set[int] = set()
        todo = [r for n in self.rescued for r in self.graph.nodes[n].inputs]
        while todo:
            ref = todo.pop()
            if isinstance(ref, LiteralValue) or ref.node in out:
                continue
            node = self.graph.nodes[ref.node]
            if node.kind is NodeKind.OP and isinstance(self.state[ref.node][ref.index], (Local, Partial)):
                out.add(ref.node)
                todo.extend(node.inputs)
        return out
