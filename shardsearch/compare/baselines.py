"""What each textbook recipe does with each argument, and what role an argument plays.

Roles: a *parameter* is an argument whose next value the step returns and that the
forward pass reads; *optimizer state* is returned too but not read before the loss;
an *input* (the batch) is fed anew each step. The recipes:

- data parallel: parameters and optimizer state replicated, every input split on its
  leading (batch) dim over as many devices as divide it;
- FSDP (ZeRO-3): inputs as in data parallel; parameters and optimizer state split on
  one dim over as many devices as divide it (the largest such dim), gathered for use;
- tensor parallel: inputs replicated; the search splits the weights and activations.
"""

from __future__ import annotations

import dataclasses
import math

from cost_model.mesh import MeshShape, Spec
from shardsearch.graph import OpGraph, ValueRef
from shardsearch.memory import carried_args, forward_end

PARAM, OPT_STATE, INPUT = "parameter", "optimizer state", "input"
DATA_PARALLEL, FSDP, TENSOR_PARALLEL = "data parallel", "FSDP (ZeRO-3)", "tensor parallel"
RECIPES = (DATA_PARALLEL, FSDP, TENSOR_PARALLEL)

DESCRIPTIONS = {
    DATA_PARALLEL: "parameters replicated, the batch split over every device",
    FSDP: "parameters and optimizer state split over every device, gathered for use; the batch split",
    TENSOR_PARALLEL: "the batch replicated; weights and activations split as the search finds best",
}


@dataclasses.dataclass(frozen=True)
class Alternative:
    """A recipe priced by the cost model on the plan's own problem (per device, per step)."""

    name: str  # one of RECIPES
    description: str
    total_s: float
    compute_s: float
    comm_s: float
    peak_bytes: float  # the liveness model's peak, every carried argument donated
    fits: bool  # peak_bytes within the plan's memory budget
    status: str  # the completing solve's status ("OPTIMAL", "FEASIBLE", ...)
    in_specs: tuple[Spec, ...]  # the layout of each argument leaf under the recipe


def argument_roles(graph: OpGraph) -> tuple[str, ...]:
    """PARAM, OPT_STATE or INPUT for each flat argument (see the module notes)."""
    carried = carried_args(graph)
    t = forward_end(graph)
    read_forward = {ref.node for n in graph.nodes[: t + 1] for ref in n.inputs if isinstance(ref, ValueRef)}
    return tuple(
        INPUT if i not in carried else PARAM if n in read_forward else OPT_STATE
        for i, n in enumerate(graph.input_nodes)
    )


def _devices(spec: Spec, mesh: MeshShape) -> int:
    return math.prod(mesh.group_size(d) for d in spec if d)


def _split_one_dim(candidates: list[Spec], shape: tuple[int, ...], mesh: MeshShape, dim: int | None) -> Spec:
    """The candidate that splits one dim (``dim``, or the one that gives the most devices,
    then the largest) over the most devices; the replicated candidate if none does."""
    best, key = candidates[0], (0, 0, 0)
    for spec in candidates:
        used = [d for d, axes in enumerate(spec) if axes]
        if len(used) != 1 or (dim is not None and used[0] != dim):
            continue
        k = (_devices(spec, mesh), shape[used[0]], -used[0])
        if k > key:
            best, key = spec, k
    return best


def recipe_layouts(recipe: str, roles: tuple[str, ...], candidates: list[list[Spec]],
                   shapes: list[tuple[int, ...]], mesh: MeshShape) -> list[Spec | None]:
    """The layout ``recipe`` gives each argument, chosen among its ``candidates``; None
    where the recipe leaves the choice to the search."""
    out: list[Spec | None] = []
    for role, cands, shape in zip(roles, candidates, shapes):
        replicated = next((c for c in cands if not any(c)), cands[0])
        if role == INPUT:
            out.append(replicated if recipe == TENSOR_PARALLEL or not shape
                       else _split_one_dim(cands, shape, mesh, 0))
        elif recipe == DATA_PARALLEL:
            out.append(replicated)
        elif recipe == FSDP:
            out.append(_split_one_dim(cands, shape, mesh, None) if shape else replicated)
        else:
            out.append(None)
    return out
