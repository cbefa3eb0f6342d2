"""Gathers and scatters that index a microbatch's own rows with a batch iota (part of the
microbatch pass, ``pipeline.propagate.Pass``).

``x[jnp.arange(B), labels]`` traces to an iota over the batch concatenated into the
indices of a gather whose operand is split on the indexed (batch) dim; its backward is a
scatter-add with the same indices. No strategy splits an indexed dim (a device would
need the global row numbers), but per microbatch the iota can count the microbatch's
own rows (0..B/M-1) when it only ever indexes: ``index_only`` checks that, the pass then
rebuilds the iota locally, and ``batched_index`` runs the gather / scatter per
microbatch when its indices come from such an iota (``from_local_iota``).
"""

from __future__ import annotations

from shardsearch.graph import LiteralValue, OpNode
from shardsearch.pipeline.states import Local, State, Whole

SCATTERS = frozenset({"scatter", "scatter-add", "scatter_add", "scatter-mul", "scatter-min", "scatter-max"})
# What an index computation does to an iota on its way into a gather / scatter.
INDEX_ARITH = frozenset({"lt", "le", "gt", "ge", "eq", "ne", "add", "sub", "mul", "rem", "max", "min", "clamp",
                         "select_n", "broadcast_in_dim", "reshape", "concatenate", "convert_element_type",
                         "squeeze", "transpose"})


class BatchIndex:
    """Mixed into the pass: reads ``self.graph``, ``self.ctx`` and ``self.hints``."""

    def batched_index(self, n: OpNode, ins: list[State]):
        """``x[jnp.arange(B), labels]``: a gather (or its scatter) indexing the batch dim of a
        split operand with indices built from a local batch iota runs per microbatch."""
        dn = n.params["dimension_numbers"]
        idx = ins[1]
        if not isinstance(idx, Local) or not self.from_local_iota(n.inputs[1]):
            return None
        idx_rank = len(self.graph.info(n.inputs[1]).shape)
        if idx.dim >= idx_rank - 1:
            return None
        if n.primitive == "gather":
            op = ins[0]
            if not isinstance(op, Local) or op.dim not in tuple(dn.start_index_map):
                return None
            batch_pos = [p for p in range(len(n.outputs[0].shape)) if p not in tuple(dn.offset_dims)]
            return [batch_pos[idx.dim]], {}, False
        if len(ins) != 3:
            return None
        mapped = tuple(dn.scatter_dims_to_operand_dims)
        op_shape = self.graph.info(n.inputs[0]).shape
        size = self.graph.info(n.inputs[1]).shape[idx.dim]
        d = ins[0].dim if isinstance(ins[0], Local) else next((m for m in mapped if op_shape[m] == size), None)
        if d is None or d not in mapped:
            return None
        upd_pos = [p for p in range(len(self.graph.info(n.inputs[2]).shape)) if p not in tuple(dn.update_window_dims)]
        slices = {}
        for j, dim in ((0, d), (2, upd_pos[idx.dim])):
            if isinstance(ins[j], Local):
                if ins[j].dim != dim:
                    return None
            elif isinstance(ins[j], Whole) and not isinstance(n.inputs[j], LiteralValue):
                slices[j] = dim
            else:
                return None
        return [d], slices, False

    def from_local_iota(self, ref) -> bool:
        seen, todo = set(), [ref]
        while todo:
            r = todo.pop()
            if isinstance(r, LiteralValue) or r.node in seen:
                continue
            seen.add(r.node)
            node = self.graph.nodes[r.node]
            if node.primitive == "iota" and self.hints.localized.get(node.id) == node.params["dimension"]:
                return True
            if node.primitive in INDEX_ARITH:
                todo.extend(node.inputs)
        return False

    def index_only(self, iota: OpNode) -> bool:
        """Every use of the iota ends as the indices of a gather or scatter."""
        seen, todo = set(), [iota.id]
        while todo:
            nid = todo.pop()
            if nid in seen:
                continue
            seen.add(nid)
            if nid in self.ctx.outputs:
                return False
            for user, pos in self.ctx.users[nid]:
                prim = self.graph.nodes[user].primitive
                if (prim == "gather" or prim in SCATTERS) and pos == 1:
                    continue
                if prim not in INDEX_ARITH:
                    return False
                todo.append(user)
        return True
