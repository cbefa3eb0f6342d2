"""gather and scatter: embedding lookups, their gradients, take_along_axis and the like.

Logical dims of a gather (index vector dim = last indices dim, as jax emits it):
  index batch   an indices dim and the output dim it becomes (data parallel);
  batching      an operand batching dim, its indices batching dim and output dim;
  passthrough   an operand dim taken whole by every slice and not indexed (the embed
                dim of an embedding) and its output offset dim;
  masked        the one indexed operand dim, when slices are 1 wide on it (the vocab):
                each device looks up the rows it holds, zeros the others, and the
                partial outputs are all-reduced (vocab-parallel embedding). Partial.
Any other operand dim (several indexed dims, windowed slices) stays whole.

A scatter has the same dims with updates in the output's place, plus one change: an
index batch dim (updates scattered from it) is partial, since every device adds its
share of updates into the whole operand; the operand is added on one device of each
reduction group only (a select on the device index; zeros elsewhere), then the
results are all-reduced or reduce-scattered (embedding gradient). The masked dim is
not partial for a scatter: each device applies only the updates to rows it holds.
Partial splits are offered for scatter-add and scatter-sub only (linear in the updates);
other scatters (set, mul, min, max) get the splits that need no reduction.
"""

from __future__ import annotations

from cost_model.mesh import MeshShape

from shardsearch.strategies.base import OpView, Strategy, register
from shardsearch.strategies.logical import LDim, logical_strategies
from shardsearch.strategies.specs import io_bytes, local_elements, spec_bytes


def _dims(operand, indices, target, window_pos, removed, index_map, sizes, op_batch, idx_batch,
          slot, partial_index_batch, partial_masked):
    """Logical dims shared by gather (target = output) and scatter (target = updates).

    ``slot`` places a (operand, indices, target) triple of positions in the op's
    operand + output order; ``removed`` are the collapsed / inserted operand dims.
    """
    if not indices or indices[-1] != len(index_map) or len(target) != len(indices) - 1 + len(window_pos):
        return None
    window_dims = [d for d in range(len(operand)) if d not in removed and d not in op_batch]
    if len(window_dims) != len(window_pos):
        return None
    dims = []
    # The indices dims but the index vector become, in order, the non-window target dims.
    for j, pos in enumerate(p for p in range(len(target)) if p not in window_pos):
        if target[pos] != indices[j]:
            return None
        if j not in idx_batch:
            dims.append(LDim(indices[j], slot(None, j, pos), partial_index_batch))
        elif operand[op_batch[idx_batch.index(j)]] == indices[j]:
            dims.append(LDim(indices[j], slot(op_batch[idx_batch.index(j)], j, pos)))
    for d, pos in zip(window_dims, window_pos):
        if d not in index_map and sizes[d] == operand[d] == target[pos]:
            dims.append(LDim(operand[d], slot(d, None, pos)))
    if len(index_map) == 1 and index_map[0] not in op_batch and sizes[index_map[0]] == 1:
        dims.append(LDim(operand[index_map[0]], slot(index_map[0], None, None), partial_masked))
    return dims


@register("gather")
def gather_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    dn = op.params["dimension_numbers"]
    operand, indices, out = op.in_shapes[0], op.in_shapes[1], op.out_shapes[0]
    collapsed = tuple(dn.collapsed_slice_dims)
    sizes = tuple(op.params["slice_sizes"])
    dims = _dims(operand, indices, out, tuple(dn.offset_dims), collapsed, tuple(dn.start_index_map), sizes,
                 tuple(dn.operand_batching_dims), tuple(dn.start_indices_batching_dims),
                 slot=lambda o, i, t: (o, i, t), partial_index_batch=False, partial_masked=True)
    if dims is None:
        dims = []
    itemsize = op.out_dtypes[0].itemsize

    def nbytes(ins, outs):
        # A gather reads the rows it looks up, not the whole table.
        return (spec_bytes(tuple(indices), op.in_dtypes[1].itemsize, ins[1], mesh)
                + 2 * spec_bytes(tuple(out), itemsize, outs[0], mesh))

    return logical_strategies(op, mesh, dims, flops=lambda ins, outs, used: local_elements(out, outs[0], mesh),
                              nbytes=nbytes)


def _scatter(op: OpView, mesh: MeshShape, additive: bool) -> list[Strategy]:
    dn = op.params["dimension_numbers"]
    operand, indices, updates = op.in_shapes[0], op.in_shapes[1], op.in_shapes[2]
    inserted = tuple(dn.inserted_window_dims)
    window_pos = tuple(dn.update_window_dims)
    index_map = tuple(dn.scatter_dims_to_operand_dims)
    # The window size along each operand dim: 1 where inserted, else the updates dim.
    window_dims = [d for d in range(len(operand)) if d not in inserted and d not in dn.operand_batching_dims]
    sizes = [1] * len(operand)
    for d, p in zip(window_dims, window_pos):
        sizes[d] = updates[p]
    extra = len(op.in_shapes) - 3  # variadic scatters are not split
    dims = None
    if extra == 0 and tuple(op.out_shapes[0]) == tuple(operand):
        # Operands: operand, indices, updates; output: like the operand.
        dims = _dims(operand, indices, updates, window_pos, inserted, index_map, sizes,
                     tuple(dn.operand_batching_dims), tuple(dn.scatter_indices_batching_dims),
                     slot=lambda o, i, u: (o, i, u, o), partial_index_batch=True, partial_masked=False)
    if dims is None:
        dims = []
    if not additive:
        dims = [d for d in dims if not d.partial]
    return logical_strategies(op, mesh, dims,
                              flops=lambda ins, outs, used: local_elements(updates, ins[2], mesh),
                              nbytes=lambda ins, outs: io_bytes(op, ins, outs, mesh))


@register("scatter-add", "scatter_add", "scatter-sub")
def scatter_add_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    return _scatter(op, mesh, additive=True)


@register("scatter", "scatter-mul", "scatter-min", "scatter-max")
def scatter_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    return _scatter(op, mesh, additive=False)
