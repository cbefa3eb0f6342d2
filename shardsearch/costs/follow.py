"""Which operand an elementwise or layout op follows into its layout (as Alpa does), and
the strategy it then takes for each of that operand's: ``costs.build`` folds these ops
into their producers (``Problem.follows``), which removes most of them from the ILP."""

from __future__ import annotations

import numpy as np

from shardsearch.graph import NodeKind, ValueRef
from shardsearch.strategies.elementwise import ELEMENTWISE

# Layout ops with one tensor operand: they follow it whenever every layout it can
# come in has a matching strategy (a reshape that would lose a split does not follow).
LAYOUT_FOLLOWERS = frozenset({"transpose"})


def follow_source(graph, node) -> tuple[int, ValueRef] | None:
    """(operand position, value) an elementwise or layout op would follow (``follow_mapping``)."""
    if node.kind is not NodeKind.OP or len(node.outputs) != 1:
        return None
    tensors = [(j, r) for j, r in enumerate(node.inputs) if isinstance(r, ValueRef)]
    if node.primitive in ELEMENTWISE:
        candidates = [(j, r) for j, r in tensors if graph.info(r).shape == node.outputs[0].shape]
    elif node.primitive in LAYOUT_FOLLOWERS and len(tensors) == 1:
        candidates = tensors
    else:
        return None
    if not candidates:
        return None
    return next(((j, r) for j, r in candidates if graph.nodes[r.node].kind is NodeKind.OP), candidates[0])


def follow_mapping(graph, strategies, costs, node, memo: dict | None = None, source=False
                   ) -> tuple[int, np.ndarray] | None:
    """An elementwise or layout op takes the layout of one operand (as Alpa does).

    Elementwise: the first operand of its own shape whose producer is an operator (a
    gradient, an activation) rather than an argument; the other operands are resharded
    to it if needed, and that cost stays on their edges. Where several strategies take
    the operand as it comes (a broadcast may split its new dims or not), the cheapest.
    This removes most elementwise and layout ops from the ILP. ``source``: its
    ``follow_source``, if known.
    """
    if source is False:
        source = follow_source(graph, node)
    if source is None:
        return None
    j, ref = source
    total = costs.compute[node.id] + costs.comm[node.id] + costs.local[node.id]
    memo = {} if memo is None else memo
    # repeated layers share strategy lists and costs: one mapping for all their copies
    key = ("follow", id(strategies[node.id]), j, id(strategies[ref.node]), ref.index, total.tobytes())
    if key not in memo:
        by_in: dict = {}
        for t, s in enumerate(strategies[node.id]):
            k = s.in_specs[j]
            if k not in by_in or total[t] < total[by_in[k]]:
                by_in[k] = t
        mapping = [by_in.get(s.out_specs[ref.index]) for s in strategies[ref.node]]
        # one array per distinct mapping (the layers' totals differ, their mappings rarely):
        # the reductions fold each edge matrix once per (matrix, mapping) object
        memo[key] = None if any(m is None for m in mapping) else \
            memo.setdefault(("mapping", tuple(mapping)), np.array(mapping, dtype=np.int64))
    return None if memo[key] is None else (ref.node, memo[key])
