"""Stages from layer units: which unit, and so which stage, runs every node of a step.

``unit_map(graph, split, units) -> UnitMap``: every node of the traced step gets a layer
unit (``pipeline/layers.py``) and a ``StageKind``; ``assign_stages(graph, split, units,
ranges, num_microbatches) -> StageAssignment`` (``pipeline/assignment.py``) then puts
units ``ranges[s]`` on stage ``s`` and lists what crosses between stages.

How nodes find their unit (the split's phases say when a node runs):

- forward (MICRO / ACCUM up to the loss, ``memory.forward_end``): the unit whose node
  range holds it;
- backward (MICRO / ACCUM after the loss) mirrors the forward: a node goes where the
  cotangent reaching it comes from (the least unit among its backward operands: in the
  backward pass values only flow to earlier units), or earlier, to the unit whose
  forward work read its other operands last (a residual or a weight of layer l was read
  by layer l; a mask made by the embedding and read by every layer does not pull layer
  l's backward to the embedding). A node with neither (built from constants) goes to the
  latest unit that reads it;
- once-per-step work before the loop (PRE: parameters, their casts and transposes) goes
  to the first unit reading it (the owner); the optimizer update (POST) to the owner of the parameter
  whose new value it makes; POST work serving several owners (a gradient norm) goes with
  its largest operand (each gradient's partial sum where the gradient is); what is left
  (a step counter, optimizer moments) to the first unit reading it.

A parameter read on several stages (a tied embedding; ``assign_stages``, ``_copies``) is
kept on each of them with its optimizer state, and each runs its update on the sum of
the stages' gradient partials (see ``pipeline.assignment``): no stage sends it to another.

A scan over layers (``units.source == "scan"``): its iterations are units; the loop, its
backward mirror (the later scan of the same length reading the loop's stacked results)
and the once-per-step work on layer-stacked values (stacked parameters, their optimizer
update) run on every stage, each on its own layers (``SPLIT``, ``layer_dims``). Work that
reads all layers of a stacked value at once (a global gradient norm) cannot split:
``StageError`` says so, and the step is not pipelined.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from shardsearch.errors import StageError
from shardsearch.graph import NodeKind, OpGraph, ValueRef
from shardsearch.memory import forward_end
from shardsearch.pipeline.assignment import SPLIT, LoopSplit, StageAssignment, StageKind, Transfer
from shardsearch.pipeline.layers import LayerUnits
from shardsearch.pipeline.microbatch import MicrobatchSplit, Phase
from shardsearch.strategies.elementwise import ELEMENTWISE

UNSET = -2
# once-per-step operators that keep a layer-stacked value's layer dim where it is
_LAYERWISE = ELEMENTWISE | {"broadcast_in_dim", "copy"}

STACKED_READ = (
    "shardsearch cannot pipeline this step over the scan at {loop}: {node} reads all layers "
    "of the stacked value {value} at once, so the layers cannot live on different stages. "
    "The step runs unpipelined; unstack the layers (a Python loop) to pipeline it."
)


@dataclasses.dataclass(frozen=True)
class UnitMap:
    unit: tuple[int, ...]  # per node: its layer unit, or SPLIT (every unit of the scan, its own layer)
    kind: tuple[StageKind, ...]  # per node
    loops: tuple[int, ...]  # the scans over layers split by unit: the forward one, its backward mirror
    layer_dims: dict  # SPLIT node -> the layer dim of its outputs (absent for loop members)
    scan_units: tuple[int, int] = (0, 0)  # [first, stop) of the units that are scan iterations


def _kinds(graph: OpGraph, split: MicrobatchSplit, end: int) -> list[StageKind]:
    out = []
    for n, phase in zip(graph.nodes, split.phases):
        if phase is Phase.PRE:
            out.append(StageKind.PRE)
        elif phase is Phase.POST:
            out.append(StageKind.POST)
        else:
            out.append(StageKind.FORWARD if n.id <= end else StageKind.BACKWARD)
    return out


def _users(graph: OpGraph) -> list[list[int]]:
    users: list[list[int]] = [[] for _ in graph.nodes]
    for n in graph.nodes:
        for r in n.inputs:
            if isinstance(r, ValueRef):
                users[r.node].append(n.id)
    return users


def _mirror(graph: OpGraph, fwd: int) -> int | None:
    """The backward scan of the forward scan ``fwd``: a later scan of the same length that
    slices the forward one's stacked results."""
    stacks = set(graph.loops[fwd].stacks)
    for i, loop in enumerate(graph.loops):
        if i != fwd and loop.length == graph.loops[fwd].length and any(
                graph.nodes[s].inputs[0].node in stacks for s in loop.slices if isinstance(
                    graph.nodes[s].inputs[0], ValueRef)):
            return i
    return None


def unit_map(graph: OpGraph, split: MicrobatchSplit, units: LayerUnits) -> UnitMap:
    end = forward_end(graph)
    kinds = _kinds(graph, split, end)
    unit = np.full(len(graph.nodes), UNSET, dtype=np.int64)
    users = _users(graph)
    # Scan over layers: its members (and its mirror's) are SPLIT; seen from outside, the
    # forward loop is its first iteration's unit where it reads and its last where it
    # results, the backward loop the other way round.
    loops, reads_at, made_at, first, stop = (), {}, {}, 0, 0
    if units.source == "scan":
        iters = [k for k, u in enumerate(units.units) if u.iteration is not None]
        first, stop = iters[0], iters[-1] + 1
        back = _mirror(graph, units.loop)
        loops = (units.loop,) + ((back,) if back is not None else ())
        for li, (r_at, m_at) in zip(loops, [(first, stop - 1), (stop - 1, first)]):
            loop = graph.loops[li]
            for n in loop.members:
                unit[n] = SPLIT
                kinds[n] = StageKind.FORWARD if li == units.loop else StageKind.BACKWARD
                reads_at[n] = r_at
            for n in loop.outs:
                made_at[n] = m_at
    for k, u in enumerate(units.units):
        if u.iteration is None:
            for n in range(u.start, min(u.stop, end + 1)):
                if kinds[n] is StageKind.FORWARD and unit[n] == UNSET:
                    unit[n] = k

    def seen_unit(n: int) -> int:
        """A node's unit as its readers see it (a loop result: the iteration that makes it)."""
        return made_at.get(n, unit[n])

    def reader_unit(n: int) -> int:
        return reads_at.get(n, unit[n])

    # homes of forward values and parameters: the last unit whose forward work reads them
    # (a value only the backward reads: its own unit; a parameter's transpose: its parameter's)
    home = {}
    for n in graph.nodes:
        if kinds[n.id] not in (StageKind.FORWARD, StageKind.PRE):
            continue
        readers = [reader_unit(c) for c in users[n.id] if kinds[c] is StageKind.FORWARD and reader_unit(c) >= 0]
        if readers:
            home[n.id] = max(readers)
        elif kinds[n.id] is StageKind.FORWARD:
            home[n.id] = seen_unit(n.id)
        else:
            up = [home[r.node] for r in n.inputs if isinstance(r, ValueRef) and r.node in home]
            if up:
                home[n.id] = max(up)
    # backward: where the cotangent comes from, or earlier where its forward operands lived
    later = []
    for n in graph.nodes:
        if kinds[n.id] is not StageKind.BACKWARD or unit[n.id] != UNSET:
            continue
        ops = [r.node for r in n.inputs if isinstance(r, ValueRef)]
        back = [seen_unit(p) for p in ops if kinds[p] is StageKind.BACKWARD and seen_unit(p) >= 0]
        fwd = [home[p] for p in ops if p in home and home[p] >= 0]
        if not back and not fwd:
            later.append(n.id)
            continue
        unit[n.id] = min(min(back, default=len(units)), max(fwd, default=len(units)))
    for n in reversed(later):
        readers = [reader_unit(c) for c in users[n] if reader_unit(c) >= 0]
        unit[n] = max(readers, default=len(units) - 1)
    # once per step: PRE to its first reader (POST readers come later), then POST
    layer_dims = _stacked(graph, kinds, unit, loops)
    for n in reversed(range(len(graph.nodes))):
        if kinds[n] is StageKind.PRE and unit[n] == UNSET:
            readers = [reader_unit(c) for c in users[n] if kinds[c] is not StageKind.POST and reader_unit(c) >= 0]
            if readers:
                unit[n] = min(readers)
    _sum_partials_once(graph, split, kinds, unit, users)
    owners = _update_owners(graph, kinds, unit, users)
    for n in graph.nodes:
        if kinds[n.id] is StageKind.POST and unit[n.id] == UNSET:
            if len(owners[n.id]) == 1:
                unit[n.id] = next(iter(owners[n.id]))
            else:
                _post_unit(graph, n, unit, seen_unit)
    for n in reversed(range(len(graph.nodes))):  # what is left: a step counter, optimizer moments
        if unit[n] == UNSET:
            readers = [reader_unit(c) for c in users[n] if reader_unit(c) >= 0]
            stacked = [c for c in users[n] if c in layer_dims]
            if stacked and graph.nodes[n].kind is NodeKind.INPUT and not readers:
                unit[n], layer_dims[n] = SPLIT, layer_dims[stacked[0]]
            else:
                unit[n] = min(readers, default=0)
    return UnitMap(tuple(int(u) for u in unit), tuple(kinds), loops, layer_dims, (first, stop))


def _stacked(graph: OpGraph, kinds, unit, loops) -> dict:
    """Layer-stacked values outside the split loops, marked SPLIT: what the loops' slices
    read (stacked parameters), their stacked results, and the once-per-step work that
    combines them elementwise with values of the same shape (an optimizer moment, a
    stacked parameter's update), which is stacked too. Returns node -> layer dim."""
    dims = {}
    for li in loops:
        loop = graph.loops[li]
        for s in loop.slices:
            src = graph.nodes[s].inputs[0]
            if isinstance(src, ValueRef) and unit[src.node] == UNSET:
                dims[src.node] = 0
        for s in loop.stacks:
            dims[s] = 0
    once = [n for n in graph.nodes if kinds[n.id] in (StageKind.PRE, StageKind.POST) and unit[n.id] == UNSET
            and n.kind is NodeKind.OP]
    changed = True
    while changed:  # a fixed point: stacked-ness flows both ways through elementwise work
        changed = False
        for n in once:
            ops = [r for r in n.inputs if isinstance(r, ValueRef)]
            hit = [r for r in ops if r.node in dims]
            if n.id not in dims and not hit:
                continue
            if n.primitive not in _LAYERWISE or any(n.outputs[0].shape != graph.info(r).shape for r in hit):
                r = hit[0] if hit else ValueRef(n.id)
                loop = graph.nodes[graph.loops[loops[0]].body[0]].label
                raise StageError(STACKED_READ.format(loop=loop, node=f"{n.primitive} ({n.label})",
                                                     value=f"{graph.info(r).shape}"))
            d = dims[n.id] if n.id in dims else dims[hit[0].node]
            if n.id not in dims:
                dims[n.id], changed = d, True
            for r in ops:
                same = graph.info(r).shape == n.outputs[0].shape
                if same and r.node not in dims and kinds[r.node] is StageKind.PRE and unit[r.node] == UNSET:
                    dims[r.node], changed = d, True
    for n in dims:
        if unit[n] == UNSET:
            unit[n] = SPLIT
    return dims


def _sum_partials_once(graph: OpGraph, split: MicrobatchSplit, kinds, unit, users) -> None:
    """A sum of partial results made on different units, read only once per step (a tied
    embedding's two gradient partials): it runs once per step (POST) on the accumulated
    partials, so each partial crosses once a step, not once per microbatch."""
    for n in graph.nodes:
        if split.phases[n.id] is not Phase.ACCUM or n.primitive not in ("add", "add_any") or unit[n.id] < 0:
            continue
        ops = [r for r in n.inputs if isinstance(r, ValueRef)]
        partial = all(split.phases[r.node] is Phase.ACCUM and split.batch_dims.get(r) is None for r in ops)
        if partial and len({int(unit[r.node]) for r in ops}) > 1 and all(kinds[c] is StageKind.POST
                                                                       for c in users[n.id]):
            kinds[n.id] = StageKind.POST


def _update_owners(graph: OpGraph, kinds, unit, users) -> list[set]:
    """Per POST node: the units owning the parameters whose new values it helps make."""
    owners: list[set] = [set() for _ in graph.nodes]
    for ref, arg in zip(graph.outputs, graph.output_aliases or (None,) * len(graph.outputs)):
        if isinstance(ref, ValueRef) and arg is not None and unit[graph.input_nodes[arg]] >= 0:
            owners[ref.node].add(int(unit[graph.input_nodes[arg]]))
    for n in reversed(range(len(graph.nodes))):
        if kinds[n] is StageKind.POST:
            for c in users[n]:
                if kinds[c] is StageKind.POST:
                    owners[n] |= owners[c]
    return owners


def _post_unit(graph: OpGraph, n, unit, seen_unit) -> None:
    """A POST node goes with its largest operand (the least unit among equals)."""
    placed = [(graph.info(r).nbytes, -seen_unit(r.node)) for r in n.inputs
              if isinstance(r, ValueRef) and seen_unit(r.node) >= 0]
    if placed:
        unit[n.id] = -max(placed)[1]


def assign_stages(graph: OpGraph, split: MicrobatchSplit, units: LayerUnits, ranges: Sequence[tuple[int, int]],
                  num_microbatches: int, umap: UnitMap | None = None) -> StageAssignment:
    """Stage ``s`` runs units ``ranges[s]`` (contiguous, covering every unit in order)."""
    umap = umap or unit_map(graph, split, units)
    stage_of = np.zeros(len(units), dtype=np.int64)
    for s, (a, b) in enumerate(ranges):
        stage_of[a:b] = s
    node_stage = tuple(SPLIT if u == SPLIT else int(stage_of[u]) for u in umap.unit)
    first, stop = umap.scan_units
    split_stages = sorted({int(stage_of[k]) for k in range(first, stop)}) if umap.loops else []
    loop_splits = tuple(LoopSplit(li, tuple(_iterations(units, ranges, s, first, stop)
                                            for s in range(len(ranges)))) for li in umap.loops)
    copies = _copies(graph, umap.kind, node_stage)
    transfers = _transfers(graph, split, umap, node_stage, stage_of, num_microbatches, split_stages, copies)
    arg_stages = []
    for i, n in enumerate(graph.input_nodes):
        if node_stage[n] == SPLIT:
            arg_stages.append(tuple(split_stages))
            continue
        readers = {node_stage[c] for c in range(len(graph.nodes))
                   if any(isinstance(r, ValueRef) and r.node == n for r in graph.nodes[c].inputs)}
        readers = {s for s in readers if s != SPLIT} | (set(split_stages) if SPLIT in readers else set())
        owner = node_stage[n]
        arg_stages.append((owner,) + tuple(sorted(readers - {owner})) if readers else ())
    return StageAssignment(len(ranges), node_stage, umap.kind, tuple(tuple(r) for r in ranges), tuple(arg_stages),
                           transfers, loop_splits, dict(umap.layer_dims), copies)


def _copies(graph: OpGraph, kind, node_stage) -> dict[int, tuple[int, ...]]:
    """node -> the stages (owner first) keeping a copy: each parameter the microbatches read on
    several stages, and the once-per-step work making the next values of such parameters
    only (their gradient partials' sum, their optimizer state's update, before the loop or
    after); an optimizer state goes where its next value is made. Once-per-step work that
    also serves other parameters (a global gradient norm) stays on its stage, and its
    result is sent. A parameter whose update cannot be copied with it is sent, as before."""
    users = _users(graph)
    pre, post, loop = StageKind.PRE, StageKind.POST, (StageKind.FORWARD, StageKind.BACKWARD)
    feeds = [False] * len(graph.nodes)  # PRE work (or an argument) the microbatches read
    for n in reversed(range(len(graph.nodes))):
        if kind[n] is pre:
            feeds[n] = any(kind[c] in loop or (kind[c] is pre and feeds[c]) for c in users[n])
    readers = {}
    for n in graph.input_nodes:
        if node_stage[n] >= 0 and feeds[n]:
            on = {node_stage[c] for c in users[n] if (kind[c] in loop or feeds[c]) and node_stage[c] >= 0}
            if on - {node_stage[n]}:
                readers[n] = frozenset(on | {node_stage[n]})
    if not readers:
        return {}
    update = [kind[n] is post or (kind[n] is pre and not feeds[n] and graph.nodes[n].kind is NodeKind.OP)
              for n in range(len(graph.nodes))]
    aliases = graph.output_aliases or (None,) * len(graph.outputs)
    targets: list[set] = [set() for _ in graph.nodes]  # update work -> the arguments it helps update
    next_value = {}  # INPUT node -> the node making its next value
    for ref, arg in zip(graph.outputs, aliases):
        if isinstance(ref, ValueRef) and arg is not None:
            targets[ref.node].add(graph.input_nodes[arg])
            next_value[graph.input_nodes[arg]] = ref.node
    for n in reversed(range(len(graph.nodes))):
        if update[n]:
            for c in users[n]:
                if update[c]:
                    targets[n] |= targets[c]
    stages: dict[int, frozenset] = {}
    for n in range(len(graph.nodes)):
        ts = {t for t in targets[n] if feeds[t]} if update[n] and node_stage[n] >= 0 else ()
        if ts and all(t in readers for t in ts) and len({readers[t] for t in ts}) == 1:
            stages[n] = readers[next(iter(ts))]
    for n in readers:  # a parameter whose next value is made on one stage only is sent to the others
        if stages.get(next_value.get(n)) != readers[n]:
            for m in [m for m in stages if n in targets[m]]:
                del stages[m]
    for n, made in next_value.items():  # the parameters and their optimizer state: where their next value is
        if made in stages:
            stages[n] = stages[made]
    return {n: (node_stage[n],) + tuple(sorted(on - {node_stage[n]})) for n, on in stages.items()
            if node_stage[n] in on}


def _iterations(units: LayerUnits, ranges, s: int, first: int, stop: int) -> tuple[int, int]:
    a, b = max(ranges[s][0], first), min(ranges[s][1], stop)
    if a >= b:
        return (0, 0)
    return (units.units[a].iteration, units.units[b - 1].iteration + 1)


def _transfers(graph, split, umap: UnitMap, node_stage, stage_of, m: int, split_stages,
               copies=None) -> tuple[Transfer, ...]:
    """Every value read on another stage than the one making it, once per (value, dst); a
    value kept on several stages (``copies``) is read where its reader runs, if it is there."""
    copies = copies or {}
    first, stop = umap.scan_units
    loop_of = {n: li for li in umap.loops for n in graph.loops[li].members}
    edge = {li: (int(stage_of[first]), int(stage_of[stop - 1])) for li in umap.loops}

    def made_on(n: int) -> int:
        if node_stage[n] != SPLIT or n in umap.layer_dims:
            return node_stage[n]
        lo, hi = edge[loop_of[n]]  # a loop's result: made by the stage of its last iteration
        return hi if loop_of[n] == umap.loops[0] else lo

    def read_on(c: int, r: ValueRef) -> list[int]:
        if c in copies:
            return list(copies[c])
        if node_stage[c] != SPLIT:
            return [node_stage[c]]
        if r.node in umap.layer_dims:
            return []  # a stacked value read layer by layer: every stage has its own layers
        li = loop_of.get(c)
        if li is not None and c in graph.loops[li].carries:
            lo, hi = edge[li]  # the initial carry: read by the stage of the first iteration
            return [lo if li == umap.loops[0] else hi]
        return list(split_stages)  # a loop constant or a scalar: every stage needs it

    out = {}
    for c in graph.nodes:
        for r in c.inputs:
            if not isinstance(r, ValueRef):
                continue
            if loop_of.get(r.node) is not None and loop_of.get(r.node) == loop_of.get(c.id):
                continue  # inside a split loop: each stage runs its own iterations
            src = made_on(r.node)
            if src == SPLIT:
                if node_stage[c.id] != SPLIT:
                    raise StageError(STACKED_READ.format(loop=graph.nodes[r.node].label, node=f"{c.primitive} ({c.label})",
                                                         value=f"{graph.info(r).shape}"))
                continue
            for dst in read_on(c.id, r):
                if dst == src or dst in copies.get(r.node, ()):
                    continue
                if split.phases[r.node] is Phase.PRE:
                    kind = StageKind.PRE
                else:  # read per microbatch, or once per step after the loop
                    kind = umap.kind[c.id]
                out.setdefault((r, dst), Transfer(r, src, dst, kind, _bytes(graph, split, r, kind, m)))
    for li in umap.loops:  # the carry between the stages of consecutive layers
        forward = li == umap.loops[0]
        kind = StageKind.FORWARD if forward else StageKind.BACKWARD
        for a, b in zip(split_stages, split_stages[1:]):
            for c in graph.loops[li].carries:
                ref = ValueRef(c)
                src, dst = (a, b) if forward else (b, a)
                out.setdefault((ref, dst), Transfer(ref, src, dst, kind, _bytes(graph, split, ref, kind, m)))
    return tuple(out.values())


def _bytes(graph: OpGraph, split: MicrobatchSplit, ref: ValueRef, kind: StageKind, m: int) -> int:
    """Bytes of one transfer: a per-microbatch value at B/M rows, anything else whole."""
    nbytes = graph.info(ref).nbytes
    if kind in (StageKind.FORWARD, StageKind.BACKWARD) and split.batch_dims.get(ref) is not None:
        nbytes //= m
    return int(nbytes)
