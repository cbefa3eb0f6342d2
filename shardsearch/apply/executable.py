"""Plan -> a jitted function whose shardings are the plan's.

The traced graph is re-run operator by operator (``trace.eval_graph``) with a
``with_sharding_constraint`` on every planned intermediate, so XLA's partitioner
places tensors where the plan says instead of guessing.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from cost_model.mesh import used_axes
from shardsearch.graph import OpGraph
from shardsearch.plan import Plan, to_partition_spec
from shardsearch.trace import eval_graph


def _named(mesh: Mesh, spec) -> NamedSharding:
    return NamedSharding(mesh, to_partition_spec(spec))


def flat_in_shardings(plan: Plan, mesh: Mesh) -> list[NamedSharding]:
    return [_named(mesh, s) for s in plan.flat_in_specs]


def build_jitted(
    graph: OpGraph, plan: Plan, mesh: Mesh, *, donate_argnums: Sequence[int] = (), constrain: bool = True
) -> Callable:
    """A ``jax.jit`` of the program with the plan's in/out shardings and constraints."""
    in_sh = flat_in_shardings(plan, mesh)
    out_sh = [_named(mesh, s) for s in plan.flat_out_specs]
    node_specs = plan.node_out_specs if constrain else {}
    operand_specs = plan.node_operand_specs if constrain else {}

    def pin(node_id: int, outs: list[Any]) -> list[Any]:
        specs = node_specs.get(node_id)
        if specs is None:
            return outs
        pinned = []
        for x, spec in zip(outs, specs):
            # Replicated scalars need no pin; everything else is placed as planned.
            if getattr(x, "ndim", 0) > 0 and (used_axes(spec) or x.size > 1):
                x = jax.lax.with_sharding_constraint(x, _named(mesh, spec))
            pinned.append(x)
        return pinned

    def reshard_operands(node_id: int, operands: list[Any]) -> list[Any]:
        wanted = operand_specs.get(node_id)
        if not wanted:
            return operands
        return [
            jax.lax.with_sharding_constraint(x, _named(mesh, wanted[j])) if j in wanted else x
            for j, x in enumerate(operands)
        ]

    def run(*args):
        flat = jax.tree_util.tree_leaves(args)
        outs = eval_graph(graph, flat, pin, reshard_operands)
        return jax.tree_util.tree_unflatten(graph.out_tree, outs)

    return jax.jit(
        run,
        in_shardings=jax.tree_util.tree_unflatten(graph.in_tree, in_sh),
        out_shardings=jax.tree_util.tree_unflatten(graph.out_tree, out_sh),
        donate_argnums=tuple(donate_argnums),
    )


def place_args(args: tuple, graph: OpGraph, plan: Plan, mesh: Mesh) -> tuple:
    """Put host arrays (or arrays laid out differently) where the plan wants them."""
    shardings = jax.tree_util.tree_unflatten(graph.in_tree, flat_in_shardings(plan, mesh))

    def put(x, sh):
        if isinstance(x, jax.Array):
            if x.sharding == sh:
                return x
            if jax.process_count() == 1 or not x.is_fully_addressable:
                return jax.device_put(x, sh)  # reshard on device
        arr = np.asarray(x)  # host data: every process holds the full array
        return jax.make_array_from_callback(arr.shape, sh, lambda idx: arr[idx])

    return jax.tree_util.tree_map(put, args, shardings)
