"""Layer units: the forward pass cut into pieces in program order, the grains of stages.

A pipeline stage holds a contiguous range of units (and the mirrored backward, see
``pipeline/stages.py``). Units come from the program's structure, first match wins:

1. markers: ``ss.stage_boundary(x)`` in the model (a ``name`` primitive that survives
   tracing) cuts right after each marked value;
2. a scan over layers: each iteration of the forward pass's heaviest ``scan`` is a unit,
   with the work before the loop (embedding) and after it (head, loss) as units of their own;
3. repeated layers (``repeats.find_repeats`` on the forward pass): each copy of the block
   is a unit; the block is rotated to the offset where fewest bytes cross a cut (a
   transformer layer found starting inside its layer norm is cut at the residual stream);
4. otherwise ``balanced``: up to ``MAX_BALANCED_UNITS`` units of about equal FLOPs, each
   cut moved, within a window, to where fewest bytes cross.

A cut never falls inside a region (remat, cond, while, or a scan other than the layers'
one): each region runs whole on one stage. Bytes crossing a cut are the forward
activations made before it and read by forward work after it, at the traced batch size
(values that depend on no batch input, e.g. a parameter's cast, are once-per-step work
and are not counted; the backward mirror moves their cotangents, about as many bytes).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shardsearch.graph import NodeKind, OpGraph, ValueRef
from shardsearch.memory import carried_args, forward_end
from shardsearch.repeats import find_repeats

MARKER = "shardsearch_stage_boundary"  # the checkpoint_name ss.stage_boundary gives its value
MAX_BALANCED_UNITS = 16


@dataclasses.dataclass(frozen=True)
class Unit:
    """Forward nodes ``[start, stop)`` in graph order; for an iteration of the scan over
    layers, the loop's node range and the ``iteration`` (stacked index) it runs."""

    start: int
    stop: int
    kind: int  # units of one kind do the same work on the same shapes (repeated layers)
    iteration: int | None = None


@dataclasses.dataclass(frozen=True)
class LayerUnits:
    units: tuple[Unit, ...]
    # bytes of batch-dependent forward values crossing the cut between unit k and k + 1
    # (len(units) - 1 entries), at the traced batch size
    cut_bytes: tuple[int, ...]
    source: str  # "marker" | "scan" | "repeats" | "balanced"
    loop: int | None = None  # the scan over layers (index into graph.loops) when source == "scan"

    def __len__(self) -> int:
        return len(self.units)


def batch_dependent(graph: OpGraph) -> np.ndarray:
    """Per node: does it (transitively) read an argument that is not carried (the batch)?"""
    carried = carried_args(graph)
    dep = np.zeros(len(graph.nodes), dtype=bool)
    for i, n in enumerate(graph.input_nodes):
        dep[n] = i not in carried
    for n in graph.nodes:
        if n.kind is NodeKind.OP and any(isinstance(r, ValueRef) and dep[r.node] for r in n.inputs):
            dep[n.id] = True
    return dep


def crossing_bytes(graph: OpGraph, end: int, dep: np.ndarray) -> np.ndarray:
    """``out[c]``: bytes of batch-dependent operator results made before node ``c`` and read
    by a node in ``[c, end]``, for every cut position ``c`` in ``0..end + 1``."""
    last: dict[tuple[int, int], int] = {}
    for n in graph.nodes[: end + 1]:
        for r in n.inputs:
            if isinstance(r, ValueRef):
                last[(r.node, r.index)] = n.id
    delta = np.zeros(end + 3, dtype=np.int64)
    for (u, k), w in last.items():
        if dep[u] and graph.nodes[u].kind is NodeKind.OP and w > u:
            delta[u + 1] += graph.nodes[u].outputs[k].nbytes
            delta[w + 1] -= graph.nodes[u].outputs[k].nbytes
    return np.cumsum(delta)[: end + 2]


def allowed_cuts(graph: OpGraph, end: int, keep_loop: int | None = None) -> np.ndarray:
    """Cut positions ``0..end + 1`` that split no region (a cut at ``c`` puts ``c`` after it)
    and leave some batch work before them (a cut among the arguments would be empty)."""
    ok = np.ones(end + 2, dtype=bool)
    dep = batch_dependent(graph)
    ops = [n.id for n in graph.nodes[: end + 1] if n.kind is NodeKind.OP and dep[n.id]]
    ok[: (ops[0] + 1 if ops else end + 2)] = False
    for i, region in enumerate(graph.regions):
        if i == keep_loop and i < len(graph.loops):
            members = region.members
            lo, hi = min(members), max(members)
            ok[lo + 1: hi + 1] = False  # the layers' scan is cut between iterations, not here
            continue
        members = region.members
        if members:
            ok[min(members) + 1: min(max(members), end) + 1] = False
    return ok


def layer_units(graph: OpGraph, node_flops: np.ndarray | None = None) -> LayerUnits:
    """The forward pass of ``graph`` as layer units (see the module notes).

    ``node_flops``: per node, for balancing when the program shows no structure
    (default: ``node_work``)."""
    end = forward_end(graph)
    dep = batch_dependent(graph)
    cross = crossing_bytes(graph, end, dep)
    markers = [n.id + 1 for n in graph.nodes[: end + 1]
               if n.primitive == "name" and n.params.get("name") == MARKER]
    if markers:
        return _from_cuts(graph, end, cross, sorted(set(markers)), "marker")
    loop = _layers_loop(graph, end)
    rep = _forward_repeat(graph, end)
    if loop is not None and (rep is None or _loop_work(graph, loop) >= rep.copies * rep.period):
        return _from_scan(graph, end, cross, loop)
    if rep is not None:
        return _from_repeat(graph, end, cross, rep)
    weights = node_work(graph) if node_flops is None else np.asarray(node_flops, dtype=float)
    return _balanced(graph, end, cross, weights)


def node_work(graph: OpGraph) -> np.ndarray:
    """A rough FLOP count per node: a matmul's multiply-adds, one per result element otherwise."""
    out = np.zeros(len(graph.nodes))
    for n in graph.nodes:
        if n.kind is not NodeKind.OP:
            continue
        elements = sum(float(np.prod(o.shape)) for o in n.outputs)
        if n.primitive == "dot_general":
            (contract, _), _ = n.params["dimension_numbers"]
            lhs = graph.info(n.inputs[0]).shape
            elements *= 2 * float(np.prod([lhs[d] for d in contract]))
        out[n.id] = elements * n.trips
    return out


def _from_cuts(graph: OpGraph, end: int, cross: np.ndarray, cuts, source: str, same=frozenset()) -> LayerUnits:
    """Units between the allowed ``cuts``; ``same``: the (start, stop) ranges of repeated
    layers, which share one kind (every other unit is a kind of its own)."""
    ok = allowed_cuts(graph, end)
    bounds = [0] + sorted({c for c in cuts if 0 < c <= end and ok[c]}) + [end + 1]
    spans = list(zip(bounds[:-1], bounds[1:]))
    units = tuple(Unit(a, b, 0 if (a, b) in same else k + 1) for k, (a, b) in enumerate(spans))
    return LayerUnits(units, tuple(int(cross[c]) for c in bounds[1:-1]), source)


def _layers_loop(graph: OpGraph, end: int) -> int | None:
    """The forward scan doing the most work, if it runs at least two iterations."""
    best, work = None, 0
    for i, loop in enumerate(graph.loops):
        members = loop.members
        if loop.length >= 2 and loop.body and max(members) <= end and graph.nodes[loop.body[0]].trips == loop.length \
                and _loop_work(graph, i) > work:
            best, work = i, _loop_work(graph, i)
    return best


def _loop_work(graph: OpGraph, i: int) -> int:
    return len(graph.loops[i].body) * graph.loops[i].length


def _from_scan(graph: OpGraph, end: int, cross: np.ndarray, i: int) -> LayerUnits:
    loop = graph.loops[i]
    lo, hi = min(loop.members), max(loop.members) + 1
    carried = sum(graph.info(ValueRef(c)).nbytes for c in loop.carries)  # what one iteration hands the next
    units = [Unit(0, lo, 1)] if lo > 0 else []
    units += [Unit(lo, hi, 0, k) for k in range(loop.length)]
    cuts = [int(cross[lo])] if lo > 0 else []
    cuts += [carried] * (loop.length - 1)
    if hi <= end:
        units.append(Unit(hi, end + 1, 2))
        cuts.append(int(cross[hi]))
    return LayerUnits(tuple(units), tuple(cuts), "scan", i)


def _forward_repeat(graph: OpGraph, end: int):
    reps = [r for r in find_repeats(graph, np.zeros(len(graph.nodes), dtype=np.int64))
            if r.start + r.copies * r.period - 1 <= end and graph.nodes[r.start].kind is NodeKind.OP]
    return max(reps, key=lambda r: (r.saved, -r.start), default=None)


def _from_repeat(graph: OpGraph, end: int, cross: np.ndarray, rep) -> LayerUnits:
    """Each copy of the block a unit, rotated to the offset where fewest bytes cross."""
    ok = allowed_cuts(graph, end)
    p, s, copies = rep.period, rep.start, rep.copies

    def cost(o: int) -> tuple:
        inner = [s + o + k * p for k in range(copies)]
        if not all(ok[c] for c in inner):
            return (1, 0)
        return (0, int(cross[s + o + p]))  # every inner cut of the repeat crosses the same

    offset = min(range(p), key=lambda o: (cost(o), o))
    cuts = [s + offset + k * p for k in range(copies + 1)]
    # rotated, the last copy takes the first ``offset`` nodes past the repeat, which differ
    same = frozenset(zip(cuts[:-2] if offset else cuts[:-1], cuts[1:-1] if offset else cuts[1:]))
    return _from_cuts(graph, end, cross, cuts, "repeats", same)


def _balanced(graph: OpGraph, end: int, cross: np.ndarray, weights: np.ndarray) -> LayerUnits:
    ok = allowed_cuts(graph, end)
    cum = np.cumsum(weights[: end + 1])
    total = cum[-1] if len(cum) else 0.0
    n = min(MAX_BALANCED_UNITS, int(ok[1:end + 1].sum()) + 1)
    cuts = []
    for k in range(1, n):
        target = total * k / n
        lo, hi = (np.searchsorted(cum, total * (k - 0.5) / n), np.searchsorted(cum, total * (k + 0.5) / n))
        window = [c for c in range(max(lo, 1), min(hi, end) + 1) if ok[c]]
        if window:
            cuts.append(min(window, key=lambda c: (cross[c], abs(cum[c - 1] - target))))
    return _from_cuts(graph, end, cross, cuts, "balanced")
