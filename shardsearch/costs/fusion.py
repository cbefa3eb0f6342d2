"""Which values XLA's fusions write to memory, and what the fused kernels read.

The cost builder prices a node's memory traffic from these: ops fused into their
neighbours move no bytes of their own (see FUSIBLE).
"""

from __future__ import annotations

import numpy as np

from cost_model import MeshShape
from cost_model.mesh import local_bytes
from shardsearch.graph import OpGraph, ValueRef
from shardsearch.strategies import Strategy
from shardsearch.strategies.elementwise import ELEMENTWISE

MATMULS = frozenset({"dot_general", "conv_general_dilated"})


# Ops XLA fuses into their neighbours: they move no HBM bytes of their own, except
# where a fusion starts (operands made by a non-fusible op) or ends (a result a
# non-fusible op or the caller reads). Without this, an optimizer update of twenty
# elementwise ops would be priced as twenty passes over memory instead of one.
FUSIBLE = ELEMENTWISE | {"broadcast_in_dim", "reshape", "squeeze", "expand_dims", "iota", "transpose"}


# Readers that take a fusible op's result inside their own kernel instead of from
# memory: a reduction fuses the elementwise ops before it (XLA's input fusion), a matmul
# a convert or layout change of a value in memory (a gemm fusion's prologue). Such a
# producer, read only by fusible ops and these, writes nothing; the reader reads what
# the fused ops read (the region's inputs in memory) instead of the producer's result.
REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin"})
GEMM_PROLOGUE = frozenset({"convert_element_type", "broadcast_in_dim", "reshape", "squeeze", "expand_dims",
                           "transpose"})


def absorbs(graph: OpGraph, reader, producer) -> bool:
    if reader.primitive in REDUCTIONS:
        return True
    return reader.primitive in MATMULS and producer.primitive in GEMM_PROLOGUE and all(
        graph.nodes[r.node].primitive not in FUSIBLE for r in producer.inputs if isinstance(r, ValueRef))


def folded_reverses(graph: OpGraph, users) -> frozenset[int]:
    """``rev`` nodes read only as a convolution's kernel: the gradient of a convolution by
    its input convolves with the flipped kernel, and XLA's GPU convolution rewriter folds
    the flip into the cuDNN backward-input call, which reads the kernel as it is (no kernel
    of its own: wresnet-tiny's 16 reverses, 3.1 us on 2x4-slow, are not in its GPU program)."""
    return frozenset(
        n.id for n in graph.nodes if n.primitive == "rev" and users[n.id]
        and all(graph.nodes[u].primitive == "conv_general_dilated" and j == 1 for u, j in users[n.id]))


# Fusible ops XLA recomputes in every kernel that reads them rather than write them once.
DUPLICATED = frozenset({"broadcast_in_dim", "iota", "reshape", "squeeze", "expand_dims", "transpose",
                        "convert_element_type"})


def ends_fusion(graph: OpGraph, users, graph_outputs: set[int]) -> list[bool]:
    """Per node: whether its result is written to memory (some reader takes it from there).

    A value several ops read is written once and read back when reading it costs less than
    reading again what it is computed from: XLA recomputes a cheap producer in each kernel
    that reads it, but not a chain. Without this rule a residual stream (each layer's add
    read by the next add and by a layer norm) fused backwards through every layer into each
    reduction: gpt-medium-bf16's layer-norm reductions were priced 40-45 us each, reading
    24 layers' outputs."""
    ends_at: list[bool] = []
    memo: dict = {}
    for node in graph.nodes:  # in program order: a node's producers are decided before it
        readers = [graph.nodes[u] for u, _ in users[node.id]]
        ends = node.id in graph_outputs or any(r.primitive not in FUSIBLE and not absorbs(graph, r, node)
                                                for r in readers)
        if not ends and node.primitive in FUSIBLE and node.primitive not in DUPLICATED and node.outputs \
                and len({r.id for r in readers}) > 1:
            region = whole_bytes(graph, region_inputs(graph, ValueRef(node.id, 0), ends_at, memo))
            own = node.outputs[0].dtype.itemsize * float(np.prod(node.outputs[0].shape))
            ends = region > own
        ends_at.append(ends)
    return ends_at


def region_inputs(graph: OpGraph, ref: ValueRef, ends_at: list[bool], memo: dict) -> frozenset:
    """The values in memory that the fused ops computing ``ref`` read (each once)."""
    if ref.node not in memo:
        memo[ref.node] = frozenset()  # a jaxpr has no cycles; this only guards the recursion
        memo[ref.node] = frozenset().union(*(
            region_inputs(graph, r, ends_at, memo) if graph.nodes[r.node].primitive in FUSIBLE
            and not ends_at[r.node] else {r}
            for r in graph.nodes[ref.node].inputs if isinstance(r, ValueRef)))
    return memo[ref.node]


def whole_bytes(graph: OpGraph, refs) -> float:
    return sum(graph.info(r).dtype.itemsize * float(np.prod(graph.info(r).shape)) for r in refs)


def absorbed_bytes(graph: OpGraph, node, strategy: Strategy, mesh: MeshShape, absorbed: tuple,
                    ) -> float:
    """Bytes a reader saves (or, negative, adds) by reading the fused region's inputs in
    place of each ``absorbed`` operand (j, the region's input bytes): both as split as the
    operand is in this strategy."""
    out = 0.0
    for j, region in absorbed:
        info = graph.info(node.inputs[j])
        whole = info.dtype.itemsize * float(np.prod(info.shape))
        mine = local_bytes(info.shape, info.dtype.itemsize, strategy.in_specs[j], mesh)
        out += mine - (region * mine / whole if whole else 0.0)
    return out


def fused_bytes(graph: OpGraph, node, strategy: Strategy, mesh: MeshShape, ends_fusion: bool) -> float:
    total = 0.0
    for ref, spec in zip(node.inputs, strategy.in_specs):
        if isinstance(ref, ValueRef) and graph.nodes[ref.node].primitive not in FUSIBLE:
            info = graph.info(ref)
            total += local_bytes(info.shape, info.dtype.itemsize, spec, mesh)
    if ends_fusion:
        for info, spec in zip(node.outputs, strategy.out_specs):
            total += local_bytes(info.shape, info.dtype.itemsize, spec, mesh)
    return total
