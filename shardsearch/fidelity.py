"""The fidelity report: what the cost model predicted next to what XLA emitted.

For each kind of collective over each mesh axis (or group of axes): how many the plan
expected and how many bytes they move, beside the same figures read from the
compiled program's optimized HLO; then total communication bytes and peak memory
per device (``memory_analysis()``: arguments + results + temporaries - aliases).

Bytes follow ``cost_model.collectives``: per device, an all-gather counts the
gathered result, a reduce-scatter the full operand, the others the buffer each
device holds. No jax here: a compiled program is only asked for ``as_text()`` and
``memory_analysis()``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import defaultdict
from typing import Sequence

import numpy as np

from cost_model import MeshShape
from cost_model.reshard import reshard_collectives
from shardsearch.graph import NodeKind, OpGraph, ValueRef
from shardsearch.hlo import HloCollective, parse_collectives

UNKNOWN_AXES = "?"  # device groups that are no mesh axis (or set of axes)

# (kind, axes label, count, bytes): one row of what a plan expects to communicate
PlannedCollective = tuple[str, str, int, float]


def axes_label(mesh: MeshShape, axes: Sequence[str]) -> str:
    """``data+model``: the axes that split anything, in mesh order."""
    kept = [a for a in mesh.axis_names if a in axes and mesh.axis_size(a) > 1]
    return "+".join(kept)


def _add(table: dict, kind: str, label: str, nbytes: float) -> None:
    count, total = table.get((kind, label), (0, 0.0))
    table[(kind, label)] = (count + 1, total + float(nbytes))


def planned_collectives(graph: OpGraph, chosen: Sequence, mesh: MeshShape) -> tuple[PlannedCollective, ...]:
    """Every collective a plan pays for, summed per (kind, axes): those inside the chosen
    strategies, the resharding of operands between them, and the resharding of each
    returned next-state into its argument's layout (the edges the solver priced).

    A value that several operators need in the same new layout is moved once: XLA
    merges the identical copies (the solver, pricing edge by edge, pays for each)."""
    table: dict = {}
    moved: set = set()
    # repeated layers repeat their strategies and reshards: each is listed once
    # ((kind, axes label, bytes) of the collectives that move something), added per use
    listed: dict = {}

    def add_all(key, collectives) -> None:
        if key not in listed:
            listed[key] = [(c.kind.value, axes_label(mesh, c.axes), c.nbytes) for c in collectives()
                           if mesh.group_size(c.axes) > 1]
        for kind, label, nbytes in listed[key]:
            _add(table, kind, label, nbytes)

    def reshard(ref: ValueRef, dst) -> None:
        info = graph.info(ref)
        src = chosen[ref.node].out_specs[ref.index]
        if (ref, dst) in moved:
            return
        moved.add((ref, dst))
        if src == dst:
            return  # nothing moves
        add_all((info.shape, info.dtype.itemsize, src, dst),
                lambda: reshard_collectives(mesh, info.shape, info.dtype.itemsize, src, dst))

    for n in graph.nodes:
        if n.kind is not NodeKind.OP:
            continue
        st = chosen[n.id]
        add_all(("strategy", id(st)), lambda: st.collectives)  # (chosen keeps each alive: ids stay unique)
        for j, ref in enumerate(n.inputs):
            if isinstance(ref, ValueRef):
                reshard(ref, chosen[n.id].in_specs[j])
    for ref, arg in zip(graph.outputs, graph.output_aliases):
        if isinstance(ref, ValueRef) and arg is not None:
            reshard(ref, chosen[graph.input_nodes[arg]].out_specs[0])
    return tuple((k, a, c, b) for (k, a), (c, b) in sorted(table.items()))


def _hlo_axes(c: HloCollective, mesh: MeshShape) -> tuple[str, int]:
    """(axes label, group size) of a collective's device groups on ``mesh``."""
    groups = [g for g in c.groups(mesh.size) if g]
    size = max((len(set(g)) for g in groups), default=1)
    coords = np.array(np.unravel_index(np.arange(mesh.size), mesh.axis_sizes)).T  # device -> mesh coords
    if c.kind == "collective-permute":  # source-target pairs: the axes along which pairs move
        moved = {i for g in groups for i in np.nonzero(coords[g[0]] != coords[g[-1]])[0]}
        return axes_label(mesh, [mesh.axis_names[i] for i in sorted(moved)]) or UNKNOWN_AXES, 2
    found = {frozenset(g) for g in groups}
    names = [a for a in mesh.axis_names if mesh.axis_size(a) > 1]
    for r in range(1, len(names) + 1):
        for axes in itertools.combinations(names, r):
            if {frozenset(row.tolist()) for row in mesh.device_groups(axes)} == found:
                return axes_label(mesh, axes), size
    return UNKNOWN_AXES, size


def compiled_collectives(hlo_text: str, mesh: MeshShape) -> tuple[PlannedCollective, ...]:
    """The collectives of optimized HLO text, summed per (kind, axes), in the same byte
    conventions as ``planned_collectives``. Groups of one device move nothing: left out."""
    table: dict = {}
    for c in parse_collectives(hlo_text):
        label, size = _hlo_axes(c, mesh)
        if size <= 1:
            continue
        nbytes = c.nbytes * (size if c.kind == "reduce-scatter" else 1)  # its operand, not its shard
        _add(table, c.kind, label, nbytes)
    return tuple((k, a, c, b) for (k, a), (c, b) in sorted(table.items()))


def compiled_peak_bytes(compiled) -> float:
    """Per-device bytes XLA allocates for the program: arguments + results + temporaries - aliases."""
    m = compiled.memory_analysis()
    return float(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


@dataclasses.dataclass(frozen=True)
class CollectiveRow:
    kind: str
    axes: str  # mesh axes its groups span, e.g. "data+model"; "?" if none match
    predicted_count: int
    predicted_bytes: float
    compiled_count: int
    compiled_bytes: float


def _rel(predicted: float, actual: float) -> float:
    """(predicted - actual) / actual; 0 when both are 0, inf when only the prediction is."""
    if actual == 0:
        return 0.0 if predicted == 0 else float("inf")
    return (predicted - actual) / actual


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(b) < 1024 or unit == "GiB":
            return f"{int(b)} B" if unit == "B" else f"{b:.2f} {unit}"
        b /= 1024
    return ""


@dataclasses.dataclass(frozen=True)
class Fidelity:
    """Predicted vs compiled, per device. ``str(report)`` is a table."""

    rows: tuple[CollectiveRow, ...]
    predicted_comm_bytes: float
    compiled_comm_bytes: float
    predicted_peak_bytes: float
    compiled_peak_bytes: float

    @property
    def comm_error(self) -> float:
        """Relative error of the predicted communication bytes (0.1 = 10% too many)."""
        return _rel(self.predicted_comm_bytes, self.compiled_comm_bytes)

    @property
    def memory_error(self) -> float:
        """Relative error of the predicted peak memory per device."""
        return _rel(self.predicted_peak_bytes, self.compiled_peak_bytes)

    def table(self) -> str:
        head = ("collective", "axes", "predicted", "bytes", "compiled", "bytes")
        body = [(r.kind, r.axes, str(r.predicted_count), _fmt_bytes(r.predicted_bytes),
                 str(r.compiled_count), _fmt_bytes(r.compiled_bytes)) for r in self.rows]
        body.append(("total communication", "", "", _fmt_bytes(self.predicted_comm_bytes), "",
                     _fmt_bytes(self.compiled_comm_bytes) + f"  ({self.comm_error:+.1%})"))
        body.append(("peak memory / device", "", "", _fmt_bytes(self.predicted_peak_bytes), "",
                     _fmt_bytes(self.compiled_peak_bytes) + f"  ({self.memory_error:+.1%})"))
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
        line = lambda row: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                     for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        rule = "-" * len(line(head))
        return "\n".join([line(head), rule, *map(line, body[:-2]), rule, *map(line, body[-2:])])

    def __str__(self) -> str:
        return self.table()


def compare(predicted: Sequence[PlannedCollective], compiled: Sequence[PlannedCollective],
            predicted_peak: float, compiled_peak: float) -> Fidelity:
    both: dict = defaultdict(lambda: [0, 0.0, 0, 0.0])
    for kind, axes, count, nbytes in predicted:
        both[(kind, axes)][:2] = [count, nbytes]
    for kind, axes, count, nbytes in compiled:
        both[(kind, axes)][2:] = [count, nbytes]
    rows = tuple(CollectiveRow(k, a, int(v[0]), float(v[1]), int(v[2]), float(v[3]))
                 for (k, a), v in sorted(both.items()))
    return Fidelity(rows, float(sum(r[3] for r in predicted)), float(sum(r[3] for r in compiled)),
                    float(predicted_peak), float(compiled_peak))


def fidelity(plan, compiled) -> Fidelity:
    """``plan``'s predictions next to the program XLA compiled for it (``.lower(...).compile()``).

    If the compiled program donates arguments (its results alias them), its peak is
    compared with the plan's peak for a step that donates every carried argument.
    A pipelined plan (stages on submeshes) gets a report per stage and program
    (``pipeline.fidelity.PipelineFidelity``)."""
    pipeline = getattr(plan, "pipeline", None)
    if pipeline is not None and pipeline.num_stages > 1:
        from shardsearch.pipeline.fidelity import pipeline_fidelity  # it builds on this module

        return pipeline_fidelity(plan, compiled)
    mesh = MeshShape(tuple(plan.mesh.axis_names), tuple(plan.mesh.axis_sizes))
    p = plan.predicted
    donated = compiled.memory_analysis().alias_size_in_bytes > 0
    peak = p.peak_donated_bytes if donated and p.peak_donated_bytes else p.peak_bytes
    return compare(p.collectives, compiled_collectives(compiled.as_text(), mesh), peak, compiled_peak_bytes(compiled))
