"""Plan -> a jitted function whose shardings are the plan's.

The traced graph is re-run operator by operator (``trace.eval_graph``) with a
``with_sharding_constraint`` on every planned intermediate, so XLA's partitioner
places tensors where the plan says instead of guessing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from cost_model.mesh import used_axes
from cost_model.reshard import reshard_path
from shardsearch.apply.blockwise import blockwise_bind
from shardsearch.apply.mesh import to_partition_spec
from shardsearch.graph import OpGraph, ValueRef
from shardsearch.trace import eval_graph

if TYPE_CHECKING:  # the plan module imports this one (plan.apply)
    from shardsearch.plan import Plan


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
    run_flat = constrained_runner(graph, plan, mesh, constrain=constrain)

    def run(*args):
        outs = run_flat(jax.tree_util.tree_leaves(args))
        return jax.tree_util.tree_unflatten(graph.out_tree, outs)

    return jax.jit(
        run,
        in_shardings=jax.tree_util.tree_unflatten(graph.in_tree, in_sh),
        out_shardings=jax.tree_util.tree_unflatten(graph.out_tree, out_sh),
        donate_argnums=tuple(donate_argnums),
    )


def constrained_runner(graph: OpGraph, plan: Plan, mesh: Mesh, *, constrain: bool = True) -> Callable:
    """``flat inputs -> flat outputs`` of the graph, re-run with the plan's layouts pinned on
    every planned intermediate (to call inside ``jax.jit``)."""
    constrain = constrain and not replicated_throughout(plan)
    node_specs = plan.node_out_specs if constrain else {}
    operand_specs = plan.node_operand_specs if constrain else {}
    implied = implied_by_transpose(graph, node_specs, operand_specs)

    def pin(node_id: int, outs: list[Any]) -> list[Any]:
        specs = node_specs.get(node_id)
        if specs is None or node_id in implied:
            return outs
        pinned = []
        for x, spec in zip(outs, specs):
            # Replicated scalars need no pin; everything else is placed as planned.
            if getattr(x, "ndim", 0) > 0 and (used_axes(spec) or x.size > 1):
                x = jax.lax.with_sharding_constraint(x, _named(mesh, spec))
            pinned.append(x)
        return pinned

    arg_index = {n: i for i, n in enumerate(graph.input_nodes)}

    def planned(ref) -> Any:
        """The layout the plan gives a value, or None (a constant, a literal)."""
        if not isinstance(ref, ValueRef):
            return None
        if ref.node in arg_index:
            return plan.flat_in_specs[arg_index[ref.node]]
        specs = plan.node_out_specs.get(ref.node)
        return None if specs is None else specs[ref.index]

    def moved(x, src, dst) -> Any:
        """``x`` constrained to each layout on the way from ``src`` to ``dst``
        (cost_model.reshard_path: the steps the plan priced, which XLA's partitioner
        might not find asked for the whole move at once), then to ``dst``."""
        if src is not None and getattr(x, "ndim", 0) > 0:
            for mid in reshard_path(plan.mesh, x.shape, getattr(x.dtype, "itemsize", 1), src, dst):
                x = jax.lax.with_sharding_constraint(x, _named(mesh, mid))
        return jax.lax.with_sharding_constraint(x, _named(mesh, dst))

    def reshard_operands(node_id: int, operands: list[Any]) -> list[Any]:
        wanted = operand_specs.get(node_id)
        if not wanted:
            return operands
        inputs = graph.nodes[node_id].inputs
        return [moved(x, planned(inputs[j]), wanted[j]) if j in wanted else x for j, x in enumerate(operands)]

    def arriving(node_id: int, j: int):
        """The layout operand ``j`` of an operator arrives in (moved if the plan moves it)."""
        wanted = operand_specs.get(node_id, {})
        return wanted[j] if j in wanted else planned(graph.nodes[node_id].inputs[j])

    bind = blockwise_bind(mesh, arriving, node_specs) if constrain else None

    def run(flat):
        outs = eval_graph(graph, list(flat), pin, reshard_operands, bind)
        if constrain and len(plan.flat_out_specs) == len(outs):
            # results returned in another layout than they are made in: by the planned steps too
            outs = [x if planned(r) in (None, spec) else moved(x, planned(r), spec)
                    for x, r, spec in zip(outs, graph.outputs, plan.flat_out_specs)]
        return outs

    return run


def replicated_throughout(plan: Plan) -> bool:
    """Whether no layout the plan names splits anything. XLA's propagation from replicated
    arguments and results then leaves every intermediate replicated by itself, and pins would
    only move its fusion boundaries."""
    specs = [*plan.flat_in_specs, *plan.flat_out_specs, *(s for outs in plan.node_out_specs.values() for s in outs),
             *(s for wanted in plan.node_operand_specs.values() for s in wanted.values())]
    return not any(used_axes(s) for s in specs)


def implied_by_transpose(graph: OpGraph, node_specs: dict, operand_specs: dict) -> frozenset[int]:
    """Operators whose one result only a transpose reads, pinned to this layout permuted:
    their own pin says nothing more, and it would stand between them and the transpose,
    which XLA then cannot fold into a dot. A weight gradient's partial sums are all-reduced
    at the pin, before the transpose, so XLA's AllReduceReassociate cannot merge the
    all-reduce with another one of the same sum: compiled for two H100 nodes, GPT's tied
    embedding gradient (one-hot embedding and output projection) all-reduced 105 MB twice,
    0.34 ms more than jax.jit's data parallel program of the same layouts."""
    users = graph.users()
    outputs = {r.node for r in graph.outputs if isinstance(r, ValueRef)}
    out = set()
    for node_id, specs in node_specs.items():
        readers = users.get(node_id, ())
        if len(specs) != 1 or len(readers) != 1 or node_id in outputs:
            continue
        t, j = readers[0]
        reader = graph.nodes[t]
        if reader.primitive != "transpose" or j in operand_specs.get(t, {}) or t not in node_specs:
            continue
        perm = tuple(reader.params["permutation"])
        if tuple(node_specs[t][0]) == tuple(specs[0][p] for p in perm):
            out.add(node_id)
    return frozenset(out)


def _place(x, sharding: NamedSharding) -> jax.Array:
    """One argument as a global array laid out by ``sharding``.

    Works the same with one process or many (``jax.distributed``): a global array that
    spans processes is resharded on device; host data (numpy, Python scalars, arrays on
    this process's devices) is taken to be the same full array on every process, and
    each process places only the shards its own devices hold.
    """
    if isinstance(x, jax.Array):
        if x.sharding == sharding:  # not merely equivalent: a mesh with Explicit axes must not leak in
            return x
        if jax.process_count() == 1 or not x.is_fully_addressable:
            return jax.device_put(x, sharding)  # reshard on device, across processes if need be
        # a local array in a multi-process run: slice it on device (keeps PRNG key dtypes)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
    arr = np.asarray(x)
    return jax.make_array_from_callback(arr.shape, sharding, lambda idx: arr[idx])


def place_args(args: tuple, graph: OpGraph, plan: Plan, mesh: Mesh) -> tuple:
    """Put every argument where the plan wants it (see ``_place``); outputs of a
    previous step, already laid out as planned, pass through untouched."""
    shardings = jax.tree_util.tree_unflatten(graph.in_tree, flat_in_shardings(plan, mesh))
    return jax.tree_util.tree_map(_place, args, shardings)
