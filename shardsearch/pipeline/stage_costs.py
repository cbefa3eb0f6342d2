"""The price of every candidate stage, from the intra-op planner on its submesh.

``UnitPricer(graph, split, units, umap, mesh, cluster, config)`` plans each layer unit on
each submesh with the ordinary search (``search.plan_graph``): the unit's per-microbatch
work (its forward and backward nodes of the micro graph, at B/M rows) and its once-per-step
work (its PRE and POST nodes: casts, the optimizer update), each as a subgraph of its own
(``pipeline/unit_graph.py``). A solve is cached per (subgraph structure, submesh, M):
identical units (the repeated layers of a model) share one solve, so a 96-layer model
costs about as many solves as a 2-layer one. ``stage_costs(M, submeshes)`` then prices a
range of units as the sum of its units (times and memory add up; the working set on top
is the largest unit's), in the arrays ``stage_search.search_stages`` reads.

What a unit costs on a submesh:
- ``micro_s``: its forward and backward for one microbatch, predicted (each planned as a
  program of its own, as the stage runs them);
- ``step_s``: its once-per-step work;
- ``static_bytes``: what it keeps for the whole step (parameters, optimizer state,
  gradient accumulators: the once-per-step work's arguments and results);
- ``activation_bytes``: what one microbatch's forward keeps for its backward;
- ``temp_bytes``: the rest of the per-microbatch peak (its working set).
The solves have no memory budget: the stage search checks memory per stage.

A parameter read on several stages (a tied embedding) is kept on each of them with its
optimizer state and update (``stages._copies``); the units price it once, on its owner.
A stage holding a copy without the owner unit adds the copy's static bytes
(``UnitPricer.copy_bytes``): its once-per-step work (the copied nodes: the update of the
parameter and its optimizer state from the gradient partials' sum) planned as a piece of
its own on the submesh, read as the stage's first unit reading it hands values on (the
parameter in the layout its forward reads it in, its gradient partial in the layout its
backward makes it in), as a unit's own parameters are priced; its peak is what the stage
keeps besides its units' own (the parameter, its state, the partials, the new values).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from cost_model import Cluster, MeshShape
from shardsearch.config import SearchConfig
from shardsearch.graph import NodeKind, OpGraph, ValueRef
from shardsearch.pipeline.assignment import StageKind
from shardsearch.pipeline.layers import LayerUnits
from shardsearch.pipeline.microbatch import MicrobatchSplit, micro_graph
from shardsearch.pipeline.stage_search import StageCosts, Submesh
from shardsearch.pipeline.stages import UnitMap, _copies
from shardsearch.pipeline.unit_graph import subgraph

# the intra-op solves of units: plain, quick, no recipes compared, no disk cache
UNIT_TIME_LIMIT_S = 10.0


@dataclasses.dataclass(frozen=True)
class UnitCost:
    micro_s: float
    step_s: float
    static_bytes: float
    activation_bytes: float
    temp_bytes: float


def submesh_shape(mesh: MeshShape, size: int) -> MeshShape | None:
    """The sub-block of ``size`` consecutive devices of ``mesh`` (row-major), with its axis
    names: trailing axes whole, one axis in part, leading axes of size 1; None if no block
    of that size is one."""
    sizes, left = [], size
    for n in reversed(mesh.axis_sizes):
        if left % n == 0:
            sizes.append(n)
            left //= n
        elif n % left == 0:
            sizes.append(left)
            left = 1
        else:
            return None
    if left != 1:
        return None
    return MeshShape(mesh.axis_names, tuple(reversed(sizes)))


class UnitPricer:
    """Plans the layer units of a step on submeshes (see the module notes)."""

    def __init__(self, graph: OpGraph, split: MicrobatchSplit, units: LayerUnits, umap: UnitMap, *,
                 mesh: MeshShape, cluster: Cluster, config: SearchConfig, log=None):
        self.graph, self.split, self.units, self.umap = graph, split, units, umap
        self.mesh, self.cluster, self.log = mesh, cluster, log
        self.config = dataclasses.replace(config, compare=False, cache=False, pins=(),
                                          time_limit_s=min(config.time_limit_s, UNIT_TIME_LIMIT_S))
        self._solved: dict = {}
        self._micro: dict = {}
        self._pieces: dict = {}  # (unit, m) -> its forward, backward and once-per-step SubGraphs
        self._once: dict = {}
        self._hashes: dict = {}  # id(graph) -> (graph, its program hash)
        self._reshards: dict = {}  # submesh -> build_problem's memo, shared by the solves on it
        self._handed: dict = {}  # (unit, m, submesh) -> its forward and backward pieces and their plans
        self._unit_copies = None  # node -> the units keeping a copy of it (owner first): copies()
        self._copy_pieces: dict = {}  # the copied nodes of a group (units) -> their SubGraph
        self.solves = 0
        per_kind = [[] for _ in units.units]
        for n, (u, k) in enumerate(zip(umap.unit, umap.kind)):
            if u >= 0 and graph.nodes[n].kind is NodeKind.OP:
                per_kind[u].append((n, k))
        self._nodes = per_kind

    def _micro_graph(self, m: int):
        if m not in self._micro:
            self._micro[m] = micro_graph(self.graph, self.split, m)
        return self._micro[m]

    def _solve(self, graph: OpGraph, mesh: MeshShape, pins=()):
        """The plan of ``graph`` on ``mesh``; ``pins``: (argument index, layout) pairs."""
        from shardsearch.search import plan_graph  # the planner: jax-side, imported on use
        from shardsearch.trace import program_hash

        if id(graph) not in self._hashes:  # (the graph kept with its hash: its id stays unique)
            self._hashes[id(graph)] = (graph, program_hash(graph))
        key = (self._hashes[id(graph)][1], mesh, tuple(pins))
        if key not in self._solved:
            self.solves += 1
            config = dataclasses.replace(self.config, pins=_pins(graph, pins))
            found = plan_graph(graph, key[0], mesh=mesh, cluster=self.cluster, memory_budget=None, config=config,
                               reshard_memo=self._reshards.setdefault(mesh, {}))  # priced once per submesh
            self._solved[key] = found.plan
        return self._solved[key]

    def unit_cost(self, unit: int, m: int, sub: MeshShape) -> UnitCost:
        if self.units.units[unit].iteration is not None:
            return self._iteration_cost(m, sub)
        micro = self._micro_graph(m)
        fwd, bwd, once, fs, bs, os_ = self._unit_pieces(unit, m)
        f_plan = self._solve(fs.graph, sub) if fwd else None
        # the backward reads what the forward left for it in the layout the forward left it
        # in (as the stage planner hands it on: stage_plan._handover_pins)
        b_plan = self._solve(bs.graph, sub, _handover(fs, f_plan, bs) if f_plan else ()) if bwd else None
        f, b = (x.predicted if x else None for x in (f_plan, b_plan))
        self._handed[unit, m, sub] = (fs, f_plan, bs, b_plan)
        o = self._solve(os_.graph, sub, _once_pins(micro, fs, f_plan, bs, b_plan, os_)).predicted if once else None
        if f is None and b is None and o is None:
            return UnitCost(0.0, 0.0, 0.0, 0.0, 0.0)
        act = f.outputs_bytes if f and b else 0.0  # what one microbatch's forward keeps for its backward
        peak = max(f.peak_bytes if f else 0.0, b.peak_bytes if b else 0.0)
        return UnitCost(
            micro_s=(f.total_s if f else 0.0) + (b.total_s if b else 0.0),
            step_s=o.total_s if o else 0.0,
            static_bytes=o.peak_bytes if o else 0.0,
            activation_bytes=act,
            temp_bytes=max(peak - act, 0.0),
        )

    def copies(self) -> dict[int, tuple[int, ...]]:
        """node -> the units keeping a copy of it (owner first), as ``stages._copies`` keeps
        one per stage with every unit a stage: a stage holds one where it runs a unit of
        them and not the owner."""
        if self._unit_copies is None:
            self._unit_copies = _copies(self.graph, self.umap.kind, self.umap.unit)
        return self._unit_copies

    def copy_bytes(self, m: int, sub: MeshShape) -> list[tuple[int, dict[int, float]]]:
        """Per group of copies kept on the same units: (owner unit, {other unit: bytes per
        device on ``sub`` that a stage whose first unit reading them is that one keeps}):
        the peak of the copied nodes' once-per-step work planned read as that unit hands
        values on (see the module notes)."""
        out = []
        for units in sorted(set(self.copies().values())):
            nodes = [n for n, u in self.copies().items() if u == units and self.graph.nodes[n].kind is NodeKind.OP]
            if not nodes or self.units.units[units[0]].iteration is not None:
                continue  # (a scan's layer owns no copy: its stacked work is split instead)
            if units not in self._copy_pieces:
                self._copy_pieces[units] = subgraph(self.graph, nodes)
            piece, held = self._copy_pieces[units], {}
            for r in units[1:]:
                if self.units.units[r].iteration is not None:
                    continue
                if (r, m, sub) not in self._handed:
                    self.unit_cost(r, m, sub)
                fs, f_plan, bs, b_plan = self._handed[r, m, sub]
                pins = _once_pins(self._micro_graph(m), fs, f_plan, bs, b_plan, piece) if f_plan else ()
                held[r] = self._solve(piece.graph, sub, pins).predicted.peak_bytes
            out.append((units[0], held))
        return out

    def _unit_pieces(self, unit: int, m: int) -> tuple:
        """(forward, backward and once-per-step nodes, and each as a SubGraph) of a unit at
        ``m`` microbatches: the same on every submesh, so made once."""
        if (unit, m) not in self._pieces:
            micro = self._micro_graph(m)
            # the forward and the backward apart, as the stage runs them (two programs: what the
            # forward leaves for the backward is written out, whatever could fuse across them)
            fwd, bwd = ([micro.node_map[n] for n, k in self._nodes[unit] if k is kind and n in micro.node_map]
                        for kind in (StageKind.FORWARD, StageKind.BACKWARD))
            once = [n for n, k in self._nodes[unit] if k in (StageKind.PRE, StageKind.POST)]
            if unit not in self._once:  # of the step itself: the same for every m
                self._once[unit] = subgraph(self.graph, once)
            self._pieces[unit, m] = (fwd, bwd, once, subgraph(micro.graph, fwd), subgraph(micro.graph, bwd),
                                     self._once[unit])
        return self._pieces[unit, m]

    def _iteration_cost(self, m: int, sub: MeshShape) -> UnitCost:
        """One layer of a scan over layers: the loop bodies (forward and backward) planned
        once, run ``length`` times, and the layer-stacked once-per-step work, per layer."""
        key = ("iteration", m, sub)
        if key in self._solved:
            return self._solved[key]
        micro, g = self._micro_graph(m), self.graph
        length = g.loops[self.umap.loops[0]].length
        bodies = [n for li in self.umap.loops for n in g.loops[li].body if n in micro.node_map]
        a = self._solve(subgraph(micro.graph, [micro.node_map[n] for n in bodies]).graph, sub).predicted
        once = [n for n in self.umap.layer_dims if g.nodes[n].kind is NodeKind.OP and
                self.umap.kind[n] in (StageKind.PRE, StageKind.POST)]
        b = self._solve(subgraph(g, once).graph, sub).predicted if once else None
        # what the forward keeps for the backward: its stacked per-layer results, split
        # over the submesh like the batch they carry
        kept = sum(micro.graph.info(ValueRef(micro.node_map[n])).nbytes
                   for n in g.loops[self.umap.loops[0]].stacks if n in micro.node_map)
        cost = UnitCost(micro_s=a.total_s / length, step_s=(b.total_s if b else 0.0) / length,
                        static_bytes=(b.peak_bytes if b else 0.0) / length,
                        activation_bytes=kept / length / sub.size, temp_bytes=a.peak_bytes / length)
        self._solved[key] = cost
        return cost

    def stage_costs(self, m: int, submeshes, cut_bytes, step_cut_bytes=None) -> StageCosts:
        """Prices of every range of units on every submesh, for ``m`` microbatches."""
        u, k = len(self.units), len(submeshes)
        table = np.zeros((5, u, k))
        for j, sub in enumerate(submeshes):
            shape = submesh_shape(self.mesh, sub.size)
            for i in range(u):
                c = self.unit_cost(i, m, shape) if shape is not None else None
                table[:, i, j] = dataclasses.astuple(c) if c else (math.inf, math.inf, 0, 0, 0)
        cum = np.concatenate([np.zeros((5, 1, k)), np.cumsum(table, axis=1)], axis=1)  # (5, U+1, K)
        span = cum[:, None, :, :] - cum[:, :-1, None, :]  # (5, U, U+1, K): units i..j-1
        temp = np.zeros((u, u + 1, k))
        for i in range(u):  # the largest unit's working set
            temp[i, i + 1:] = np.maximum.accumulate(table[4, i:], axis=0)
        static = span[2] + self._copies_held(m, submeshes)
        return StageCosts(time=span[0], step_time=span[1], static_bytes=static, activation_bytes=span[3],
                          temp_bytes=temp, cut_bytes=np.asarray(cut_bytes, dtype=float),
                          step_cut_bytes=None if step_cut_bytes is None else np.asarray(step_cut_bytes, dtype=float))

    def _copies_held(self, m: int, submeshes) -> np.ndarray:
        """(U, U + 1, K): bytes per device of the copies a stage [i, j) on submesh k holds
        besides its units' own: of the parameters its units read whose owner unit is
        elsewhere, priced as its first unit reading them hands values on (``copy_bytes``)."""
        u = len(self.units)
        out = np.zeros((u, u + 1, len(submeshes)))
        if not self.copies():
            return out
        i, j = np.arange(u)[:, None], np.arange(u + 1)[None, :]
        for k, sub in enumerate(submeshes):
            shape = submesh_shape(self.mesh, sub.size)
            if shape is None:
                continue
            for owner, held in self.copy_bytes(m, shape):
                kept = np.zeros((u, u + 1))
                for r in sorted(held, reverse=True):  # the first unit reading it in [i, j) prices it
                    kept = np.where((i <= r) & (r < j), held[r], kept)
                out[:, :, k] += np.where((i <= owner) & (owner < j), 0.0, kept)
        return out


def unit_cut_bytes(units: LayerUnits, m: int) -> np.ndarray:
    """Per cut before unit j (0 and U unused): bytes per microbatch the forward sends."""
    return np.concatenate([[0.0], np.asarray(units.cut_bytes, dtype=float) / m, [0.0]])


def _handover(made, plan, reader) -> tuple:
    """(argument index of ``reader``, layout) for each of its arguments that piece ``made``
    (a SubGraph planned as ``plan``) results: read in the layout it is made in."""
    spec_of = dict(zip(made.outputs, plan.flat_out_specs))
    return tuple((k, spec_of[r]) for k, r in enumerate(reader.inputs) if r in spec_of)


def _once_pins(micro, fs, f_plan, bs, b_plan, once) -> tuple:
    """Pins of the once-per-step piece ``once`` (PRE and POST: the optimizer update), as
    the stage planner hands values on: a parameter read in the layout the forward reads
    it in, a gradient in the layout the backward makes it in."""
    whole = {i.value: ValueRef(n) for i, n in zip(micro.inputs, micro.graph.input_nodes) if i.dim is None}
    read = dict(zip(fs.inputs, f_plan.flat_in_specs)) if f_plan else {}
    made = dict(zip(bs.outputs, b_plan.flat_out_specs)) if b_plan else {}
    out = []
    for k, r in enumerate(once.inputs):
        mine = ValueRef(micro.node_map[r.node], r.index) if r.node in micro.node_map else None
        spec = read.get(whole.get(r)) if whole.get(r) in read else made.get(mine)
        if spec is not None:
            out.append((k, spec))
    return tuple(out)


def _pins(graph: OpGraph, pins) -> tuple:
    """``pins`` ((argument index, layout) pairs) as SearchConfig pins of ``graph``."""
    from jax.sharding import PartitionSpec

    return tuple((graph.in_paths[k], PartitionSpec(*[tuple(d) if d else None for d in spec])) for k, spec in pins)


def unit_step_bytes(graph: OpGraph, umap: UnitMap, num_units: int) -> np.ndarray:
    """Per candidate stage ``[i, j)`` (a (U, U + 1) array): bytes the boundary after it is
    the first to carry once a step, each way at once: a value made once a step on a unit
    ``lo`` in ``[i, j)`` and read on a unit ``hi >= j`` (a gradient partial that another
    unit's once-per-step sum reads: with a parameter kept on both stages, as a tied
    embedding is, the partials cross both ways at once, so one way counts; the transfer
    goes straight to its reader, so it is counted at one boundary only). A parameter read
    on several units is not sent: each stage reading it keeps a copy (``stages._copies``)."""
    out = np.zeros((num_units, num_units + 1))
    once = (StageKind.PRE, StageKind.POST)
    params = {graph.input_nodes[a] for a in (graph.output_aliases or ()) if a is not None}
    for ref_node, readers in graph.users().items():
        a = umap.unit[ref_node]
        if a < 0 or ref_node in params:
            continue
        spans: dict[int, list[int]] = {}  # output index -> [lo, hi] of the units that share it
        for c, pos in readers:
            b = umap.unit[c]
            if b < 0 or b == a or (umap.kind[ref_node] not in once and umap.kind[c] is not StageKind.POST):
                continue
            k = graph.nodes[c].inputs[pos].index
            lo, hi = spans.get(k, [a, a])
            spans[k] = [min(lo, b), max(hi, b)]
        for k, (lo, hi) in spans.items():
            out[: lo + 1, lo + 1: hi + 1] += graph.info(ValueRef(ref_node, k)).nbytes
    return out


def single_stage(submeshes, num_devices: int) -> int | None:
    """Index of the submesh that is the whole mesh (one stage: no pipeline)."""
    return next((i for i, s in enumerate(submeshes) if s.size == num_devices), None)


__all__ = ["UnitCost", "UnitPricer", "submesh_shape", "unit_cut_bytes", "unit_step_bytes", "single_stage", "Submesh"]
