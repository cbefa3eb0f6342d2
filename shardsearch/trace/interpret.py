"""Re-run an OpGraph with jax, letting the caller touch every node's outputs.

This is how a plan is applied: the apply stage passes ``constrain`` to pin the
layout of intermediates with ``with_sharding_constraint``. A scan planned once
(graph.Loop) runs as ``jax.lax.scan`` again, its body's nodes pinned inside it, a
checkpoint region (graph.Remat) inside ``jax.checkpoint``, a cond's branches
(graph.Cond) inside ``jax.lax.switch`` and a while loop (graph.While) as
``jax.lax.while_loop``, each with the planned layouts pinned inside.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax

from shardsearch.graph import Cond, LiteralValue, Loop, NodeKind, OpGraph, Remat, ValueRef, While

Region = Loop | Remat | Cond | While

Constrain = Callable[[int, list[Any]], list[Any]]
# (node id, equation, operands) -> the operator's result, as ``primitive.bind`` returns it
Bind = Callable[[int, Any, list[Any]], Any]


def _bind_params(eqn) -> dict:
    """Params to bind ``eqn`` with, as core.eval_jaxpr gets them: call-like primitives
    (shard_map) take their body as a function, not as the jaxpr their equation holds."""
    return eqn.primitive.get_bind_params(eqn.params)


def _identity(_node: int, values: list[Any]) -> list[Any]:
    return values


def bind_equation(_node: int, eqn, operands: list[Any]) -> Any:
    return eqn.primitive.bind(*operands, **_bind_params(eqn))


class _Runner:
    def __init__(self, graph: OpGraph, flat_args, constrain: Constrain, constrain_operands: Constrain,
                 bind: Bind = bind_equation):
        self.graph, self.bind = graph, bind
        self.arg_of = {nid: i for i, nid in enumerate(graph.input_nodes)}
        self.flat_args = flat_args
        self.pin, self.pin_operands = constrain, constrain_operands

    def read(self, values: dict, ref):
        if isinstance(ref, LiteralValue):
            return ref.value
        return values[ref.node][ref.index]

    def value(self, values: dict, ref):
        """An operand as a jax value of its own dtype (a literal too: a value leaving a
        branch or loop body must have the type the other branches / iterations give)."""
        if isinstance(ref, LiteralValue):
            return jax.numpy.asarray(ref.value, dtype=ref.info.dtype)
        return self.read(values, ref)

    def run(self, node_ids: Sequence[int], values: dict, regions: Sequence[Region]) -> None:
        """Evaluate ``node_ids`` in order into ``values``; ``regions`` are the loops,
        conds and checkpoint regions among them (nested ones included), each run whole
        when its first member comes up."""
        inside = {id(r): set(r.members) for r in regions}
        # Regions nest or are apart. A checkpoint region may hold exactly the nodes of a
        # cond or loop it wraps (or of another checkpoint, listed after the one inside).
        rank = {id(r): (len(r.members), isinstance(r, Remat), i) for i, r in enumerate(regions)}
        within = lambda r, o: r is not o and rank[id(r)] < rank[id(o)] and r.members[0] in inside[id(o)]
        top = [r for r in regions if not any(within(r, o) for o in regions)]
        start = {r.members[0]: r for r in top}
        skip: set[int] = set()
        for nid in node_ids:
            if nid in skip:
                continue
            if nid in start:
                region = start[nid]
                nested = [r for r in regions if within(r, region)]
                runners = {Loop: self.run_loop, Remat: self.run_remat, Cond: self.run_cond, While: self.run_while}
                runners[type(region)](region, values, nested)
                skip.update(region.members)
                continue
            node = self.graph.nodes[nid]
            if node.kind is NodeKind.INPUT:
                outs = [self.flat_args[self.arg_of[nid]]]
            elif node.kind is NodeKind.CONST:
                outs = [node.payload]
            else:
                eqn = node.payload
                operands = self.pin_operands(nid, [self.read(values, r) for r in node.inputs])
                res = self.bind(nid, eqn, operands)
                outs = list(res) if eqn.primitive.multiple_results else [res]
            values[nid] = self.pin(nid, outs)

    def run_remat(self, region: Remat, values: dict, nested: list) -> None:
        """The region's nodes inside jax.checkpoint, reading its inputs as arguments."""
        refs = [r for r in region.inputs if isinstance(r, ValueRef)]

        def fn(*args):
            local = dict(values)
            for ref, arg in zip(refs, args):
                outs = list(local[ref.node])
                outs[ref.index] = arg
                local[ref.node] = outs
            self.run(region.members, local, nested)
            return [self.read(local, r) for r in region.outputs]

        args = [self.read(values, r) for r in refs]
        body = jax.make_jaxpr(fn)(*args)
        if region.payload is not None and not body.consts:
            # The original equation with the pinned body: keeps its params (a backward
            # pass's region is marked differentiated, which is what makes XLA recompute).
            results = region.payload.primitive.bind(*args, **{**region.payload.params, "jaxpr": body.jaxpr})
        else:
            results = jax.checkpoint(fn, prevent_cse=region.prevent_cse, policy=region.policy)(*args)
        members = set(region.members)
        for ref, v in zip(region.outputs, results):
            if isinstance(ref, ValueRef) and ref.node in members:  # not a pass-through input
                outs = list(values.get(ref.node, [None] * len(self.graph.nodes[ref.node].outputs)))
                outs[ref.index] = v
                values[ref.node] = outs

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

    def run_cond(self, cond: Cond, values: dict, nested: list) -> None:
        """The branches inside lax.switch, reading outer values as they are; each hands
        its results over in the merged outputs' planned layouts."""

        def branch(nodes, results):
            def fn():
                local = dict(values)
                self.run(nodes, local, nested)
                return [self.pin(m, [self.value(local, r)])[0] for m, r in zip(cond.merges, results)]

            return fn

        index = self.read(values, cond.index)
        outs = jax.lax.switch(index, [branch(b, r) for b, r in zip(cond.branches, cond.results)])
        for m, v in zip(cond.merges, outs):
            values[m] = self.pin(m, [v])

    def run_while(self, loop: While, values: dict, nested: list) -> None:
        """The predicate and body inside lax.while_loop; the carry keeps its planned layout."""

        def top(carry):  # outer values as they are, the carries at the top of an iteration
            local = dict(values)
            for n, v in zip(loop.carries, carry):
                local[n] = self.pin(n, [v])
            return local

        def cond_fn(carry):
            local = top(carry)
            self.run(loop.cond, local, nested)
            return self.value(local, loop.pred)

        def body_fn(carry):
            local = top(carry)
            self.run(loop.body, local, nested)
            return [self.pin(n, [self.value(local, r)])[0] for n, r in zip(loop.carries, loop.carry_out)]

        init = [self.pin(n, self.pin_operands(n, [self.value(values, self.graph.nodes[n].inputs[0])]))[0]
                for n in loop.carries]
        final = jax.lax.while_loop(cond_fn, body_fn, init)
        for n, v in zip(loop.outs, final):
            values[n] = self.pin(n, self.pin_operands(n, [v]))


def eval_graph(
    graph: OpGraph,
    flat_args: Sequence[Any],
    constrain: Constrain | None = None,
    constrain_operands: Constrain | None = None,
    bind: Bind | None = None,
) -> list[Any]:
    """Run the graph; ``constrain(node, outputs)`` may replace each node's outputs,
    ``constrain_operands(node, operands)`` each operator's operands before it runs, and
    ``bind(node, equation, operands)`` run an operator another way than its primitive's bind."""
    runner = _Runner(graph, flat_args, constrain or _identity, constrain_operands or _identity, bind or bind_equation)
    values: dict[int, list[Any]] = {}
    runner.run([n.id for n in graph.nodes], values, graph.regions)
    return [runner.read(values, r) for r in graph.outputs]
