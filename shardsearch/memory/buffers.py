"""Which values of a traced step XLA gives a buffer, and from when to when.

A jaxpr is far finer than the program XLA runs: XLA fuses chains of elementwise ops into
one kernel that writes only its last result, turns reshapes into bitcasts of their
operand, and recomputes a broadcast or a one-hot in every kernel that reads it rather
than keep it. Counting every jaxpr value as a buffer over-counted a GPT step's peak by
up to 1.8x (a one-hot of batch x vocab that is never written). The rules here are XLA's
CPU instruction fusion (xla/service/cpu/cpu_instruction_fusion.cc), in the small:

* a *bitcast* (reshape, squeeze, expand_dims, a convert to the same dtype) has no buffer
  of its own: its readers read its operand's;
* a *fusible* value (elementwise, broadcast, iota, transpose, slice, ...) that one kernel
  reads, where that kernel can fuse it (a fusible op, or a reduction over the minor
  dim), is computed inside it and has no buffer;
* a fusible value several kernels read is kept in a buffer of its own (XLA's cost model
  finds one pass that writes it cheaper than recomputing it in each reader), unless it
  is a broadcast, an iota or *expanding* (at least 4x the bytes its fused chain reads: a
  one-hot from labels, a mask), which every reader recomputes; a value some readers
  cannot fuse (a matmul's operand) is kept for those only, when recomputing it reads no
  more than keeping it would (``_duplicable``);
* everything else (matmuls, reductions, gathers, collectives, loop results) and every
  result of the step has a buffer.

A fused value passes its readers on to its operands: the operand's buffer lives until
the last kernel that reads the fused value.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math

from shardsearch.graph import NodeKind, OpGraph, ValueRef
from shardsearch.strategies.elementwise import ELEMENTWISE

# Layout-only ops that XLA turns into a bitcast of their operand (row-major layouts).
BITCASTS = frozenset({"reshape", "squeeze", "expand_dims"})
# Same-dtype converts, stop_gradient and copies vanish too (see _bitcast_nodes).
_MAYBE_BITCAST = frozenset({"convert_element_type", "reduce_precision", "stop_gradient", "copy", "copy_p",
                            "optimization_barrier"})
# Ops XLA recomputes in every kernel that reads them rather than keep.
ALWAYS_DUPLICATED = frozenset({"broadcast_in_dim", "iota"})
# Ops XLA fuses into the kernels that read them (loop fusion).
FUSIBLE = ELEMENTWISE | frozenset({
    "broadcast_in_dim", "iota", "transpose", "select_n", "slice", "pad", "concatenate", "rev",
    "dynamic_slice", "clamp"})
# Ops XLA counts as cheap (InstructionFusion::IsExpensive is false): duplicated into every
# kernel that can fuse them rather than written once; tanh, exp, log, div ... are not.
CHEAP = frozenset({
    "add", "add_any", "sub", "mul", "neg", "max", "min", "abs", "sign", "floor", "ceil", "round", "select_n",
    "clamp", "convert_element_type", "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not", "xor", "is_finite",
    "integer_pow", "square", "broadcast_in_dim", "iota", "transpose", "slice", "pad", "concatenate", "rev",
    "dynamic_slice", "reduce_precision", "copy", "copy_p", "stop_gradient"})
# Reductions read fused producers inside their own kernel when they reduce the minor dim.
REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
                        "argmax", "argmin"})


@dataclasses.dataclass(frozen=True)
class Lifetime:
    """A temporary buffer: made by node ``ref.node``, last read by node ``last``."""

    ref: ValueRef
    last: int


@dataclasses.dataclass(frozen=True)
class Buffers:
    """The buffers of a step.

    ``lives``: the temporaries (values with a buffer of their own that are no result of
    the step and are read), in (node, index) order, each live until the last kernel that
    reads it directly or through fused and bitcast readers; ``holder``: for every value
    (node, index), the value whose buffer holds it (itself, an operand for a bitcast, None
    for a value computed inside its readers' kernels); ``last_read``: for every value, the
    last kernel that reads it, directly or not (-1 if none)."""

    lives: tuple[Lifetime, ...]
    holder: dict
    last_read: dict


def _bitcast_nodes(graph: OpGraph) -> set[int]:
    out = set()
    for n in graph.nodes:
        if n.kind is not NodeKind.OP:
            continue
        if n.primitive in BITCASTS:
            out.add(n.id)
        elif n.primitive in _MAYBE_BITCAST and len(n.outputs) == 1 and n.inputs and isinstance(n.inputs[0], ValueRef):
            if graph.info(n.inputs[0]).dtype == n.outputs[0].dtype:
                out.add(n.id)
    return out


def _absorbs(graph: OpGraph, reader: int, ref: ValueRef) -> bool:
    """Whether XLA fuses the value ``ref`` into the kernel of ``reader``: a fusible op
    does; a reduction does only over the minor dim (XLA's CPU fusion keeps a reduction
    over leading dims, a bias gradient's, apart from its producer)."""
    node = graph.nodes[reader]
    if node.primitive in FUSIBLE:
        return True
    if node.primitive in REDUCTIONS:
        rank = len(graph.info(ref).shape)
        return rank == 0 or rank - 1 in tuple(node.params.get("axes", ()))
    return False


def _duplicable(graph: OpGraph, node) -> bool:
    """XLA duplicates a fusible op into each kernel that can fuse it, and keeps it only
    for those that cannot, when that reads no more than keeping it would: it has at most
    one operand of its own rank that is no broadcast or iota, or its operands are no
    larger than its result (``InstructionFusion::ComputeGloballyUnfusible``)."""
    out = node.outputs[0]
    operands = {(r.node, r.index) for r in node.inputs if isinstance(r, ValueRef)}
    big = [v for v in operands if graph.nodes[v[0]].primitive not in ("broadcast_in_dim", "iota")
           and len(graph.info(ValueRef(*v)).shape) >= len(out.shape) and math.prod(graph.info(ValueRef(*v)).shape) > 1]
    if len(big) <= 1:
        return True
    return sum(math.prod(graph.info(ValueRef(*v)).shape) for v in operands) <= math.prod(out.shape)


def _expanding(graph: OpGraph) -> set[int]:
    """Fusible ops whose result is at least four times what their fused chain reads from
    memory (a one-hot from labels, a mask from an iota): XLA recomputes them in every
    kernel that reads them, like a broadcast."""
    reads: dict[int, float] = {}  # elements a fusible node's chain reads
    out = set()
    for n in graph.nodes:
        if n.kind is not NodeKind.OP or n.primitive not in FUSIBLE or len(n.outputs) != 1:
            continue
        total = 0.0
        for v in {(r.node, r.index) for r in n.inputs if isinstance(r, ValueRef)}:
            total += reads.get(v[0], math.prod(graph.info(ValueRef(*v)).shape))
        size = math.prod(n.outputs[0].shape)
        reads[n.id] = min(total, size)
        if 4 * total <= size:
            out.add(n.id)
    return out


def _union(sets) -> frozenset:
    """The union of kernel-position sets, kept to its largest and smallest member: all
    that is asked of it is the last kernel and whether there is more than one (a deep
    model's weights are read by thousands)."""
    out: set = set()
    for s in sets:
        out |= s
    return frozenset((min(out), max(out))) if len(out) > 2 else frozenset(out)


# Whether the compiler duplicates CHEAP ops into every kernel that reads them, as XLA's GPU
# fusion does. XLA's CPU compiler keeps them in a buffer (wresnet-tiny on cpu-host: -18.7%
# with the GPU rule, +3.5% without). The search sets it from the cluster it plans for
# (``duplicating_cheap_ops``): a cluster without a GPU target compiles for the devices at hand.
DUPLICATE_CHEAP: contextvars.ContextVar[bool] = contextvars.ContextVar("duplicate_cheap", default=True)


def buffers(graph: OpGraph) -> Buffers:
    """Which values get a buffer, and until when (module notes). Computed once per graph
    and compiler rule (shared: do not mutate)."""
    cheap = DUPLICATE_CHEAP.get()
    return graph.analysis("buffers" if cheap else "buffers_cpu", lambda: _buffers(graph, cheap))


class duplicating_cheap_ops:  # noqa: N801 (a context manager, named for what it scopes)
    """``with duplicating_cheap_ops(cluster.gpu_target is not None):`` the memory model follows
    that compiler's fusion of cheap ops inside the block."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        self.token = DUPLICATE_CHEAP.set(self.on)

    def __exit__(self, *exc):
        DUPLICATE_CHEAP.reset(self.token)


def _buffers(graph: OpGraph, duplicate_cheap: bool = True) -> Buffers:
    """Decide, from the last node to the first, which values get a buffer."""
    results = {(r.node, r.index) for r in graph.outputs if isinstance(r, ValueRef)}
    readers: dict[tuple[int, int], set[int]] = {}  # value -> nodes reading it, as written
    for n in graph.nodes:
        for ref in n.inputs:
            if isinstance(ref, ValueRef):
                readers.setdefault((ref.node, ref.index), set()).add(n.id)
    bitcast = _bitcast_nodes(graph)
    expanding = _expanding(graph)
    # kernels that read each value's buffer (through fused and bitcast readers), and
    # kernels at which each node's operands are read
    kernels: dict[tuple[int, int], set[int]] = {}
    operand_reads: dict[int, set[int]] = {}
    fused: set[tuple[int, int]] = set()
    for node in reversed(graph.nodes):
        own = frozenset((node.id,))
        for k in range(len(node.outputs)):
            v = (node.id, k)
            direct = readers.get(v, set())
            kernels[v] = _union(operand_reads[r] for r in direct)
            if node.kind is not NodeKind.OP or v in results or node.id in bitcast:
                continue
            if node.primitive not in FUSIBLE or len(node.outputs) != 1 or not direct:
                continue
            ref = ValueRef(*v)
            absorbing = {r for r in direct if _absorbs(graph, r, ref)}
            inside = _union(operand_reads[r] for r in absorbing)
            once = len(inside) <= 1 or node.primitive in ALWAYS_DUPLICATED or node.id in expanding \
                or (duplicate_cheap and node.primitive in CHEAP and _duplicable(graph, node))
            if absorbing == direct and once:
                fused.add(v)  # computed inside every kernel that reads it
                own = inside
            elif absorbing and once and _duplicable(graph, node):
                # recomputed inside the kernels that can fuse it, kept for the others
                kernels[v] = _union(operand_reads[r] for r in direct - absorbing)
                own = _union((own, inside))
        if node.id in bitcast:
            own = _union(kernels[(node.id, k)] for k in range(len(node.outputs)))
        operand_reads[node.id] = own
    holder: dict[tuple[int, int], ValueRef | None] = {}
    last_read = {v: max(ks) if ks else -1 for v, ks in kernels.items()}
    lives = []
    for node in graph.nodes:
        for k in range(len(node.outputs)):
            v = (node.id, k)
            if v in fused:
                holder[v] = None
            elif node.id in bitcast and v not in results and isinstance(node.inputs[0], ValueRef):
                src = node.inputs[0]
                holder[v] = holder.get((src.node, src.index), src)
            else:
                ref = holder[v] = ValueRef(node.id, k)
                if node.kind is NodeKind.OP and v not in results and last_read[v] >= 0:
                    lives.append(Lifetime(ref, last_read[v]))
    lives = tuple(lives)
    return Buffers(lives, holder, last_read)
