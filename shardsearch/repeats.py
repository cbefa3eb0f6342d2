"""Repeated structure in a traced program: the layers of a deep model, found by shape.

A deep model traces into runs of identical blocks: the forward layers one after
another, the backward layers in reverse, and each optimizer stage over every layer's
parameters. Every block of a run does the same operators on the same shapes and
reads its own earlier results at the same relative places. The solver ties the
copies of each operator (one variable for every other copy, see tie_labels), so its
problem stays near the size of two layers however deep the model is.

Detection is on the node sequence alone (no names), so it finds layers written as a
Python loop, as stacked modules, or copied by hand:
  1. each node gets a signature: kind, primitive, params, operand/result shapes and
     dtypes, and its number of strategies;
  2. for every period p, the positions where sig[i] == sig[i + p] form runs; a run
     of length >= p is a stretch of at least two blocks of p nodes (a tandem repeat);
  3. repeats are taken greedily by nodes saved, without overlap, and each is cut
     back at the first copy whose wiring differs from the first block's (an operand
     inside the block must come from the same place in every copy).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shardsearch.graph import NodeKind, OpGraph, ValueRef

# A repeat must save this many nodes to be tied: tiny repeats (two equal reshapes in
# a row) buy nothing and could tie operators that play different roles.
MIN_SAVED_NODES = 16


@dataclasses.dataclass(frozen=True)
class Repeat:
    start: int  # node id of the first block's first node
    period: int  # nodes per block
    copies: int

    @property
    def saved(self) -> int:
        return (self.copies - 1) * self.period


def _signatures(graph: OpGraph, num_strategies) -> np.ndarray:
    codes: dict = {}
    out = np.empty(len(graph.nodes), dtype=np.int64)
    for n in graph.nodes:
        params = tuple(sorted((k, repr(v)) for k, v in n.params.items())) if n.kind is NodeKind.OP else ()
        ins = tuple(graph.info(r) for r in n.inputs)
        key = (n.kind, n.primitive, params, ins, n.outputs, num_strategies[n.id], n.trips)
        out[n.id] = codes.setdefault(key, len(codes))
    return out


def _periods(sig: np.ndarray, max_period: int) -> np.ndarray:
    """Periods worth scanning: distances from a node to the next node of its signature
    seen more than once, and their small multiples (a layer's period shows up once for
    every operator that appears once per layer)."""
    order = np.lexsort((np.arange(len(sig)), sig))  # by signature, then position
    same = sig[order[1:]] == sig[order[:-1]]
    gaps = (order[1:] - order[:-1])[same]
    gaps = gaps[gaps <= max_period]
    if not len(gaps):
        return gaps
    counts = np.bincount(gaps)
    base = np.flatnonzero(counts >= 2)  # a period seen once is no repeat of substance
    # Multiples too: blocks that alternate wiring (A B A B) repeat only every 2 layers.
    periods = np.unique(np.concatenate([base * k for k in (1, 2, 3, 4)]))
    return periods[periods <= max_period]


def _candidates(sig: np.ndarray, max_period: int) -> list[Repeat]:
    found = []
    for p in _periods(sig, max_period):
        p = int(p)
        same = np.concatenate([[False], sig[:-p] == sig[p:], [False]])
        edges = np.flatnonzero(np.diff(same.astype(np.int8)))
        for s, e in zip(edges[::2], edges[1::2]):  # same[s+1 .. e] true: sig[i]==sig[i+p], i in [s, e)
            copies = (e - s + p) // p
            if copies >= 2 and (copies - 1) * p >= MIN_SAVED_NODES:
                found.append(Repeat(int(s), p, int(copies)))
    return found


def _producers(graph: OpGraph) -> list[tuple[int, ...]]:
    return [tuple(r.node if isinstance(r, ValueRef) else -1 for r in n.inputs) for n in graph.nodes]


def _wired_copies(rep: Repeat, producers) -> int:
    """How many leading copies are wired like the first block."""
    s, p = rep.start, rep.period
    for c in range(1, rep.copies):
        base = s + c * p
        for j in range(p):
            for q0, qc in zip(producers[s + j], producers[base + j]):
                inside = s <= q0 < s + p
                if inside and qc != q0 + c * p:
                    return c
                if not inside and base <= qc < base + p:
                    return c
    return rep.copies


def find_repeats(graph: OpGraph, num_strategies, max_period: int | None = None) -> list[Repeat]:
    """Non-overlapping tandem repeats of the node sequence, most nodes saved first."""
    sig = _signatures(graph, num_strategies)
    producers = _producers(graph)
    limit = len(sig) // 2 if max_period is None else max_period
    taken = np.zeros(len(sig), dtype=bool)
    chosen = []
    for rep in sorted(_candidates(sig, limit), key=lambda r: (-r.saved, r.period, r.start)):
        span = slice(rep.start, rep.start + rep.copies * rep.period)
        if taken[span].any():
            continue
        copies = _wired_copies(rep, producers)
        rep = dataclasses.replace(rep, copies=copies)
        if copies < 2 or rep.saved < MIN_SAVED_NODES:
            continue
        taken[rep.start:rep.start + copies * rep.period] = True
        chosen.append(rep)
    return sorted(chosen, key=lambda r: r.start)


def tie_labels(graph: OpGraph, num_strategies, max_period: int | None = None) -> np.ndarray:
    """Per node, the node it is tied to, or itself.

    Block c is tied to block c % 2, not to block 0: consecutive layers may alternate
    (a Megatron MLP stack splits one layer's kernel by columns and the next by rows),
    so the solver keeps two representative layers and every other copy follows one.
    """
    labels = np.arange(len(graph.nodes), dtype=np.int64)
    for rep in find_repeats(graph, num_strategies, max_period):
        first = np.arange(rep.start, rep.start + rep.period)
        for c in range(2, rep.copies):
            labels[first + c * rep.period] = first + (c % 2) * rep.period
    return labels
