"""Split-K partial products of XLA's GPU gemms: the f32 temporaries a small-output dot makes.

XLA's GPU compiler, compiling for a GPU it cannot autotune on (a deviceless compile,
``shardsearch.target``), emits every dot as a Triton gemm of one default tiling (16 x 8
output tiles) and, where that gives too few tiles for the device, splits the
contraction: the dot writes ``split`` partial products ``f32[split, ...out]`` and a
reduce sums them. Measured on H100 and A100 targets (jax 0.10.2, f32 and bf16 operands
alike), the split is the largest power of two ``p`` with ``p * p <= scale * K /
max(tiles, 128)`` and ``K / p >= 16``, where ``tiles`` = batch x ceil(M / 16) x
ceil(N / 8), and none where ``tiles * K < 4096`` (too little work: a [32 x 64] @
[64 x 64] is not split, a [64 x 64] @ [64 x 128] is); H100 (compute capability 9):
scale 64, and no split where ``scale * K / max(tiles, 128)`` is under 16 or the split
under 4; A100 (8): scale 16, none under 8 or 2. (A fit to the compiled programs, not
XLA's code: the split comes from its cost model's choice of a default config.) A
[128 x 512] @ [512 x 128] on H100 writes f32[16, 128, 128]: 1 MiB for a 64 KiB result.

Where a dot of the forward pass is read only by kernels that can take the sum (loop
kernels: elementwise, transposes, slices; and reductions), XLA fuses the sum into each
of them, so the partials are the dot's only buffer and live as long as its result would:
an activation kept for the backward pass is kept as its partials (gpt-tiny's fc1 output:
f32[4, 128, 512] instead of f32[128, 512]). Otherwise (another dot or a collective
reads it or the value its readers' kernel makes; a chain of cheap ops from it feeds
a dot, as mlp-tp's bias and relu, which XLA fuses into the next gemm; a combined
all-reduce's concatenation reads it; or it is a dot of the backward pass, whose
partials the compiled programs sum at once: a weight gradient's first reader is its
update), a kernel sums them right after the dot and the result gets its usual buffer;
the model does not count those short-lived partials (``breakdown.step_buffers``): they
are real (mlp-dp's weight gradients, f32[4, 512, 512], are its compiled peak) but the
model's order of the backward pass does not place them where XLA runs them, and counted
at their dot they moved two rows over 10% (tests/models equinox +6/+8% -> +16/+18%,
moe-small on 2x4-slow +9.8% -> +10.0%) and none in.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
from typing import Callable, Optional

from shardsearch.graph import NodeKind, OpGraph, ValueRef
from shardsearch.memory.buffers import CHEAP, FUSIBLE, REDUCTIONS, Buffers


@dataclasses.dataclass(frozen=True)
class SplitK:
    """How a GPU target's compiler splits a gemm's contraction (module notes)."""

    scale: float  # split^2 <= limit = scale * K / max(tiles, MIN_TILES)
    min_limit: float  # no split where the limit is below this
    min_split: int  # nor where the split would be smaller

    @classmethod
    def for_target(cls, gpu_target) -> Optional["SplitK"]:
        """The rule for a ``cost_model.GpuTarget`` (None: no GPU target, no split)."""
        if gpu_target is None:
            return None
        major = gpu_target.compute_capability[0]
        return cls(64.0, 16.0, 4) if major >= 9 else cls(16.0, 8.0, 2)

    def split(self, batch: int, m: int, n: int, k: int) -> int:
        """The split of a dot of ``batch`` x [m x k] @ [k x n] (1: not split)."""
        tiles = batch * math.ceil(m / TILE_M) * math.ceil(n / TILE_N)
        limit = self.scale * k / max(tiles, MIN_TILES)
        if tiles * k < MIN_WORK:
            return 1
        p = 1
        while (2 * p) ** 2 <= limit and k // (2 * p) >= MIN_K_PER_SPLIT:
            p *= 2
        return p if limit >= self.min_limit and p >= self.min_split else 1


TILE_M, TILE_N = 16, 8  # the default Triton output tile of a deviceless compile
MIN_TILES = 128  # below this many output tiles the split no longer grows
MIN_K_PER_SPLIT = 16  # Triton's smallest contracting tile
MIN_WORK = 4096  # tiles x K under which no dot is split

# The split-K rule of the GPU the step is compiled for (None: the CPU, which does not
# split). The search sets it from the cluster it plans for (``splitting_gemms``).
SPLIT_K: contextvars.ContextVar[Optional[SplitK]] = contextvars.ContextVar("split_k", default=None)


class splitting_gemms:  # noqa: N801 (a context manager, named for what it scopes)
    """``with splitting_gemms(SplitK.for_target(cluster.gpu_target)):`` the memory model
    counts the split-K partial products of that target's gemms inside the block."""

    def __init__(self, rule: Optional[SplitK]):
        self.rule = rule

    def __enter__(self):
        self.token = SPLIT_K.set(self.rule)

    def __exit__(self, *exc):
        SPLIT_K.reset(self.token)


def dot_split(graph: OpGraph, node: int, local: Callable[[ValueRef, int], tuple[int, ...]],
              rule: SplitK) -> int:
    """The split of dot ``node`` run on local shapes: ``local(ref, j)`` is the per-device
    shape of operand ``j`` (``ref``) as the dot reads it."""
    n = graph.nodes[node]
    (lc, rc), (lb, rb) = n.params["dimension_numbers"]
    lhs, rhs = n.inputs[0], n.inputs[1]
    if not isinstance(lhs, ValueRef) or not isinstance(rhs, ValueRef):
        return 1
    ls, rs = local(lhs, 0), local(rhs, 1)
    batch = math.prod(ls[d] for d in lb)
    k = math.prod(ls[d] for d in lc)
    m = math.prod(s for d, s in enumerate(ls) if d not in lc and d not in lb)
    nn = math.prod(s for d, s in enumerate(rs) if d not in rc and d not in rb)
    if min(batch, m, nn, k) <= 0:
        return 1
    return rule.split(batch, m, nn, k)


def _costly_source(graph: OpGraph, ref: ValueRef, stop: tuple, depth: int = 8) -> bool:
    """Whether a loop kernel computing ``ref`` (cheap ops fused back to the kernels that
    wrote their operands, not through ``stop``) has an expensive op or a reduction in it
    (a tanh-gelu, a layer norm's ``x - mean``): such a kernel is written out, not fused
    into the gemm that reads it as a prologue."""
    node = graph.nodes[ref.node]
    if (ref.node, ref.index) == stop or node.kind is not NodeKind.OP:
        return False
    if node.primitive in REDUCTIONS or (node.primitive in FUSIBLE and node.primitive not in CHEAP):
        return True
    if node.primitive not in CHEAP or depth == 0:
        return False  # another kernel's result, read from memory
    return any(_costly_source(graph, o, stop, depth - 1) for o in node.inputs if isinstance(o, ValueRef))


def readers_of(graph: OpGraph) -> dict[tuple[int, int], list[int]]:
    """Value -> the nodes that read it, as written."""
    out: dict[tuple[int, int], list[int]] = {}
    for n in graph.nodes:
        for r in n.inputs:
            if isinstance(r, ValueRef):
                out.setdefault((r.node, r.index), []).append(n.id)
    return out


def sum_fused_into_readers(graph: OpGraph, bufs: Buffers, readers: dict, ref: ValueRef,
                           moved: frozenset = frozenset()) -> bool:
    """Whether every kernel reading ``ref``'s buffer (through bitcasts, and through the
    fused readers into the kernels that compute them) is a loop kernel or a reduction,
    which can take the partials' sum (module notes); not where a collective reads it or
    a value those kernels make (``moved``: values some reader takes in another layout),
    nor where a chain of cheap ops from it feeds a dot (XLA fuses that chain into the
    gemm, which cannot take the sum)."""
    if ref in moved:
        return False
    todo, seen, any_reader = [((ref.node, ref.index), False)], set(), False
    while todo:
        v, costly = todo.pop()
        for r in readers.get(v, ()):
            if r in seen:
                continue
            seen.add(r)
            n = graph.nodes[r]
            if n.kind is not NodeKind.OP:
                return False
            holder = bufs.holder.get((r, 0), ValueRef(r, 0))
            if holder == ref:  # a bitcast of it: its readers read the buffer
                todo.append(((r, 0), costly))
                continue
            if (n.primitive not in FUSIBLE and n.primitive not in REDUCTIONS) or n.primitive == "concatenate" \
                    or ValueRef(r, 0) in moved:
                return False
            costly_here = costly or n.primitive not in CHEAP or any(
                _costly_source(graph, o, v) for o in n.inputs if isinstance(o, ValueRef) and (o.node, o.index) != v)
            if not costly_here and any(graph.nodes[u].primitive == "dot_general" for u in readers.get((r, 0), ())):
                return False
            any_reader = True
            if holder is None:  # fused into its own readers' kernels
                todo.append(((r, 0), costly_here))
    return any_reader
