"""A traced step rewritten to recompute chosen layers' residuals in the backward pass.

What ``jax.checkpoint`` does to a layer, done on the traced (already differentiated)
graph, so the ordinary search prices it and ``trace.eval_graph`` runs it:

- just before layer ``c``'s backward starts (``Layer.backward_at``), its values the
  backward reads are made again from the layer's inputs, by copies of the forward nodes
  that made them; the backward reads the copies, so the forward's values die at the end
  of the forward instead of living until the backward;
- each input of the copies passes an ``optimization_barrier`` together with a scalar
  made from a backward value at that point (as ``jax.checkpoint(prevent_cse=True)`` does):
  XLA cannot merge the copies with the forward nodes (CSE) nor run them before the
  backward gets there;
- a policy keeps some values instead (``dots_saveable``: every dot_general's result;
  ``dots_with_no_batch_dims_saveable``: those without batch dims, so attention scores
  are recomputed and projections kept); ``nothing_saveable`` recomputes all;
- forward nodes left without readers are dropped (XLA drops them too).

``RematPlan`` says which layers, with which policy; ``remat_graph(graph, plan)`` is
deterministic, so ``plan.apply`` rebuilds the same graph from the traced step.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from shardsearch.config import REMAT_POLICIES
from shardsearch.graph import LiteralValue, NodeKind, OpGraph, OpNode, TensorInfo, ValueRef
from shardsearch.pipeline.subgraph import remap_region
from shardsearch.remat.layers import ForwardLayers, Layer, forward_layers
from shardsearch.repeats import Repeat
from shardsearch.trace import ops

POLICIES = REMAT_POLICIES
LABEL = "remat of layer {c}"


@dataclasses.dataclass(frozen=True)
class RematPlan:
    """Layers (by index in the forward run) whose residuals the backward recomputes."""

    policy: str
    layers: tuple[int, ...]
    run: tuple[int, int, int]  # the forward run's (start, period, copies) in the graph it rewrites
    residual_bytes: int = 0  # what the recomputed layers kept before (global shapes)
    # True: the plan accumulates microbatches and each microbatch recomputes its layers
    # (``run`` is then in the per-microbatch program, ``pipeline.program.remat_program``)
    in_microbatch: bool = False

    def describe(self) -> str:
        where = " of each microbatch" if self.in_microbatch else ""
        return (f"layers {_ranges(self.layers)} of {self.run[2]} recompute their activations in the backward "
                f"pass{where} ({self.policy})")


def _ranges(xs) -> str:
    xs = sorted(xs)
    if not xs:
        return "none"
    out, lo = [], xs[0]
    for a, b in zip(xs, xs[1:] + [None]):
        if b != a + 1:
            out.append(str(lo) if lo == a else f"{lo}-{a}")
            lo = b
    return ", ".join(out)


def _saved(node: OpNode, policy: str) -> bool:
    if node.primitive != "dot_general" or policy == "nothing_saveable":
        return False
    if policy == "dots_saveable":
        return True
    (_, _), (lhs_batch, _) = node.params["dimension_numbers"]
    return not lhs_batch


def _recomputed(graph: OpGraph, layer: Layer, policy: str) -> list[int]:
    """Nodes of ``layer`` to copy, in order: those its residuals need, up to the
    layer's inputs and what the policy keeps."""
    inside = set(layer.nodes)
    need, stack = set(), [r.node for r in layer.residuals if not _saved(graph.nodes[r.node], policy)]
    while stack:
        n = stack.pop()
        if n in need:
            continue
        need.add(n)
        for r in graph.nodes[n].inputs:
            if (isinstance(r, ValueRef) and r.node in inside and graph.nodes[r.node].kind is NodeKind.OP
                    and not _saved(graph.nodes[r.node], policy)):
                stack.append(r.node)
    return sorted(need)


def plan_for(fwd: ForwardLayers, policy: str, layers, in_microbatch: bool = False) -> RematPlan:
    chosen = tuple(sorted(layers))
    run = (fwd.run.start, fwd.run.period, fwd.run.copies)
    return RematPlan(policy, chosen, run, sum(fwd.layers[c].residual_bytes for c in chosen), in_microbatch)


def remat_graph(graph: OpGraph, plan: RematPlan) -> OpGraph:
    """``graph`` with ``plan``'s layers recomputed (see the module notes)."""
    fwd = forward_layers(graph, Repeat(*plan.run))
    if fwd is None:
        raise ValueError(f"the step has no forward layers at {plan.run}; the plan was made for another program")
    chosen = {fwd.layers[c].backward_at: fwd.layers[c] for c in plan.layers}
    nodes: list[OpNode] = []
    ids: dict[int, int] = {}
    again: dict[ValueRef, ValueRef] = {}  # residual -> its recomputed value

    def ref(r):
        return r if isinstance(r, LiteralValue) else ValueRef(ids[r.node], r.index)

    def add(node: OpNode, inputs, label=None) -> int:
        nid = len(nodes)
        nodes.append(dataclasses.replace(node, id=nid, inputs=tuple(inputs), label=label or node.label))
        return nid

    def traced(t: ops.TracedOp, args, label) -> int:  # args: the operator's non-literal operands
        inputs = [o if isinstance(o, LiteralValue) else args[o] for o in t.operands]
        return add(OpNode(0, NodeKind.OP, t.primitive, t.params, (), t.outputs, label, t.payload), inputs)

    dead = _dead_after(graph, fwd, plan)
    for node in graph.nodes:
        if node.id in chosen:
            _recompute(graph, chosen[node.id], node, plan.policy, ref, traced, add, again, ids)
        if node.id in dead:
            continue
        if node.id >= fwd.end:
            inputs = [again[r] if isinstance(r, ValueRef) and r in again else ref(r) for r in node.inputs]
        else:
            inputs = [ref(r) for r in node.inputs]
        ids[node.id] = add(node, inputs)
    outputs = tuple(ref(r) for r in graph.outputs)
    regions = {k: tuple(remap_region(r, ids, ref) for r in getattr(graph, k)) for k in ("loops", "remats", "conds",
                                                                                       "whiles")}
    # (a per-microbatch program makes its inputs where first read, among the operators)
    input_nodes = tuple(ids[i] for i in graph.input_nodes)
    return dataclasses.replace(graph, nodes=nodes, outputs=outputs, input_nodes=input_nodes, **regions)


def _recompute(graph, layer: Layer, at: OpNode, policy, ref, traced, add, again, made) -> None:
    """Copies of ``layer``'s nodes that make its residuals, placed before node ``at``."""
    label = LABEL.format(c=layer.index)
    todo = _recomputed(graph, layer, policy)
    # a zero made from a backward value ``at`` reads: each input of the copies has it
    # added, so XLA cannot merge the copies with the forward (CSE) nor run them earlier
    late = [r for r in at.inputs if isinstance(r, ValueRef) and r.node > layer.nodes[-1]
            and r not in set(layer.residuals)]
    # else the last node kept before ``at`` (``made``: original ids already rebuilt; the
    # forward nodes left without readers are dropped)
    anchor = max(late, key=lambda r: r.node) if late else ValueRef(max(n for n in made if n < at.id))
    info = graph.info(anchor)
    top = ValueRef(traced(ops.traced_op(lambda x: jax.lax.reduce_max(x, tuple(range(x.ndim))), info),
                          [ref(anchor)], label))
    never = ValueRef(traced(ops.traced_op(lambda m: jax.lax.gt(m, jnp.asarray(jnp.inf, m.dtype)), _scalar(info)),
                            [top], label))  # false whatever the value, NaN included
    zeros: dict = {}
    copies: dict[int, int] = {}
    through: dict[ValueRef, ValueRef] = {}

    def zero(dtype):
        if dtype not in zeros:
            zeros[dtype] = ValueRef(traced(ops.traced_op(lambda b: jax.lax.convert_element_type(b, dtype),
                                                         TensorInfo((), np.dtype(bool))), [never], label))
        return zeros[dtype]

    def operand(r):
        if isinstance(r, LiteralValue):
            return r
        if r.node in copies:
            return ValueRef(copies[r.node], r.index)
        if graph.nodes[r.node].kind is not NodeKind.OP:
            return ref(r)  # arguments: what reads only them is cheap, and XLA may share it
        if r not in through:  # a value from outside the recomputed nodes: plus the zero
            x = graph.info(r)
            z = zero(x.dtype)
            if x.shape:
                z = ValueRef(traced(ops.traced_op(lambda v: jax.lax.broadcast_in_dim(v, x.shape, ()),
                                                  TensorInfo((), x.dtype)), [z], label))
            through[r] = ValueRef(traced(ops.binary("add", x) if x.dtype != np.dtype(bool)
                                         else ops.binary("or", x), [ref(r), z], label))
        return through[r]

    for n in todo:
        node = graph.nodes[n]
        copies[n] = add(node, [operand(r) for r in node.inputs], label)
    for r in layer.residuals:
        if r.node in copies:
            again[r] = ValueRef(copies[r.node], r.index)


def _scalar(info: TensorInfo) -> TensorInfo:
    return TensorInfo((), info.dtype)


def _dead_after(graph: OpGraph, fwd: ForwardLayers, plan: RematPlan) -> set[int]:
    """Forward nodes of the recomputed layers that nothing reads once the backward reads
    the copies (values only the backward needed)."""
    users = graph.users()
    residuals = {r for c in plan.layers for r in fwd.layers[c].residuals}
    outputs = {r.node for r in graph.outputs if isinstance(r, ValueRef)}
    for c in plan.layers:  # what the copies read (a value the policy keeps) stays
        copied = _recomputed(graph, fwd.layers[c], plan.policy)
        outputs |= {r.node for n in copied for r in graph.nodes[n].inputs
                    if isinstance(r, ValueRef) and r.node not in set(copied)}
    candidates = [n for c in plan.layers for n in fwd.layers[c].nodes if graph.nodes[n].kind is NodeKind.OP]
    dead: set[int] = set()
    changed = True
    while changed:
        changed = False
        for n in reversed(candidates):
            if n in dead or n in outputs:
                continue
            live = [(u, j) for u, j in users[n] if u not in dead
                    and not (u >= fwd.end and ValueRef(n, graph.nodes[u].inputs[j].index) in residuals
                             and _will_copy(graph, fwd, plan, n))]
            if not live:
                dead.add(n)
                changed = True
    return dead


def _will_copy(graph, fwd, plan, n) -> bool:
    return not _saved(graph.nodes[n], plan.policy)  # a residual not kept is copied


def choices(graph: OpGraph, policies=POLICIES, in_microbatch: bool = False
            ) -> tuple[ForwardLayers | None, list[RematPlan]]:
    """The forward layers and the remat plans the search tries, least recompute first:
    each of ``policies`` on every layer. ``in_microbatch``: ``graph`` is the
    per-microbatch program of an accumulation (``RematPlan.in_microbatch``)."""
    fwd = forward_layers(graph)
    if fwd is None:
        return None, []
    every = range(len(fwd.layers))
    return fwd, [plan_for(fwd, p, every, in_microbatch) for p in policies]
