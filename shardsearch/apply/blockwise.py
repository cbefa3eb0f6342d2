"""Operators XLA's partitioner replicates, run on each device's block under ``shard_map``.

XLA's SPMD partitioner does not split the TopK custom call that ``lax.top_k`` lowers to
on any dim: given an operand split on its batch dims it all-gathers it and every device
sorts the whole tensor (seen on the CPU backend with Shardy; a Mixtral-style router's
probabilities cost two 50 us all-gathers a step on 2x4-slow that no plan priced). The
planner's rule (strategies/misc.py) keeps the sorted dim whole, so each device's block
holds whole rows and the op is exactly blockwise: the apply stage runs it inside a
``shard_map`` with the plan's layouts, and XLA emits what the plan priced.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from jax.sharding import Mesh

from cost_model.mesh import used_axes
from shardsearch.apply.mesh import to_partition_spec
from shardsearch.trace.interpret import bind_equation

# Primitives whose rule never splits the dims they work along, and that XLA does not split.
UNPARTITIONED = frozenset({"top_k"})


def blockwise_bind(mesh: Mesh, operand_spec: Callable[[int, int], Any], out_specs: dict) -> Callable:
    """A ``trace.eval_graph`` bind: an UNPARTITIONED operator whose planned layout splits
    something runs under ``shard_map`` (``operand_spec(node, j)``: the layout its operand j
    arrives in, None for a literal); every other operator binds as usual."""

    def bind(nid: int, eqn, operands: list[Any]) -> Any:
        outs = out_specs.get(nid)
        if eqn.primitive.name not in UNPARTITIONED or outs is None or not any(used_axes(s) for s in outs):
            return bind_equation(nid, eqn, operands)
        ins = [operand_spec(nid, j) for j in range(len(operands))]
        if any(s is None for s in ins):
            return bind_equation(nid, eqn, operands)
        many = eqn.primitive.multiple_results

        def block(*xs):
            res = bind_equation(nid, eqn, list(xs))
            return tuple(res) if many else res

        out = tuple(to_partition_spec(s) for s in outs)
        run = jax.shard_map(block, mesh=mesh, in_specs=tuple(to_partition_spec(s) for s in ins),
                            out_specs=out if many else out[0], check_vma=False)
        return run(*operands)

    return bind
