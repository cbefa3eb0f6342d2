"""Microbatching from the traced program: which operators run once per microbatch.

Splitting the batch into M microbatches is data parallelism in time. The split is read
off the existing strategy rules on a 1-D virtual mesh (axis ``MICROBATCH``, microbatch m
plays device m): starting from the batch inputs, an operator whose rule can run it with
its batch-split operands split as they are runs per microbatch; if that strategy
all-reduces over the axis, its output is a partial result per microbatch, combined across
microbatches (a weight gradient, the summed loss). No re-tracing, no user marker.

API (numpy only; no jax)
------------------------
``split_microbatches(graph, *, batch_size=None) -> MicrobatchSplit``, or raises
``MicrobatchError`` naming the operator that makes microbatching change the result (the
caller then keeps the unpipelined plan). ``MicrobatchSplit`` is frozen plain data:

- ``batch_size`` B, ``batch_args``: flat argument indices split on their dim 0 (the
  arguments the step does not return as new state, whose leading dim is B);
- ``phases[n]`` per node (``Phase``): PRE (once per step before the microbatch loop;
  inputs, constants and every value that reads no batch-split value), MICRO (per
  microbatch), ACCUM (per microbatch, output a partial result: ``reductions[n]`` says how
  the microbatches' partials combine, SUM / MAX / MIN / ...), POST (once per step after
  the loop, e.g. the optimizer update);
- ``batch_dims[ValueRef]``: the batch dim of every per-microbatch value (and batch input);
- ``slices[(node, operand)]``: a PRE value (full batch size) that a MICRO/ACCUM node reads
  one microbatch at a time on that dim (random bits drawn at global shape, then sliced,
  so dropout equals jit's);
- ``pre_copies``: MICRO nodes PRE also runs at global shape (the batch-only inputs of a
  reduction that depends on no parameter, e.g. a masked mean's token count, which PRE
  computes over the whole batch once);
- ``local_iotas``: iotas over the batch dim that run per microbatch with local values
  0..B/M-1, because they only index into the microbatch (``x[jnp.arange(B), labels]``);
- ``allows(M)``: whether every split dim divides by M.

``micro_graph(graph, split, M) -> MicroGraph`` (``pipeline/micro_graph.py``): the
per-microbatch program as an OpGraph of its own (MICRO/ACCUM nodes at B/M shapes, their
shape-carrying params rewritten), with its boundary: ``inputs`` (PRE values read whole
or sliced) and ``outputs`` (values POST reads: STACK per-microbatch values back into the
batch, ACCUM partials, LAST for values every microbatch computes alike).

Rules beyond the strategy rules (all because a local run cannot know its position):
an iota along a split dim, random bits split on a generated dim, and a gather / scatter
indexing a split operand dim give global positions under SPMD but local ones when run on
B/M rows, so they are not split per microbatch; values made without any batch operand
(``jnp.zeros``, causal masks) are rebuilt per microbatch when their rule splits them
from non-positional pieces, and otherwise computed whole in PRE and sliced. A partial
result flows through linear operators (reshape, add of partials, a product with a
whole value, a scan's stacked outputs) and is combined where something non-linear reads
it; that reader runs in POST. A POST value read back by per-microbatch work refuses the
step (batch norm), except a reduction that depends on no parameter (only on batch
inputs and constants), which PRE computes whole.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from typing import Mapping

from cost_model.mesh import MeshShape
from shardsearch.errors import MicrobatchError
from shardsearch.graph import LiteralValue, NodeKind, OpGraph, OpNode, ValueRef
from shardsearch.memory import carried_args
from shardsearch.pipeline import propagate as prop
from shardsearch.pipeline.states import Local, Partial, Phase, Reduction

MICROBATCH = prop.AXIS

__all__ = ["MICROBATCH", "MicroGraph", "MicroInput", "MicroOutput", "MicrobatchError", "MicrobatchSplit",
           "OutKind", "Phase", "Reduction", "micro_graph", "split_microbatches"]

NO_BATCH = (
    "shardsearch found no batch input to split into microbatches: microbatching splits the "
    "arguments the step does not return as new state on their leading dimension, and "
    "{why}. Pass the batch as an argument with a leading batch dimension, or batch_size=..."
)
REFUSED = (
    "shardsearch cannot split this step into microbatches without changing its result: "
    "{reader} reads {origin}'s result, which {why}; per-example work would then see a "
    "statistic of one microbatch instead of the whole batch (as batch norm does). The step "
    "runs unpipelined (no microbatches, no pipeline stages); normalize per example (layer "
    "norm) or keep batch statistics out of the differentiated step to allow microbatching."
)
NOT_FIXED = "shardsearch: the microbatch split of this step did not settle in {n} passes; please report it"
BAD_COUNT = (
    "num_microbatches={m} does not divide the batch: {what} has size {size} on its batch "
    "dimension. Use one of {valid}"
)
MAX_PASSES = 12


@dataclasses.dataclass(frozen=True)
class MicrobatchSplit:
    batch_size: int
    batch_args: tuple[int, ...]
    phases: tuple[Phase, ...]  # per node
    batch_dims: Mapping[ValueRef, int]  # per-microbatch values (and batch inputs) -> batch dim
    reductions: Mapping[int, Reduction]  # ACCUM node -> how its partials combine
    slices: Mapping[tuple[int, int], int]  # (node, operand) -> dim of a PRE value read sliced
    pre_copies: frozenset[int] = frozenset()
    local_iotas: frozenset[int] = frozenset()
    divisor: int = 1  # gcd of every split dim's size: M must divide it

    def allows(self, num_microbatches: int) -> bool:
        return num_microbatches >= 1 and self.divisor % num_microbatches == 0

    def counts(self) -> tuple[int, ...]:
        """Every number of microbatches this split allows."""
        return tuple(m for m in range(1, self.divisor + 1) if self.divisor % m == 0)

    def nodes(self, *phases: Phase) -> tuple[int, ...]:
        return tuple(i for i, p in enumerate(self.phases) if p in phases)

    def check(self, graph: OpGraph, num_microbatches: int) -> None:
        """Raise MicrobatchError naming a split value whose batch dim M does not divide."""
        if self.allows(num_microbatches):
            return
        m = num_microbatches
        for ref, d in self.batch_dims.items():
            size = graph.info(ref).shape[d]
            if m < 1 or size % m:
                what = f"{prop.describe(graph, graph.nodes[ref.node])} (output {ref.index})"
                raise MicrobatchError(BAD_COUNT.format(m=m, what=what, size=size, valid=list(self.counts())))
        raise MicrobatchError(BAD_COUNT.format(m=m, what="a sliced value", size=self.divisor,
                                               valid=list(self.counts())))


def _batch_inputs(graph: OpGraph, batch_size: int | None) -> tuple[int, tuple[int, ...]]:
    carried = carried_args(graph)
    fed = [i for i in range(len(graph.input_nodes)) if i not in carried and graph.input_info(i).shape]
    if not fed:
        raise MicrobatchError(NO_BATCH.format(why="every argument is either returned as new state or a scalar"))
    if batch_size is None:
        counts = Counter(graph.input_info(i).shape[0] for i in fed)
        batch_size = max(counts, key=lambda b: (counts[b], b))
    args = tuple(i for i in fed if graph.input_info(i).shape[0] == batch_size)
    if not args:
        raise MicrobatchError(NO_BATCH.format(why=f"no argument has leading dimension batch_size={batch_size}"))
    if batch_size < 2:
        raise MicrobatchError(NO_BATCH.format(why=f"the batch has size {batch_size}"))
    return batch_size, args


def _data_only(graph: OpGraph) -> list[bool]:
    """Per node: depends on no carried argument (parameters, optimizer state)."""
    carried = {graph.input_nodes[i] for i in carried_args(graph)}
    out = [False] * len(graph.nodes)
    for n in graph.nodes:
        out[n.id] = n.id not in carried and all(
            isinstance(r, LiteralValue) or out[r.node] for r in n.inputs)
    return out


def split_microbatches(graph: OpGraph, *, batch_size: int | None = None) -> MicrobatchSplit:
    """The microbatch split of ``graph`` (see the module notes), or MicrobatchError."""
    size, args = _batch_inputs(graph, batch_size)
    mesh = MeshShape((MICROBATCH,), (_smallest_factor(size),))
    ctx = prop.Context(graph, mesh, frozenset(graph.input_nodes[i] for i in args), _data_only(graph))
    hints = prop.Hints()
    for _ in range(MAX_PASSES):
        result = prop.Pass(ctx, hints).run()
        new = result.next_hints()
        if new == hints:
            break
        hints = new
    else:
        raise MicrobatchError(NOT_FIXED.format(n=MAX_PASSES))
    if result.refusals:
        reader, origin, why = result.refusals[0]
        raise MicrobatchError(REFUSED.format(reader=prop.describe(graph, graph.nodes[reader]),
                                             origin=prop.describe(graph, graph.nodes[origin]),
                                             why=result.why_of(origin, why)))
    return _assemble(graph, size, args, result)


def _smallest_factor(n: int) -> int:
    return next((p for p in range(2, math.isqrt(n) + 1) if n % p == 0), n)


def _assemble(graph: OpGraph, size: int, args: tuple[int, ...], result: "prop.Pass") -> MicrobatchSplit:
    phases, batch_dims, reductions = [], {}, {}
    for n in graph.nodes:
        states = result.state[n.id]
        for k, s in enumerate(states):
            if isinstance(s, Local):
                batch_dims[ValueRef(n.id, k)] = s.dim
        phases.append(_phase(n, states))
        if phases[-1] is Phase.ACCUM:
            reductions[n.id] = states[0].reduction
    sizes = [graph.info(r).shape[d] for r, d in batch_dims.items()]
    sizes += [graph.info(graph.nodes[n].inputs[j]).shape[d] for (n, j), d in result.slices.items()]
    return MicrobatchSplit(
        batch_size=size,
        batch_args=args,
        phases=tuple(phases),
        batch_dims=batch_dims,
        reductions=reductions,
        slices=dict(result.slices),
        pre_copies=frozenset(result.pre_copies()),
        local_iotas=frozenset(n for n, d in result.hints.localized.items()
                              if graph.nodes[n].primitive == "iota" and graph.nodes[n].params["dimension"] == d),
        divisor=math.gcd(size, *sizes),
    )


def _phase(node: OpNode, states) -> Phase:
    if node.kind is not NodeKind.OP:
        return Phase.PRE
    if any(isinstance(s, Partial) for s in states):
        return Phase.ACCUM
    if any(isinstance(s, Local) for s in states):
        return Phase.MICRO
    return states[0].phase if states else Phase.PRE


# The per-microbatch program lives beside its builder (it needs nothing from above).
from shardsearch.pipeline.micro_graph import MicroGraph, MicroInput, MicroOutput, OutKind  # noqa: E402
from shardsearch.pipeline.micro_graph import build_micro_graph as micro_graph  # noqa: E402
