"""A plain stage assignment for the runtime's tests: layer units dealt to S stages in order,
the backward mirrored, once-per-step work on the stage of what it reads.

(The search's own ``assign_stages`` belongs to pipeline/stages.py; this one only has to
be valid: forward values flow to the same or later stages, backward ones to earlier.)
"""

from __future__ import annotations

import numpy as np

from shardsearch.graph import NodeKind, ValueRef
from shardsearch.memory import forward_end
from shardsearch.pipeline.assignment import StageAssignment, StageKind
from shardsearch.pipeline.layers import layer_units
from shardsearch.pipeline.propagate import Phase


def _ancestors(graph, *nodes: int) -> set[int]:
    seen, todo = set(), list(nodes)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        todo.extend(r.node for r in graph.nodes[n].inputs if isinstance(r, ValueRef))
    return seen


def assign_by_units(graph, split, num_stages: int) -> StageAssignment:
    units = layer_units(graph).units
    assert len(units) >= num_stages, (len(units), num_stages)
    bounds = np.linspace(0, len(units), num_stages + 1).round().astype(int)
    unit_stage = np.searchsorted(bounds, np.arange(len(units)), side="right") - 1
    phases, n_nodes = split.phases, len(graph.nodes)
    micro = {n for n in range(n_nodes) if phases[n] in (Phase.MICRO, Phase.ACCUM)}
    forward = _ancestors(graph, forward_end(graph))
    for r in graph.regions:  # a forward loop also makes residuals the loss does not read
        if forward & set(r.members):
            forward |= _ancestors(graph, *r.members)
    forward &= micro
    stage = [0] * n_nodes
    kind = [StageKind.PRE] * n_nodes
    producers = lambda n: [r.node for r in graph.nodes[n].inputs if isinstance(r, ValueRef)]  # noqa: E731

    def unit_of(n):
        for u, unit in enumerate(units):
            if unit.start <= n < unit.stop:
                return u
        return 0 if n < units[0].start else len(units) - 1

    region_of = {}  # a loop / remat / cond runs whole on one stage: its nodes are placed together
    for r in sorted(graph.regions, key=lambda r: -len(r.members)):
        for m in r.members:
            region_of.setdefault(m, tuple(r.members))
    done = set()
    for n in sorted(micro):
        if n in done:
            continue
        group = [m for m in region_of.get(n, (n,)) if m in micro]
        inside = set(group)
        outer = lambda ms: [p for m in ms for p in producers(m) if p not in inside]  # noqa: E731
        if any(m in forward for m in group):
            s = max([int(unit_stage[unit_of(m)]) for m in group] + [stage[p] for p in outer(group) if p in forward])
            k = StageKind.FORWARD
        else:
            fwd = [stage[p] for p in outer(group) if p in forward]
            bwd = [stage[p] for p in outer(group) if p in micro and p not in forward]
            s, k = min([max(fwd) if fwd else num_stages - 1] + bwd), StageKind.BACKWARD
        for m in group:
            stage[m], kind[m] = s, k
            done.add(m)
    for n in range(n_nodes):
        if phases[n] is Phase.POST:
            kind[n] = StageKind.POST
            stage[n] = max([stage[p] for p in producers(n) if phases[p] is not Phase.PRE] or [0])
    users = graph.users()
    aliased = {a: graph.outputs[k] for k, a in enumerate(graph.output_aliases) if a is not None}
    for n in reversed(range(n_nodes)):
        if phases[n] is not Phase.PRE:
            continue
        node = graph.nodes[n]
        arg = graph.input_nodes.index(n) if node.kind is NodeKind.INPUT else None
        new = aliased.get(arg)
        if new is not None and isinstance(new, ValueRef) and phases[new.node] is Phase.POST:
            stage[n] = stage[new.node]  # a parameter lives where its update runs
        else:
            stage[n] = min([stage[u] for u, _ in users[n]] or [0])
    readers = [[] for _ in graph.input_nodes]
    for i, n in enumerate(graph.input_nodes):
        readers[i] = [stage[n]] + sorted({stage[u] for u, _ in users[n]} - {stage[n]})
    ranges = tuple((int(bounds[s]), int(bounds[s + 1])) for s in range(num_stages))
    return StageAssignment(num_stages, tuple(stage), tuple(kind), ranges, tuple(tuple(r) for r in readers))
