"""Re-run an OpGraph with jax, letting the caller touch every node's outputs.

This is how a plan is applied: the apply stage passes ``constrain`` to pin the
layout of intermediates with ``with_sharding_constraint``. A scan planned once
(graph.Loop) runs as ``jax.lax.scan`` again, its body's nodes pinned inside it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax

from shardsearch.graph import LiteralValue, Loop, NodeKind, OpGraph

Constrain = Callable[[int, list[Any]], list[Any]]


def _identity(_node: int, values: list[Any]) -> list[Any]:
    return values


class _Runner:
    def __init__(self, graph: OpGraph, flat_args, constrain: Constrain, constrain_operands: Constrain):
        self.graph = graph
        self.arg_of = {nid: i for i, nid in enumerate(graph.input_nodes)}
        self.flat_args = flat_args
        self.pin, self.pin_operands = constrain, constrain_operands

    def read(self, values: dict, ref):
        if isinstance(ref, LiteralValue):
            return ref.value
        return values[ref.node][ref.index]

    def run(self, node_ids: Sequence[int], values: dict, loops: Sequence[Loop]) -> None:
        """Evaluate ``node_ids`` in order into ``values``; ``loops`` are the loops among
        them (nested ones included), each run whole when its first member comes up."""
        top = [l for l in loops if not any(l is not o and l.members[0] in set(o.body) for o in loops)]
        start = {l.members[0]: l for l in top}
        skip: set[int] = set()
        for nid in node_ids:
            if nid in skip:
                continue
            if nid in start:
                loop = start[nid]
                self.run_loop(loop, values, [l for l in loops if l is not loop and l.members[0] in set(loop.body)])
                skip.update(loop.members)
                continue
            node = self.graph.nodes[nid]
            if node.kind is NodeKind.INPUT:
                outs = [self.flat_args[self.arg_of[nid]]]
            elif node.kind is NodeKind.CONST:
                outs = [node.payload]
            else:
                eqn = node.payload
                operands = self.pin_operands(nid, [self.read(values, r) for r in node.inputs])
                res = eqn.primitive.bind(*operands, **eqn.params)
                outs = list(res) if eqn.primitive.multiple_results else [res]
            values[nid] = self.pin(nid, outs)

    def run_loop(self, loop: Loop, values: dict, nested: list[Loop]) -> None:
        def operand(nid):  # the one operand of a slice / carry / out / stack node, pinned
            return self.pin_operands(nid, [self.read(values, self.graph.nodes[nid].inputs[0])])[0]

        xs = [operand(n) for n in loop.slices]  # the whole stacked operand, outside the loop
        init = [operand(n) for n in loop.carries]

        def body(carry, x):
            local = dict(values)  # the body reads outer values (weights) as they are
            for n, v in zip(loop.carries, carry):
                local[n] = self.pin(n, [v])
            for n, v in zip(loop.slices, x):
                local[n] = self.pin(n, [v])
            self.run(loop.body, local, nested)
            new = [self.read(local, r) for r in loop.carry_out]
            ys = [self.pin_operands(n, [self.read(local, r)])[0] for n, r in zip(loop.stacks, loop.ys)]
            return new, ys

        final, ys = jax.lax.scan(body, init, xs, length=loop.length, reverse=loop.reverse, unroll=loop.unroll)
        for n, v in zip(loop.outs, final):
            values[n] = self.pin(n, self.pin_operands(n, [v]))
        for n, v in zip(loop.stacks, ys):
            values[n] = self.pin(n, [v])


def eval_graph(
    graph: OpGraph,
    flat_args: Sequence[Any],
    constrain: Constrain | None = None,
    constrain_operands: Constrain | None = None,
) -> list[Any]:
    """Run the graph; ``constrain(node, outputs)`` may replace each node's outputs and
    ``constrain_operands(node, operands)`` each operator's operands before it runs."""
    runner = _Runner(graph, flat_args, constrain or _identity, constrain_operands or _identity)
    values: dict[int, list[Any]] = {}
    runner.run([n.id for n in graph.nodes], values, graph.loops)
    return [runner.read(values, r) for r in graph.outputs]
