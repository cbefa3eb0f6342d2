"""Points in time of a traced step that its memory turns on, and the values live there.

Time is the traced graph's order (forward, backward, optimizer update). The *peak point*
is where the unsharded program's temporaries peak; the search's linear memory proxy
counts what is live across it (``costs/build.py``). The *forward end* is where the step
makes its first result that is no argument's next value (the loss of a training step):
the activations the backward pass needs are the temporaries made by then and read after
it (``kept_for_backward``). When activations dominate, the two points coincide.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from cost_model.mesh import Spec
from shardsearch.graph import NodeKind, OpGraph, ValueRef
from shardsearch.memory.assign import Span, live_profile
from shardsearch.memory.buffers import Buffers, Lifetime, buffers


def lifetimes(graph: OpGraph) -> list[Lifetime]:
    """Every temporary buffer of the step (``buffers.buffers``): an operator output with a
    buffer of its own that is no result of the step, live until its last reader (shared:
    do not mutate)."""
    return buffers(graph).lives


def peak_point(graph: OpGraph, lives: Sequence[Lifetime] | None = None) -> int:
    """The node at which the unsharded program's live temporaries peak; -1 if none."""
    lives = lifetimes(graph) if lives is None else lives
    if not lives:
        return -1
    profile = live_profile(len(graph.nodes), [Span(v.ref.node, v.last, graph.info(v.ref).nbytes) for v in lives])
    return int(np.argmax(profile))


def forward_end(graph: OpGraph) -> int:
    """The node that makes the step's first result that is no argument's next value (a
    training step's loss: the backward pass starts after it); the peak point if none."""
    aliases = graph.output_aliases or (None,) * len(graph.outputs)
    made = [r.node for r, a in zip(graph.outputs, aliases)
            if a is None and isinstance(r, ValueRef) and graph.nodes[r.node].kind is NodeKind.OP]
    return min(made) if made else peak_point(graph)


def live_across(t: int, lives: Sequence[Lifetime]) -> list[Lifetime]:
    """Temporaries made at or before node ``t`` and read after it."""
    return [v for v in lives if v.ref.node <= t < v.last]


def live_at(t: int, lives: Sequence[Lifetime]) -> list[Lifetime]:
    """Temporaries live while node ``t`` runs (made by it or before, read by it or later)."""
    return [v for v in lives if v.ref.node <= t <= v.last]


def kept_for_backward(graph: OpGraph, lives: Sequence[Lifetime] | None = None) -> list[Lifetime]:
    """Temporaries made by the forward end and read after it: the activations the
    backward pass reads."""
    return live_across(forward_end(graph), lifetimes(graph) if lives is None else lives)


def resharded_copies(graph: OpGraph, node_operand_specs: Mapping[int, Mapping[int, Spec]] | None,
                     bufs: Buffers | None = None) -> list[tuple[ValueRef, Spec, int, int]]:
    """(value, layout, first, last) of each resharded copy a plan makes.

    A value several operators read in the same other layout is moved once (XLA merges
    the identical collectives: a weight gathered for the forward pass serves the
    backward pass too). The copy lives from the value's producer to the last reader of
    that layout: XLA schedules a collective whose operand is ready early (an argument's
    all-gather runs at the start of the step), and the gathered weight then stays until
    the backward pass has read it. With ``bufs``, a reader that XLA fuses into later
    kernels reads the copy there."""
    last: dict = {}
    for node, wanted in sorted((node_operand_specs or {}).items()):
        end = node if bufs is None else kernel_end(graph, bufs, node)
        for j, spec in wanted.items():
            ref = graph.nodes[node].inputs[j]
            if isinstance(ref, ValueRef):
                last[(ref, spec)] = max(end, last.get((ref, spec), end))
    return [(ref, spec, ref.node, end) for (ref, spec), end in last.items()]


def kernel_end(graph: OpGraph, bufs: Buffers, node: int) -> int:
    """The last kernel that runs ``node``'s work: itself, or for a node fused into its
    readers (or a bitcast), the last of those."""
    outs = [(node, k) for k in range(len(graph.nodes[node].outputs))]
    if any(bufs.holder.get(v) == ValueRef(*v) for v in outs):
        return node
    return max([node, *(bufs.last_read.get(v, -1) for v in outs)])


def carried_args(graph: OpGraph) -> set[int]:
    """Flat argument indices whose next value the step returns (params, optimizer state)."""
    return {a for a in graph.output_aliases if a is not None}
