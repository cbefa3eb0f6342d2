"""Per-device memory of a planned step: what stays resident, what the backward pass
keeps, and the peak. Plain data in, numbers out (numpy only, no jax).

The model follows XLA's buffer assignment, which ``compiled.memory_analysis()``
reports: arguments and results have buffers of their own for the whole run (a donated
argument shares its buffer with the result that is its next value); every other value
is a temporary, live from the operator that makes it to its last user. XLA puts a
temporary into a result buffer that is not written yet when it fits there (one at a
time), so

    peak = arguments + results + the live temporaries, at their peak, that fit in no
           result buffer still free at that point

Time is the traced graph's topological order. XLA fuses elementwise chains and
reorders independent work, so this is a model of the peak, not a replay of it.

Two points in time matter. The *peak point* is where the unsharded program's live
temporaries peak; the search's linear memory proxy counts what is live across it
(``costs/build.py``). The *forward end* is where the step makes its first result
that is no argument's next value (the loss of a training step): the activations the
backward pass needs are the temporaries made by then and read after it
(``kept_for_backward``). When activations dominate, the two points coincide.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Mapping, Sequence

import numpy as np

from cost_model.mesh import MeshShape, Spec, local_bytes, replicated
from shardsearch.graph import NodeKind, OpGraph, ValueRef


@dataclasses.dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes per device: ``peak_bytes`` = the five figures above it but activations."""

    params_bytes: float  # carried arguments the forward pass reads
    opt_state_bytes: float  # other carried arguments (optimizer moments, step counters)
    inputs_bytes: float  # arguments fed anew each step (the batch)
    outputs_bytes: float  # result buffers that do not share a donated argument's buffer
    activations_bytes: float  # temporaries made before the turning point and read after it
    temp_bytes: float  # temporaries at their peak that no free result buffer can hold
    peak_bytes: float
    peak_node: int  # node at which the temporaries peak; -1 if there are none


@dataclasses.dataclass(frozen=True)
class Lifetime:
    """A temporary value: made by node ``ref.node``, last read by node ``last``."""

    ref: ValueRef
    last: int


def lifetimes(graph: OpGraph) -> list[Lifetime]:
    """Every operator output that is neither a result of the step nor unused.

    Results have buffers of their own (see the module notes); an unused value is
    dead code that XLA removes. Computed once per graph (shared: do not mutate)."""
    return graph.analysis("lifetimes", lambda: _lifetimes(graph))


def _lifetimes(graph: OpGraph) -> list[Lifetime]:
    results = {(r.node, r.index) for r in graph.outputs if isinstance(r, ValueRef)}
    last: dict[tuple[int, int], int] = {}
    for n in graph.nodes:
        for ref in n.inputs:
            if isinstance(ref, ValueRef):
                last[(ref.node, ref.index)] = n.id
    out = []
    for n in graph.nodes:
        if n.kind is not NodeKind.OP:
            continue
        for k in range(len(n.outputs)):
            if (n.id, k) in last and (n.id, k) not in results:
                out.append(Lifetime(ValueRef(n.id, k), last[(n.id, k)]))
    return out


def _live_profile(num_nodes: int, spans: Sequence[tuple[int, int, float]]) -> np.ndarray:
    """Bytes live at each node position, from (first, last, bytes) spans (inclusive)."""
    delta = np.zeros(num_nodes + 1)
    for first, last, nbytes in spans:
        delta[first] += nbytes
        delta[last + 1] -= nbytes
    return np.cumsum(delta[:-1])


def peak_point(graph: OpGraph, lives: Sequence[Lifetime] | None = None) -> int:
    """The node at which the unsharded program's live temporaries peak; -1 if none."""
    lives = lifetimes(graph) if lives is None else lives
    if not lives:
        return -1
    profile = _live_profile(len(graph.nodes), [(v.ref.node, v.last, graph.info(v.ref).nbytes) for v in lives])
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


def resharded_copies(graph: OpGraph, node_operand_specs: Mapping[int, Mapping[int, Spec]] | None
                     ) -> list[tuple[ValueRef, Spec, int, int]]:
    """(value, layout, first, last) of each resharded copy a plan makes.

    A value several operators read in the same other layout is moved once (XLA merges
    the identical collectives: a weight gathered for the forward pass serves the
    backward pass too). The copy lives from the value's producer to the last reader of
    that layout: XLA schedules a collective whose operand is ready early (an argument's
    all-gather runs at the start of the step), and the gathered weight then stays until
    the backward pass has read it."""
    last: dict = {}
    for node, wanted in sorted((node_operand_specs or {}).items()):
        for j, spec in wanted.items():
            ref = graph.nodes[node].inputs[j]
            if isinstance(ref, ValueRef):
                last[(ref, spec)] = max(node, last.get((ref, spec), node))
    return [(ref, spec, ref.node, end) for (ref, spec), end in last.items()]


def carried_args(graph: OpGraph) -> set[int]:
    """Flat argument indices whose next value the step returns (params, optimizer state)."""
    return {a for a in graph.output_aliases if a is not None}


def _unhosted(temps: Sequence[float], free: Sequence[float]) -> float:
    """Bytes of ``temps`` left over when each goes, largest first, into the smallest
    free buffer it fits in (one temporary per buffer)."""
    free = sorted(free)
    left = 0.0
    for b in sorted(temps, reverse=True):
        i = bisect.bisect_left(free, b)
        if i < len(free):
            free.pop(i)
        else:
            left += b
    return left


def memory_breakdown(
    graph: OpGraph,
    in_specs: Sequence[Spec],
    node_out_specs: Mapping[int, Sequence[Spec]],
    mesh: MeshShape,
    *,
    node_operand_specs: Mapping[int, Mapping[int, Spec]] | None = None,
    donated: frozenset[int] = frozenset(),
) -> MemoryBreakdown:
    """The per-device memory of ``graph`` run with these layouts.

    ``in_specs``: layout of each flat argument; ``node_out_specs``: layout of each
    operator's outputs (a plan's ``node_out_specs``; missing operators are taken as
    replicated); ``node_operand_specs``: operands an operator reads in another layout
    (a resharded copy, shared by every reader that wants the same layout);
    ``donated``: flat argument
    indices whose buffers the results may reuse (``jax.jit(donate_argnums=...)``).
    """

    def nbytes(ref: ValueRef, spec: Spec | None) -> float:
        info = graph.info(ref)
        return local_bytes(info.shape, info.dtype.itemsize, spec or replicated(len(info.shape)), mesh)

    def out_spec(ref: ValueRef) -> Spec | None:
        specs = node_out_specs.get(ref.node)
        return specs[ref.index] if specs is not None else None

    arg_bytes = [nbytes(ValueRef(n), in_specs[i]) for i, n in enumerate(graph.input_nodes)]
    carried = carried_args(graph)
    lives = lifetimes(graph)
    t = forward_end(graph)
    read_forward = {ref.node for n in graph.nodes[: t + 1] for ref in n.inputs if isinstance(ref, ValueRef)}
    params = opt = fed = 0.0
    for i, n in enumerate(graph.input_nodes):
        if i not in carried:
            fed += arg_bytes[i]
        elif n in read_forward:
            params += arg_bytes[i]
        else:
            opt += arg_bytes[i]

    results = []  # (made at, bytes)
    aliases = graph.output_aliases or (None,) * len(graph.outputs)
    for ref, arg in zip(graph.outputs, aliases):
        if not isinstance(ref, ValueRef) or (arg is not None and arg in donated):
            continue  # a literal, or written into its donated argument's buffer
        if arg is not None:
            size = arg_bytes[arg]  # returned in its argument's layout
        elif graph.nodes[ref.node].kind is NodeKind.INPUT:
            size = arg_bytes[graph.input_nodes.index(ref.node)]
        else:
            size = nbytes(ref, out_spec(ref))
        results.append((ref.node, size))

    spans = [(v.ref.node, v.last, nbytes(v.ref, out_spec(v.ref))) for v in lives]
    activations = float(sum(b for (first, last, b) in spans if first <= t < last))
    spans += [(first, last, nbytes(ref, spec)) for ref, spec, first, last in resharded_copies(graph, node_operand_specs)]
    profile = _live_profile(len(graph.nodes), spans)
    peak_node = int(np.argmax(profile)) if spans else -1
    live = [b for first, last, b in spans if first <= peak_node <= last]
    free = [b for made, b in results if made > peak_node]
    outputs = float(sum(b for _, b in results))
    temps = _unhosted(live, free)
    return MemoryBreakdown(
        params_bytes=params,
        opt_state_bytes=opt,
        inputs_bytes=fed,
        outputs_bytes=outputs,
        activations_bytes=activations,
        temp_bytes=temps,
        peak_bytes=params + opt + fed + outputs + temps,
        peak_node=peak_node,
    )
