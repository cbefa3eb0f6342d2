"""Random-number primitives: independent per key, so the key-array dims may split.

``random_bits`` / ``random_split`` map keys [*K] to [*K, *shape] and ``random_wrap`` /
``random_unwrap`` convert [*K, *key_data] <-> [*K]: the leading key dims follow one
layout and the trailing dims stay whole (the bits drawn from one key depend on the
whole generated shape), unless jax draws them partitionably (the default
``jax_threefry_partitionable``: an element's bits depend on the key and the element's
index only, so ``random_bits`` may split the generated dims too; the trace records this
as a param). ``random_fold_in`` / ``random_seed`` / ``random_clone`` are elementwise on
keys, ``random_gamma`` draws one value per (key, shape) pair, and ``threefry2x32`` (and
the other counter-based hashes: threefry4x32, philox) hash their operands elementwise.
"""

from __future__ import annotations

from cost_model.mesh import MeshShape

from shardsearch.strategies.base import OpView, Strategy, register
from shardsearch.strategies.elementwise import elementwise_rule
from shardsearch.strategies.misc import same_layout
from shardsearch.strategies.specs import enumerate_specs, io_bytes, local_elements, spec_name


@register("random_bits", "random_split", "random_wrap", "random_unwrap")
def leading_key_dims_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    keys = op.out_shapes[0] if op.primitive == "random_wrap" else op.in_shapes[0]
    rank = len(keys)
    tensors = op.in_shapes + op.out_shapes
    if any(len(s) < rank or tuple(s[:rank]) != tuple(keys) for s in tensors):
        return []
    # The trace's fact (shardsearch.trace.PARTITIONABLE_BITS; named here, not imported:
    # strategies see plain data only).
    every_dim = op.primitive == "random_bits" and op.params.get("shardsearch_partitionable_bits", False)
    result = []
    for out in enumerate_specs(op.out_shapes[0] if every_dim else keys, mesh):
        spec = out[:rank]
        ins = tuple(spec + ((),) * (len(s) - rank) for s in op.in_shapes)
        outs = tuple(out + ((),) * (len(s) - len(out)) for s in op.out_shapes)
        work = local_elements(op.out_shapes[0], outs[0], mesh)
        result.append(Strategy(f"{op.primitive} {spec_name(spec)}", ins, outs, (), work, io_bytes(op, ins, outs, mesh)))
    return result


@register("random_fold_in", "random_seed", "random_clone", "random_gamma")
def key_elementwise_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    return same_layout(op, mesh, set(), op.primitive)


register("threefry2x32", "threefry4x32", "philox2x32", "philox4x32")(elementwise_rule)

