"""The forward layers of a traced training step and what each keeps for the backward pass.

A step traced through ``jax.grad`` is one flat program: the forward layers one after
another, then the backward layers in reverse. ``repeats.find_repeats`` finds the forward
layers as a run of identical blocks; a block's *residuals* are its values that nodes after
the whole run read (the backward pass), except the block's result that the next block (or
the head) reads. Layer ``c``'s backward starts at ``backward_at``: the first node reading
any of its residuals. A run is taken for the forward only when those starts go down as
the layer index goes up (the backward visits the layers in reverse); the optimizer's and
the backward's own runs do not.

Numbers in, plain data out: no jax here.
"""

from __future__ import annotations

import dataclasses

from shardsearch.graph import NodeKind, OpGraph, ValueRef
from shardsearch.repeats import Repeat, find_repeats


@dataclasses.dataclass(frozen=True)
class Layer:
    index: int
    nodes: tuple[int, ...]  # the block's node ids, in order
    residuals: tuple[ValueRef, ...]  # its values the backward pass reads
    backward_at: int  # the first node that reads one of them
    residual_bytes: int  # their bytes (global shapes)


@dataclasses.dataclass(frozen=True)
class ForwardLayers:
    run: Repeat
    layers: tuple[Layer, ...]

    @property
    def end(self) -> int:
        """The first node after the run."""
        return self.run.start + self.run.copies * self.run.period


def _regions_span(graph: OpGraph) -> list[tuple[int, int]]:
    return [(min(r.members), max(r.members)) for r in graph.regions if r.members]


def forward_layers(graph: OpGraph, run: Repeat | None = None) -> ForwardLayers | None:
    """The step's forward layers (see the module notes), or None when it has none this
    module can recompute (no repeated layers, or layers inside a loop, cond or checkpoint).
    ``run``: the run to read as the forward (a plan's, when it is applied again)."""
    runs = [run] if run is not None else find_repeats(graph, [1] * len(graph.nodes))
    users = graph.users()
    spans = _regions_span(graph)
    for rep in runs:
        if rep.start + rep.copies * rep.period > len(graph.nodes):
            continue
        if all(graph.nodes[n].kind is not NodeKind.OP for n in range(rep.start, rep.start + rep.period)):
            continue  # a run of arguments (parameters of equal shapes), not of layers
        # (a per-microbatch program makes each layer's parameters where the layer first
        # reads them: its layers hold argument nodes, which are never residuals)
        found = _layers_of(graph, rep, users, spans)
        if found is not None:
            return found
    return None


def _layers_of(graph: OpGraph, rep: Repeat, users, spans) -> ForwardLayers | None:
    s, p, k = rep.start, rep.period, rep.copies
    end = s + k * p
    if any(lo <= end and hi >= s for lo, hi in spans):
        return None
    # the block's result the next block reads, by position in the block
    carry = {n - s for n in range(s, s + p) if any(s + p <= u < s + 2 * p for u, _ in users[n])}
    layers = []
    for c in range(k):
        base = s + c * p
        residuals, first, nbytes = [], None, 0
        for n in range(base, base + p):
            if n - base in carry or graph.nodes[n].kind is not NodeKind.OP:
                continue
            late = sorted({(u, j) for u, j in users[n] if u >= end})
            if not late:
                continue
            node = graph.nodes[n]
            for idx in sorted({graph.nodes[u].inputs[j].index for u, j in late}):
                residuals.append(ValueRef(n, idx))
                nbytes += node.outputs[idx].nbytes
            first = min(first if first is not None else late[0][0], late[0][0])
        if first is None:
            return None
        layers.append(Layer(c, tuple(range(base, base + p)), tuple(residuals), first, nbytes))
    starts = [la.backward_at for la in layers]
    if any(a <= b for a, b in zip(starts, starts[1:])):
        return None  # not visited in reverse: not a forward pass
    if any(any(lo < b <= hi for lo, hi in spans) for b in starts):
        return None
    return ForwardLayers(rep, tuple(layers))
