"""Re-run an OpGraph with jax, letting the caller touch every node's outputs.

This is how a plan is applied: the apply stage passes ``constrain`` to pin the
layout of intermediates with ``with_sharding_constraint``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from shardsearch.graph import LiteralValue, NodeKind, OpGraph

Constrain = Callable[[int, list[Any]], list[Any]]


def eval_graph(
    graph: OpGraph,
    flat_args: Sequence[Any],
    constrain: Constrain | None = None,
    constrain_operands: Constrain | None = None,
) -> list[Any]:
    """Run the graph; ``constrain(node, outputs)`` may replace each node's outputs and
    ``constrain_operands(node, operands)`` each operator's operands before it runs."""
    values: dict[int, list[Any]] = {}

    def read(ref):
        if isinstance(ref, LiteralValue):
            return ref.value
        return values[ref.node][ref.index]

    arg_of = {nid: i for i, nid in enumerate(graph.input_nodes)}
    for node in graph.nodes:
        if node.kind is NodeKind.INPUT:
            outs = [flat_args[arg_of[node.id]]]
        elif node.kind is NodeKind.CONST:
            outs = [node.payload]
        else:
            eqn = node.payload
            operands = [read(r) for r in node.inputs]
            if constrain_operands is not None:
                operands = constrain_operands(node.id, operands)
            res = eqn.primitive.bind(*operands, **eqn.params)
            outs = list(res) if eqn.primitive.multiple_results else [res]
        if constrain is not None:
            outs = constrain(node.id, outs)
        values[node.id] = outs
    return [read(r) for r in graph.outputs]
