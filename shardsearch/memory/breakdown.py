"""Per-device memory of a planned step, as ``compiled.memory_analysis()`` reports it.

    peak = arguments + results that have no donated argument's buffer
           + the peak of the temporary heap

Every argument and result has an allocation of its own for the whole run; every other
buffer (``buffers.py``: what XLA really writes, after fusion) is a temporary, which
goes into an argument's or result's allocation while that holds nothing live, or else
into the heap (``assign.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Sequence

from cost_model.mesh import MeshShape, Spec, local_bytes, local_shape, replicated
from shardsearch.graph import NodeKind, OpGraph, ValueRef
from shardsearch.memory.assign import Assignment, Home, Span, assign
from shardsearch.memory.buffers import FUSIBLE, buffers
from shardsearch.memory.combine import buckets_and_scatters, reductions
from shardsearch.memory.liveness import (
    carried_args,
    forward_end,
    kernel_end,
    resharded_copies,
)
from shardsearch.memory.schedule import scheduled
from shardsearch.memory.splitk import SPLIT_K, dot_split, readers_of, sum_fused_into_readers


@dataclasses.dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes per device: ``peak_bytes`` = the five figures above it but activations."""

    params_bytes: float  # carried arguments the forward pass reads
    opt_state_bytes: float  # other carried arguments (optimizer moments, step counters)
    inputs_bytes: float  # arguments fed anew each step (the batch)
    outputs_bytes: float  # result buffers that do not share a donated argument's buffer
    activations_bytes: float  # temporaries made before the turning point and read after it
    temp_bytes: float  # the temporary heap at its peak (temporaries no argument or result buffer holds)
    peak_bytes: float
    peak_node: int  # node at which the temporary heap peaks; -1 if it stays empty


# What each argument is, for the breakdown
PARAMS, OPT_STATE, INPUTS = "parameters", "optimizer state", "inputs"


@dataclasses.dataclass(frozen=True)
class StepBuffers:
    """Every buffer of a step run with given layouts, before XLA places the temporaries.

    ``args``: (kind, bytes) per flat argument (PARAMS: carried and read by the forward
    pass; OPT_STATE: carried, read after it; INPUTS: fed anew each step); ``homes``: the
    argument and result buffers temporaries may share (a result's own, or a donated
    argument's); ``results``: the results with a buffer of their own; ``temps``: the
    temporaries' spans, and ``temp_refs`` (value, is a resharded copy) for each."""

    args: tuple[tuple[str, float], ...]
    homes: tuple[Home, ...]
    results: tuple[tuple[int, float], ...]  # (flat output index, bytes) of results with a buffer of their own
    temps: tuple[Span, ...]
    temp_refs: tuple[tuple[ValueRef, bool], ...]
    forward_end: int
    num_positions: int


def step_buffers(
    graph: OpGraph,
    in_specs: Sequence[Spec],
    node_out_specs: Mapping[int, Sequence[Spec]],
    mesh: MeshShape,
    *,
    node_operand_specs: Mapping[int, Mapping[int, Spec]] | None = None,
    donated: frozenset[int] = frozenset(),
    buckets: Sequence[tuple[int, ...]] = (),
    written_from: Mapping[int, int] | None = None,
    in_stack: Iterable[ValueRef] = (),
    read_until: Mapping[ValueRef, int] | None = None,
    scattered: Mapping[int, float] | None = None,
) -> StepBuffers:
    """The buffers of ``graph`` run with these layouts (``memory_breakdown``'s arguments;
    ``buckets``: operators whose all-reduces XLA combines, ``combine.py``;
    ``written_from``: nodes whose buffer is live before they run, from that position,
    ``in_stack``: values written straight into such a buffer, ``read_until``: values
    live at least until a position (a loop's operands): ``scan_starts``; ``scattered``:
    operators that reduce-scatter their result, and the bytes of their partial sums)."""
    early = written_from or {}
    stacked = set(in_stack or ())

    def nbytes(ref: ValueRef, spec: Spec | None) -> float:
        info = graph.info(ref)
        return local_bytes(info.shape, info.dtype.itemsize, spec or replicated(len(info.shape)), mesh)

    def out_spec(ref: ValueRef) -> Spec | None:
        specs = node_out_specs.get(ref.node)
        return specs[ref.index] if specs is not None else None

    end = len(graph.nodes)
    bufs = buffers(graph)
    arg_bytes = [nbytes(ValueRef(n), in_specs[i]) for i, n in enumerate(graph.input_nodes)]
    carried = carried_args(graph)
    t = forward_end(graph)
    read_forward = {ref.node for n in graph.nodes[: t + 1] for ref in n.inputs if isinstance(ref, ValueRef)}
    args = tuple((INPUTS if i not in carried else PARAMS if n in read_forward else OPT_STATE, arg_bytes[i])
                 for i, n in enumerate(graph.input_nodes))

    homes: list[Home] = []
    results: list[tuple[int, float]] = []
    aliases = graph.output_aliases or (None,) * len(graph.outputs)
    for k, (ref, arg) in enumerate(zip(graph.outputs, aliases)):
        if not isinstance(ref, ValueRef):
            continue  # a literal
        made = early.get(ref.node, ref.node) if graph.nodes[ref.node].kind is NodeKind.OP else 0
        shares = made if graph.nodes[ref.node].primitive in FUSIBLE else -1
        if arg is not None and arg in donated:  # written into its argument's buffer
            last_read = bufs.last_read.get((graph.input_nodes[arg], 0), -1)
            homes.append(Home(arg_bytes[arg], ((0, max(last_read, 0)), (made, end)), shares))
            continue
        if arg is not None:
            size = arg_bytes[arg]  # returned in its argument's layout
        elif graph.nodes[ref.node].kind is NodeKind.INPUT:
            size = arg_bytes[graph.input_nodes.index(ref.node)]
        else:
            size = nbytes(ref, out_spec(ref))
        results.append((k, size))
        homes.append(Home(size, ((made, end),), shares))

    ends = _own_layout_ends(graph, bufs, node_operand_specs or {})
    until = read_until or {}
    temps = [Span(early.get(v.ref.node, v.ref.node), max(ends.get(v.ref, v.last), until.get(v.ref, -1)),
                  0.0 if v.ref in stacked else nbytes(v.ref, out_spec(v.ref))) for v in bufs.lives]
    refs = [(v.ref, False) for v in bufs.lives]
    # A bucket of combined all-reduces (combine.py), as XLA's GPU compiler runs it: each
    # gradient is held unreduced until the bucket's last member is made, copied then into
    # one buffer of the whole bucket, all-reduced in place there, and sliced back out into
    # a reduced copy per gradient for its readers (the buffer lives until its last slice)
    # A reduce-scatter's partial sums (its operand, the result unsplit) are written where
    # the operator runs and held until the reduce-scatter: in a bucket, until the bucket's
    # last member is made (the GPU compiler reduce-scatters a bucket's operands as one
    # tuple, with no buffer of the whole bucket), else just there.
    scattered = scattered or {}
    index = {v.ref: i for i, v in enumerate(bufs.lives)}
    bucketed = {m for b in buckets for m in b}
    for m in sorted(set(scattered) - bucketed):
        temps.append(Span(m, m, scattered[m]))
        refs.append((ValueRef(m, 0), False))
    first_reader = _first_readers(graph, bucketed)
    for bucket in buckets:
        t_all, held, last = max(bucket), 0.0, max(bucket) + 1
        for m in bucket:
            i = index.get(ValueRef(m, 0))
            if m in scattered:
                if i is not None:
                    span = temps[i]
                    temps[i] = dataclasses.replace(span, last=t_all, nbytes=scattered[m])
                    temps.append(Span(t_all + 1, max(span.last, t_all + 1), span.nbytes))
                    refs.append((ValueRef(m, 0), False))
                continue
            if i is None:
                continue
            span = temps[i]
            temps[i] = dataclasses.replace(span, last=t_all)
            temps.append(Span(t_all + 1, max(span.last, t_all + 1), span.nbytes))
            refs.append((ValueRef(m, 0), False))
            held, last = held + span.nbytes, max(last, first_reader.get(m, last))
        if held:
            temps.append(Span(t_all, last, held))
            refs.append((ValueRef(t_all, 0), False))
    moved = set()
    for ref, spec, first, last in resharded_copies(graph, node_operand_specs, bufs):
        temps.append(Span(first, last, nbytes(ref, spec)))
        refs.append((ref, True))
        moved.add(ref)
    rule = SPLIT_K.get()
    if rule is not None:  # a GPU target's split-K partial products (splitk.py)
        def operand_shape(ref: ValueRef, j: int, node: int) -> tuple[int, ...]:
            spec = (node_operand_specs or {}).get(node, {}).get(j)
            if spec is None and graph.nodes[ref.node].kind is NodeKind.INPUT:
                spec = in_specs[graph.input_nodes.index(ref.node)]
            info = graph.info(ref)
            return local_shape(info.shape, spec or out_spec(ref) or replicated(len(info.shape)), mesh)

        readers = readers_of(graph)
        held = {m for b in buckets for m in b}
        for i, v in enumerate(bufs.lives):
            if graph.nodes[v.ref.node].primitive != "dot_general" or temps[i].nbytes == 0:
                continue
            split = dot_split(graph, v.ref.node, lambda r, j, n=v.ref.node: operand_shape(r, j, n), rule)
            # a forward dot whose readers each sum its partials: they are its buffer (the partials
            # of other dots live only until the next kernel, not counted: splitk.py)
            forward = v.ref.node <= t and v.ref.node not in held
            if split > 1 and forward and sum_fused_into_readers(graph, bufs, readers, v.ref, frozenset(moved)):
                f32 = temps[i].nbytes / graph.info(v.ref).dtype.itemsize * 4
                temps[i] = dataclasses.replace(temps[i], nbytes=split * f32)
    return StepBuffers(args, tuple(homes), tuple(results), tuple(temps), tuple(refs), t, end)


def scan_starts(graph: OpGraph) -> tuple[dict[int, int], set[ValueRef], dict[ValueRef, int]]:
    """What a scan's while loop keeps live that its nodes alone do not show.

    Its stacked outputs (``scan_stack``): XLA writes each iteration's slice into the whole
    stacked buffer, which is live from the loop's start, not from its end, and the body's
    per-iteration outputs are written straight into it (no buffer of their own). Its
    operands (the stacked inputs it slices, the initial carries, the values its body
    reads from outside) are elements of the loop's state: live until the loop ends, not
    until the first iteration has read them. Per stack node the loop's first node, the
    body values written into stacks, and per operand the loop's last node."""
    starts, ys, until = {}, set(), {}
    for loop in graph.loops:
        members = set(loop.members)
        first, last = min(members), max(members)
        starts.update((st, first) for st in loop.stacks)
        ys.update(r for r in loop.ys if isinstance(r, ValueRef) and r.node in members)
        ys.update(ValueRef(sl, 0) for sl in loop.slices)  # read in place from the stacked operand
        for m in members:
            for r in graph.nodes[m].inputs:
                if isinstance(r, ValueRef) and r.node not in members:
                    until[r] = max(until.get(r, last), last)
    return starts, ys, until


def _first_readers(graph: OpGraph, nodes: set[int]) -> dict[int, int]:
    """The first node reading each of ``nodes``' first result (its slice out of the bucket
    is made just before it)."""
    out: dict[int, int] = {}
    if nodes:
        for n in graph.nodes:
            for r in n.inputs:
                if isinstance(r, ValueRef) and r.node in nodes and r.node not in out:
                    out[r.node] = n.id
    return out


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
    ``donated``: flat argument indices whose buffers the results may reuse
    (``jax.jit(donate_argnums=...)``).
    """
    graph, sb, order, _ = scheduled_buffers(graph, in_specs, node_out_specs, mesh,
                                            node_operand_specs=node_operand_specs, donated=donated)
    out = breakdown_of(sb, place(graph, sb))
    return dataclasses.replace(out, peak_node=old_id(order, out.peak_node))


def scheduled_buffers(
    graph: OpGraph,
    in_specs: Sequence[Spec],
    node_out_specs: Mapping[int, Sequence[Spec]],
    mesh: MeshShape,
    *,
    node_operand_specs: Mapping[int, Mapping[int, Spec]] | None = None,
    donated: frozenset[int] = frozenset(),
) -> tuple[OpGraph, StepBuffers, tuple[int, ...] | None, Mapping[int, Sequence[Spec]]]:
    """The graph in the order XLA runs it (``schedule.scheduled``: each update as soon as
    its gradient is ready, combined all-reduces as buckets), its buffers
    (``step_buffers``), per new node id the old one (None: the order is the graph's), and
    ``node_out_specs`` keyed by the new ids."""
    buckets, scattered = buckets_and_scatters(graph, *reductions(graph, in_specs, node_out_specs, mesh,
                                                                 node_operand_specs))
    starts, ys, until = scan_starts(graph)
    new_graph, order = scheduled(graph, buckets)
    if order is not None:
        new = {old: i for i, old in enumerate(order)}
        node_out_specs = {new[k]: v for k, v in node_out_specs.items()}
        node_operand_specs = {new[k]: v for k, v in (node_operand_specs or {}).items()}
        buckets = [tuple(sorted(new[m] for m in b)) for b in buckets]
        scattered = {new[k]: v for k, v in scattered.items()}
        starts = {new[k]: new[v] for k, v in starts.items()}
        ys = {ValueRef(new[r.node], r.index) for r in ys}
        until = {ValueRef(new[r.node], r.index): new[t] for r, t in until.items()}
    sb = step_buffers(new_graph, in_specs, node_out_specs, mesh, node_operand_specs=node_operand_specs,
                      donated=donated, buckets=buckets, written_from=starts, in_stack=ys, read_until=until,
                      scattered=scattered)
    return new_graph, sb, order, node_out_specs


def old_id(order: Sequence[int] | None, node: int) -> int:
    """A node id of the scheduled graph as the caller's graph numbers it."""
    return node if order is None or node < 0 else order[node]


def breakdown_of(sb: StepBuffers, placed: Assignment) -> MemoryBreakdown:
    """The figures of buffers already placed (``place``)."""
    kind_bytes = {k: sum(b for kind, b in sb.args if kind == k) for k in (PARAMS, OPT_STATE, INPUTS)}
    t = sb.forward_end
    activations = float(sum(s.nbytes for s, (_, copy) in zip(sb.temps, sb.temp_refs)
                            if not copy and s.first <= t < s.last))
    outputs = float(sum(b for _, b in sb.results))
    resident = sum(kind_bytes.values()) + outputs
    return MemoryBreakdown(
        params_bytes=kind_bytes[PARAMS],
        opt_state_bytes=kind_bytes[OPT_STATE],
        inputs_bytes=kind_bytes[INPUTS],
        outputs_bytes=outputs,
        activations_bytes=activations,
        temp_bytes=placed.heap_peak,
        peak_bytes=resident + placed.heap_peak,
        peak_node=placed.heap_peak_at,
    )


def place(graph: OpGraph, sb: StepBuffers) -> Assignment:
    """XLA's placement of the temporaries (in place over dying operands, into free
    argument and result buffers, the rest on the heap)."""
    temps = _in_place(graph, buffers(graph), list(sb.temps[: len(buffers(graph).lives)]))
    return assign(sb.num_positions, temps + list(sb.temps[len(temps):]), sb.homes)


def _own_layout_ends(graph: OpGraph, bufs, resharded: Mapping[int, Mapping[int, Spec]]) -> dict:
    """The last kernel reading each temporary in its own layout, for the temporaries
    some reader takes as a resharded copy instead (that copy is made right after the
    value, ``resharded_copies``, and the value itself is free once its own readers ran)."""
    out = {}
    for node, wanted in resharded.items():
        for j in wanted:
            ref = graph.nodes[node].inputs[j]
            if isinstance(ref, ValueRef) and bufs.holder.get((ref.node, ref.index)) == ref:
                out[ref] = ref.node
    if not out:
        return out
    for n in graph.nodes:
        for j, ref in enumerate(n.inputs):
            if isinstance(ref, ValueRef) and ref in out and j not in resharded.get(n.id, {}):
                out[ref] = max(out[ref], kernel_end(graph, bufs, n.id))
    return out


def _in_place(graph: OpGraph, bufs, temps: list[Span]) -> list[Span]:
    """An elementwise kernel writes its result over an operand of the same size that it
    reads last (XLA shares the buffer): that operand's span ends just before it."""
    index = {(v.ref.node, v.ref.index): i for i, v in enumerate(bufs.lives)}
    out = list(temps)
    for i, v in enumerate(bufs.lives):
        node = graph.nodes[v.ref.node]
        if node.primitive not in FUSIBLE:
            continue
        for ref in node.inputs:
            if not isinstance(ref, ValueRef):
                continue
            h = bufs.holder.get((ref.node, ref.index))
            j = index.get((h.node, h.index)) if h is not None else None
            if j is not None and out[j].last == node.id and out[j].nbytes == out[i].nbytes and out[j].first < node.id:
                out[j] = dataclasses.replace(out[j], last=node.id - 1)
                break
    return out
