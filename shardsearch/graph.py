"""OpGraph: the traced program as plain data (shapes, dtypes, params, edges); no jax here.

Nodes are in topological order. Graph inputs and large constants are nodes too
(with no operands) so the solver can choose their layouts like any operator's.
``payload`` fields hold the jax objects needed to re-run the program; only
``shardsearch.trace`` looks inside them.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, Callable

import numpy as np


class NodeKind(enum.Enum):
    INPUT = "input"  # a flat leaf of the function's arguments
    CONST = "const"  # a constant captured by the program (kept replicated)
    OP = "op"  # an operator (jaxpr equation)


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(math.prod(self.shape)) * self.dtype.itemsize


@dataclasses.dataclass(frozen=True)
class ValueRef:
    """Output ``index`` of node ``node``."""

    node: int
    index: int = 0


@dataclasses.dataclass(frozen=True)
class LiteralValue:
    """A scalar literal operand; it needs no edge and no layout."""

    value: Any
    info: TensorInfo


Operand = ValueRef | LiteralValue


@dataclasses.dataclass(frozen=True)
class OpNode:
    id: int
    kind: NodeKind
    primitive: str
    params: dict[str, Any]
    inputs: tuple[Operand, ...]
    outputs: tuple[TensorInfo, ...]
    label: str = ""  # where it came from: argument path or source line
    payload: Any = None  # jax equation / constant value, for re-running
    trips: int = 1  # times it runs per step: the trip count of the loops around it


@dataclasses.dataclass(frozen=True)
class Loop:
    """A ``scan`` planned once: its body's operators are nodes of the graph, run
    ``length`` times inside ``jax.lax.scan`` when the graph is re-run.

    Its nodes, in graph order: one ``scan_slice`` per xs operand (the per-iteration
    slice), one ``scan_carry`` per carry (the loop-carried value at the top of the
    body), the body's nodes, then one ``scan_out`` per carry (the final value) and one
    ``scan_stack`` per ys output (the stacked per-iteration outputs).
    """

    length: int
    reverse: bool
    unroll: Any
    slices: tuple[int, ...]
    carries: tuple[int, ...]
    body: tuple[int, ...]
    carry_out: tuple[Operand, ...]  # the body's next carry values, read inside the loop
    ys: tuple[Operand, ...]  # the body's per-iteration outputs
    outs: tuple[int, ...]
    stacks: tuple[int, ...]

    @property
    def members(self) -> tuple[int, ...]:
        return self.slices + self.carries + self.body + self.outs + self.stacks


@dataclasses.dataclass(frozen=True)
class Remat:
    """A ``jax.checkpoint`` region whose operators are inlined for planning: re-run,
    they go back inside ``jax.checkpoint`` so the compiled step recomputes them in the
    backward pass (with ``prevent_cse``) instead of keeping their results."""

    members: tuple[int, ...]  # the region's nodes, in graph order
    inputs: tuple[Operand, ...]  # outer values bound to the region's inputs
    outputs: tuple[Operand, ...]  # the region's results
    prevent_cse: bool
    policy: Any
    payload: Any = None  # the checkpoint equation, re-bound with the pinned body


@dataclasses.dataclass(frozen=True)
class Cond:
    """A ``cond`` (``lax.cond`` / ``lax.switch``) whose branches are inlined for planning.

    Each branch's equations are nodes reading the cond's operands directly; each output
    of the cond is a ``cond_merge`` node whose operands are the branches' corresponding
    results, all in one layout (strategies/branch.py), so the output has one layout
    whichever branch ran. Re-run, the branches go back inside ``lax.switch``.
    Both branches are charged (an upper bound: one of them runs).
    """

    index: Operand  # the int32 branch index (a scalar, replicated)
    branches: tuple[tuple[int, ...], ...]  # each branch's nodes, in graph order
    results: tuple[tuple[Operand, ...], ...]  # each branch's outputs
    merges: tuple[int, ...]  # one cond_merge node per output

    @property
    def members(self) -> tuple[int, ...]:
        return tuple(n for b in self.branches for n in b) + self.merges


@dataclasses.dataclass(frozen=True)
class While:
    """A ``while_loop`` planned once, like a scan whose trip count is unknown.

    Its nodes, in graph order: one ``while_carry`` per carry (the value at the top of an
    iteration, which the predicate reads too), the predicate's nodes, the body's nodes,
    then one ``while_out`` per carry (the carry on exit; it reads the carry node). The
    body's next carry is resharded into the carry's layout at the end of each iteration.
    Its nodes are charged once per step (trips 1): no sound bound on the iterations
    is known while planning.
    """

    carries: tuple[int, ...]
    cond: tuple[int, ...]  # the predicate's nodes
    pred: Operand  # the predicate's bool result
    body: tuple[int, ...]
    carry_out: tuple[Operand, ...]  # the body's next carry values, read inside the loop
    outs: tuple[int, ...]

    @property
    def members(self) -> tuple[int, ...]:
        return self.carries + self.cond + self.body + self.outs


@dataclasses.dataclass
class OpGraph:
    nodes: list[OpNode]
    outputs: tuple[Operand, ...]  # flat outputs of the function
    input_nodes: tuple[int, ...]  # node id of each flat argument leaf
    in_paths: tuple[str, ...]  # pytree path of each flat argument leaf
    out_paths: tuple[str, ...]
    in_tree: Any  # PyTreeDef of the arguments
    out_tree: Any  # PyTreeDef of the result
    # flat output index -> flat argument index it is the next value of (params in, params out)
    output_aliases: tuple[int | None, ...] = ()
    loops: tuple[Loop, ...] = ()  # scans planned once; see Loop
    remats: tuple[Remat, ...] = ()  # checkpoint regions, inlined for planning; see Remat
    conds: tuple[Cond, ...] = ()  # conds with inlined branches; see Cond
    whiles: tuple[While, ...] = ()  # while loops planned once; see While

    @property
    def regions(self) -> tuple[Loop | Remat | Cond | While, ...]:
        """Every region the graph is re-run by (each one run whole, nested ones inside)."""
        return self.loops + self.remats + self.conds + self.whiles

    def loop_backs(self) -> list[tuple[ValueRef, int, int]]:
        """(next carry, carry node, times per step) for each loop-carried value whose
        next value is resharded into the carry's layout between iterations: ``length - 1``
        times for a scan (its last next-carry leaves the loop as it is), once for a while
        loop (charged one iteration; its exit value is the carry itself)."""
        out = []
        for loop in self.loops:
            for ref, carry in zip(loop.carry_out, loop.carries):
                if isinstance(ref, ValueRef) and ref.node != carry:
                    out.append((ref, carry, (loop.length - 1) * self.nodes[carry].trips))
        for w in self.whiles:
            for ref, carry in zip(w.carry_out, w.carries):
                if isinstance(ref, ValueRef) and ref.node != carry:
                    out.append((ref, carry, self.nodes[carry].trips))
        return out

    def info(self, ref: Operand) -> TensorInfo:
        if isinstance(ref, LiteralValue):
            return ref.info
        return self.nodes[ref.node].outputs[ref.index]

    def input_info(self, i: int) -> TensorInfo:
        return self.nodes[self.input_nodes[i]].outputs[0]

    def analysis(self, name: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per graph: a traced graph does not change, and one search
        (and the advisor's sweep, once per mesh) asks for the same whole-graph analyses
        many times. The result is shared between callers: never mutate it."""
        memo = self.__dict__.setdefault("_analyses", {})  # not a field: equality ignores it
        if name not in memo:
            memo[name] = compute()
        return memo[name]

    def users(self) -> dict[int, list[tuple[int, int]]]:
        """node id -> [(consumer node id, operand position)] over all its outputs (shared:
        do not mutate)."""
        return self.analysis("users", self._users)

    def _users(self) -> dict[int, list[tuple[int, int]]]:
        out: dict[int, list[tuple[int, int]]] = {n.id: [] for n in self.nodes}
        for n in self.nodes:
            for j, ref in enumerate(n.inputs):
                if isinstance(ref, ValueRef):
                    out[ref.node].append((n.id, j))
        return out
