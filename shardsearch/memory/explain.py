"""What a step's peak is made of, item by item, and which plan choice would cut each.

One breakdown for every place memory is shown (``plan.summary()``, ``shardsearch
explain``, ``MemoryBudgetError``): the buffers live at the peak, in the kinds below,
from the same model as the peak itself (``breakdown.step_buffers`` + XLA's placement).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from cost_model.mesh import MeshShape, Spec, used_axes
from shardsearch.graph import NodeKind, OpGraph, ValueRef
from shardsearch.memory.assign import Assignment
from shardsearch.memory.breakdown import (
    INPUTS,
    OPT_STATE,
    PARAMS,
    MemoryBreakdown,
    StepBuffers,
    breakdown_of,
    old_id,
    place,
    scheduled_buffers,
)
from shardsearch.memory.liveness import carried_args

RESULTS = "results"  # result buffers of their own (the new state when it is not donated)
ACTIVATIONS = "activations kept for backward"
GRADIENTS = "gradients"
COPIES = "gathered copies"  # weights gathered (or other values moved) into a reader's layout
TEMPORARIES = "temporaries"  # everything else on the temporary heap at the peak
KINDS = (PARAMS, OPT_STATE, INPUTS, RESULTS, ACTIVATIONS, GRADIENTS, COPIES, TEMPORARIES)

# The plan choice that cuts each kind (what `shardsearch explain` says of a plan).
REMEDY = {
    PARAMS: "split them over more devices (ZeRO-3 / FSDP-style)",
    OPT_STATE: "split them over the data axis too (ZeRO-1)",
    INPUTS: "split the batch over more devices, or microbatches",
    RESULTS: "donate the state (donate_argnums) so the new state reuses its buffers",
    ACTIVATIONS: "rematerialize them in the backward pass, or accumulate over microbatches",
    GRADIENTS: "split the gradients with the optimizer update (reduce-scatter)",
    COPIES: "gather weights per use instead of keeping them for the backward pass, or keep them split",
    TEMPORARIES: "accumulate over microbatches (smaller per-step temporaries)",
}


# What still cuts each kind once the plan splits everything it can (the errors' advice).
REMEDY_AT_LEAST = {
    PARAMS: "more devices",
    OPT_STATE: "more devices",
    INPUTS: "more devices, or microbatches",
    RESULTS: "donate the state (donate_argnums), or more devices",
    ACTIVATIONS: "rematerialization, or gradient accumulation over microbatches",
    GRADIENTS: "more devices",
    COPIES: "more devices",
    TEMPORARIES: "gradient accumulation over microbatches",
}


@dataclasses.dataclass(frozen=True)
class Contributor:
    kind: str  # one of KINDS
    name: str  # an argument path, or "dot_general float32[16, 1024, 4096] (model.py:152 mlp)"
    nbytes: float  # per device
    node: int  # the graph node; -1 for an argument
    cut: str = ""  # the plan choice that would cut it (``cut_for``)


@dataclasses.dataclass(frozen=True)
class PeakExplained:
    peak_bytes: float
    by_kind: tuple[tuple[str, float], ...]  # (kind, bytes) in KINDS order, zeros left out
    top: tuple[Contributor, ...]  # the largest contributors, largest first
    peak_node: int  # node at which the temporaries peak; -1 if they never do


def _value_name(graph: OpGraph, ref: ValueRef) -> str:
    node = graph.nodes[ref.node]
    info = node.outputs[ref.index]
    if node.kind is NodeKind.INPUT:  # an argument moved to another layout
        return f"{node.label} {info.dtype.name}{list(info.shape)}"
    where = f" ({node.label.rsplit('/', 1)[-1]})" if node.label else ""
    return f"{node.primitive} {info.dtype.name}{list(info.shape)}{where}"


def explain_peak(
    graph: OpGraph,
    in_specs: Sequence[Spec],
    node_out_specs: Mapping[int, Sequence[Spec]],
    mesh: MeshShape,
    *,
    node_operand_specs: Mapping[int, Mapping[int, Spec]] | None = None,
    donated: frozenset[int] = frozenset(),
    top: int = 10,
) -> PeakExplained:
    """The buffers live at the step's peak, by kind, and the ``top`` largest of them
    (``peak_bytes`` equals ``memory_breakdown(...).peak_bytes``: the same buffers)."""
    return breakdown_and_peak(graph, in_specs, node_out_specs, mesh, node_operand_specs=node_operand_specs,
                              donated=donated, top=top)[1]


def breakdown_and_peak(
    graph: OpGraph,
    in_specs: Sequence[Spec],
    node_out_specs: Mapping[int, Sequence[Spec]],
    mesh: MeshShape,
    *,
    node_operand_specs: Mapping[int, Mapping[int, Spec]] | None = None,
    donated: frozenset[int] = frozenset(),
    top: int = 10,
) -> tuple[MemoryBreakdown, PeakExplained]:
    """``memory_breakdown`` and ``explain_peak`` of the same buffers, placed once."""
    graph, sb, order, node_out_specs = scheduled_buffers(graph, in_specs, node_out_specs, mesh,
                                                         node_operand_specs=node_operand_specs, donated=donated)
    placed = place(graph, sb)
    figures, why = breakdown_of(sb, placed), explain_placed(graph, sb, placed, in_specs, node_out_specs, mesh, top)
    if order is None:
        return figures, why
    return (dataclasses.replace(figures, peak_node=old_id(order, figures.peak_node)),
            dataclasses.replace(why, peak_node=old_id(order, why.peak_node),
                                top=tuple(dataclasses.replace(c, node=old_id(order, c.node)) for c in why.top)))


def explain_placed(graph: OpGraph, sb: StepBuffers, placed: Assignment, in_specs: Sequence[Spec],
                   node_out_specs: Mapping[int, Sequence[Spec]], mesh: MeshShape, top: int = 10) -> PeakExplained:
    """``explain_peak`` of buffers already placed (``breakdown.place``)."""
    items: list[Contributor] = []
    for i, ((kind, nbytes), node) in enumerate(zip(sb.args, graph.input_nodes)):
        items.append(Contributor(kind, graph.in_paths[i] + _shape(graph, node), nbytes, -1,
                                 cut_for(kind, in_specs[i], mesh)))
    for k, nbytes in sb.results:
        items.append(Contributor(RESULTS, graph.out_paths[k], nbytes, -1, cut_for(RESULTS, None, mesh)))
    t, at = sb.forward_end, placed.heap_peak_at
    state_shapes = {(graph.input_info(i).shape, graph.input_info(i).dtype) for i in carried_args(graph)}
    for span, (ref, copy), home in zip(sb.temps, sb.temp_refs, placed.home_of):
        if home >= 0 or not span.first <= at <= span.last:
            continue
        info = graph.info(ref)
        if copy:
            kind = COPIES
        elif span.first <= t < span.last:
            kind = ACTIVATIONS
        elif span.first > t and (info.shape, info.dtype) in state_shapes:
            kind = GRADIENTS
        else:
            kind = TEMPORARIES
        specs = node_out_specs.get(ref.node)
        spec = specs[ref.index] if specs is not None and not copy else None
        items.append(Contributor(kind, _value_name(graph, ref), span.nbytes, ref.node, cut_for(kind, spec, mesh)))
    by_kind = {k: 0.0 for k in KINDS}
    for c in items:
        by_kind[c.kind] += c.nbytes
    # equal sizes: arguments first (KINDS order), which a user can name and split
    ordered = sorted(items, key=lambda c: (-c.nbytes, KINDS.index(c.kind), c.name))
    peak = sum(by_kind.values())
    return PeakExplained(peak, tuple((k, b) for k, b in by_kind.items() if b > 0), tuple(ordered[:top]), at)


def cut_for(kind: str, spec: Spec | None, mesh: MeshShape) -> str:
    """The plan choice that would cut a buffer of ``kind`` laid out as ``spec``: a
    ZeRO-style split over the mesh axes it is still replicated on, remat, microbatches."""
    free = [a for a, n in zip(mesh.axis_names, mesh.axis_sizes) if n > 1 and a not in used_axes(spec or ())]
    over = " over " + "+".join(free) if free else ""
    if kind == PARAMS:
        return f"ZeRO-3 / FSDP split{over}" if free else "more devices (split over every axis already)"
    if kind == OPT_STATE:
        return f"ZeRO-1 split{over}" if free else "more devices (split over every axis already)"
    if kind == GRADIENTS:
        return f"ZeRO-2 split{over} (reduce-scatter)" if free else "more devices"
    if kind in (ACTIVATIONS, INPUTS, TEMPORARIES) and spec is not None and free:
        return f"{REMEDY_SHORT[kind]}, or split{over}"
    return REMEDY_SHORT[kind]


# The short form of ``REMEDY`` for one buffer (``cut_for``), when no split is left.
REMEDY_SHORT = {
    PARAMS: "more devices",
    OPT_STATE: "more devices",
    INPUTS: "microbatches",
    RESULTS: "donate the state (donate_argnums)",
    ACTIVATIONS: "remat (recompute in the backward pass), or microbatches",
    GRADIENTS: "more devices",
    COPIES: "gather per use (remat the layer), or keep the weight split",
    TEMPORARIES: "microbatches",
}


def fmt_memory(nbytes: float) -> str:
    """Bytes as every memory figure is shown (summary, explain, errors): GiB, MiB, KiB."""
    if nbytes >= 2**30:
        return f"{nbytes / 2**30:.2f} GiB"
    if nbytes >= 2**20:
        return f"{nbytes / 2**20:.1f} MiB"
    return f"{nbytes / 2**10:.1f} KiB" if nbytes >= 2**10 else f"{int(nbytes)} B"


def kinds_line(by_kind: Sequence[tuple[str, float]]) -> str:
    """``parameters 1.20 GiB, activations kept for backward 640.0 MiB, ...``: the kinds of a
    peak in ``KINDS`` order, the one wording of the breakdown everywhere it is printed."""
    return ", ".join(f"{k} {fmt_memory(b)}" for k, b in by_kind)


def _shape(graph: OpGraph, node: int) -> str:
    info = graph.nodes[node].outputs[0]
    return f" {info.dtype.name}{list(info.shape)}"


def explain_plan(graph: OpGraph, plan, donated: frozenset[int] = frozenset(), top: int = 10) -> PeakExplained:
    """``explain_peak`` for a plan's layouts."""
    return explain_peak(graph, plan.flat_in_specs, plan.node_out_specs, plan.mesh,
                        node_operand_specs=plan.node_operand_specs, donated=donated, top=top)
