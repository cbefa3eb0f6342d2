"""Making a plan fit ``memory_budget``: the budget as the user writes it (``budget``), the
step's peak as XLA will allocate it (``step_peak``), and the search for a plan whose peak
fits (``tighten``); when none does, an error that says what the least is and what would
bring it down.
"""

from __future__ import annotations

import numpy as np

from shardsearch.errors import MemoryBudgetError
from shardsearch.fit.budget import parse_budget as parse_budget
from shardsearch.fit.tighten import Attempt as Attempt
from shardsearch.fit.tighten import NoFit as NoFit
from shardsearch.fit.tighten import fit as fit
from shardsearch.graph import OpGraph
from shardsearch.memory import carried_args, explain_plan, memory_breakdown
from shardsearch.memory.explain import REMEDY_AT_LEAST, RESULTS, fmt_memory, kinds_line

NO_FIT = (
    "no plan of this step fits memory_budget={budget} per device on this mesh: the least it "
    "can take is {least} ({how}) = {kinds}. Raise memory_budget to at least {least_bytes} bytes, "
    "or cut the largest parts: {remedies}. The largest buffers at that peak: {largest}."
)


gib = fmt_memory  # bytes as KiB, MiB or GiB, the units every memory figure is shown in


def arguments_floor(graph: OpGraph, num_devices: int) -> float:
    """Bytes per device that no plan goes under: every argument held once across the mesh
    (the busiest device holds at least the average). Recomputing activations or splitting
    the batch cannot cut it, so a budget below it is refused without trying them."""
    total = 0.0
    for n in graph.input_nodes:
        info = graph.nodes[n].outputs[0]
        total += float(np.prod(info.shape, dtype=np.float64)) * info.dtype.itemsize
    return total / max(num_devices, 1)


def donated_args(graph: OpGraph, donate_argnums) -> frozenset[int]:
    """Flat argument indices whose buffers the step's results reuse: the leaves of the
    donated positional arguments (``args[i]...`` paths) that the step returns anew."""
    prefixes = tuple(f"args[{i}]" for i in donate_argnums)
    leaves = {k for k, path in enumerate(graph.in_paths)
              if any(path == p or path.startswith(p + "[") or path.startswith(p + ".") for p in prefixes)}
    return frozenset(leaves & carried_args(graph))


def step_peak(graph: OpGraph, plan, donated: frozenset[int] = frozenset()) -> float:
    """Bytes per device the step with ``plan`` peaks at, ``donated`` argument buffers reused."""
    return memory_breakdown(graph, plan.flat_in_specs, plan.node_out_specs, plan.mesh,
                            node_operand_specs=plan.node_operand_specs, donated=donated).peak_bytes


def describe_budget(nbytes: float) -> str:
    return f"{gib(nbytes)} ({nbytes:.6g} bytes)" if nbytes >= 2**20 else f"{nbytes:.6g} bytes"


def no_fit_error(budget: float, least: float, graph: OpGraph, plan, donated: frozenset[int],
                 tried: str = "its least-memory sharding") -> MemoryBudgetError:
    """The error for a budget no plan meets: the least peak found, what it is made of,
    and what would cut its largest parts."""
    why = explain_plan(graph, plan, donated, top=5)
    how = tried + (", donated state" if donated else ", no argument donated")
    kinds = kinds_line(why.by_kind)  # worded as in plan.summary() and explain
    big = [k for k, b in sorted(why.by_kind, key=lambda kb: -kb[1])][:3]
    remedies = "; ".join(f"{k}: {REMEDY_AT_LEAST[k]}" for k in big if not (k == RESULTS and donated))
    largest = "; ".join(f"{c.name} ({gib(c.nbytes)}, {c.kind})" for c in why.top)
    return MemoryBudgetError(NO_FIT.format(budget=describe_budget(budget), least=gib(least), how=how, kinds=kinds,
                                           least_bytes=int(least + 1), remedies=remedies, largest=largest),
                             least_bytes=least)
