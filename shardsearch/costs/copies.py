"""One reshard per (value, layout): readers that need a value in the same new layout share
one copy, as in the compiled program (XLA moves a value once per target layout).

The Problem's edges are pairwise, so an edge per reader charges the reshard once per
reader: an FSDP weight all-gathered for the forward and the backward matmul was charged
twice. For each value that two or more edges read, and each layout two or more of them can
need, the Problem gets a *copy node* of its own, with two strategies (0: no copy, 1: the
copy is made):

  * the edge producer -> copy costs the reshard into that layout when the copy is made
    (and holds its resharded bytes in the memory row, where a reader's edge held them);
  * each edge copy -> reader costs, when no copy is made and the reader's strategy needs
    that layout, a penalty just above the reshard's dearest price;
  * the readers' own edges no longer charge for that layout.

So an optimal plan makes the copy exactly when some reader needs it and pays for it once,
and any plan is priced at least at that; the copy nodes are ordinary nodes, so every
solver stage (merge, tie, prune, the Lagrangian) treats them exactly, and the solver sees
only numbers. Copy nodes come after the graph's nodes, in a deterministic order.

A copy node per (value, layout) for *every* layout two readers could need makes the
problem ten times larger (a 2-layer GPT: 1,700 copy nodes; the reduced core 78 -> 1,100
nodes and no longer integral at the LP root), so the search adds them lazily
(``wanted``): for the (value, layout) pairs its last plan reads twice or more
(``shared_reads``), until a plan reads none without a copy. Each problem prices every
plan at least at its true cost, and each added copy only lowers the price of plans that
share it, so the plans only get cheaper and the last one is priced exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Hashable, Sequence

import numpy as np

ABSENT, PRESENT = 0, 1
# The penalty of a needed copy not made: above the dearest reshard into the layout, so
# making the copy is never worse; close to it, so a local search started without the
# copy prices that reader about as a per-edge reshard would.
PENALTY = 1.000001


@dataclasses.dataclass(frozen=True)
class Read:
    """What a Problem edge reads: a value (``key``: producer, output index and the edge's
    repeat count, so only reads paid the same number of times share) and the layout each
    strategy of the reading node needs it in."""

    key: Hashable
    producer: int
    reader: int
    dsts: tuple  # one layout per strategy of the reading node


@dataclasses.dataclass(frozen=True)
class SharedCopy:
    """A copy node: ``value`` (producer node, output index) moved into ``layout`` once
    for the ``edges`` (indices into the problem's edge list) that can read it so."""

    node: int  # its index in the Problem
    producer: int
    key: Hashable
    layout: tuple
    readers: tuple[int, ...]  # reading nodes, one per reading edge (a node may repeat)
    needs: tuple[tuple[bool, ...], ...]  # per reader, which of its strategies need the copy

    def made(self, choice) -> bool:
        """Whether a plan (a strategy per node) needs this copy."""
        return any(need[int(choice[r])] for r, need in zip(self.readers, self.needs))


@dataclasses.dataclass
class Edges:
    """The Problem's edge lists, rewritten in place by ``share_copies``."""

    pairs: list[tuple[int, int]]
    costs: list[np.ndarray]
    local: list[np.ndarray]  # the part of ``costs`` spent on the device's memory
    memory: dict[int, np.ndarray]  # edge -> bytes of its resharded copy in the budget row


def _groups(reads: Sequence[Read | None], keys: set | None = None) -> dict:
    """Edges per value two or more of them read (of the values ``keys`` names, if given)."""
    by_value: dict = {}
    for e, r in enumerate(reads):
        if r is not None and (keys is None or r.key in keys):
            by_value.setdefault(r.key, []).append(e)
    return {k: es for k, es in by_value.items() if len(es) > 1}


def _shared_layouts(reads: Sequence[Read], es: list[int]) -> list[tuple]:
    """Layouts two or more of these edges can need, in first-seen order."""
    count: dict = {}
    for e in es:
        for layout in dict.fromkeys(reads[e].dsts):
            count[layout] = count.get(layout, 0) + 1
    return [layout for layout, c in count.items() if c > 1]


def share_copies(num_nodes: int, edges: Edges, reads: Sequence[Read | None],
                 wanted: frozenset | None = None) -> list[SharedCopy]:
    """Give each (value, layout) two or more edges can read a copy node: those in
    ``wanted`` ((key, layout) pairs), or every one when it is None. ``reads[e]``
    describes ``edges.pairs[e]`` (None: an edge that never shares a copy). Returns the
    copy nodes, numbered from ``num_nodes``, after rewriting ``edges``: readers' columns
    of shared layouts zeroed, the new edges appended."""
    copies: list[SharedCopy] = []
    zeroed: dict = {}  # (id of a matrix, columns) -> the matrix with them zeroed: repeated layers share
    penalties: dict = {}
    new_pairs, new_costs, new_local, new_memory = [], [], [], {}
    # (a search starts with no copies wanted: nothing to group)
    groups = _groups(reads, None if wanted is None else {k for k, _ in wanted}) if wanted is None or wanted else {}
    for key, es in groups.items():
        layouts = _shared_layouts(reads, es)
        if wanted is not None:
            layouts = [layout for layout in layouts if (key, layout) in wanted]
        columns: dict[int, list[int]] = {e: [] for e in es}
        for layout in layouts:
            readers = [e for e in es if layout in reads[e].dsts]
            e0 = readers[0]
            t0 = reads[e0].dsts.index(layout)
            reshard = np.asarray(edges.costs[e0])[:, t0]
            if not reshard.any():
                continue  # free from every layout the producer can give: nothing to share
            local = np.asarray(edges.local[e0])[:, t0]
            held = [np.asarray(edges.memory[e])[:, reads[e].dsts.index(layout)] for e in readers if e in edges.memory]
            node = num_nodes + len(copies)
            copies.append(SharedCopy(node, reads[e0].producer, key, layout,
                                     tuple(edges.pairs[e][1] for e in readers),
                                     tuple(tuple(d == layout for d in reads[e].dsts) for e in readers)))
            if held:
                new_memory[len(new_pairs)] = np.stack([np.zeros_like(held[0]), np.max(held, axis=0)], axis=1)
            new_pairs.append((reads[e0].producer, node))
            new_costs.append(np.stack([np.zeros_like(reshard), reshard], axis=1))
            new_local.append(np.stack([np.zeros_like(local), local], axis=1))
            penalty = PENALTY * float(reshard.max())
            for e in readers:
                need = tuple(d == layout for d in reads[e].dsts)
                t = [i for i, n in enumerate(need) if n]
                columns[e] += t
                pkey = (need, penalty)
                if pkey not in penalties:
                    penalties[pkey] = np.stack([penalty * np.array(need, dtype=np.float64), np.zeros(len(need))])
                new_pairs.append((node, edges.pairs[e][1]))
                new_costs.append(penalties[pkey])
                new_local.append(np.zeros_like(penalties[pkey]))
        for e, cols in columns.items():
            if cols:
                _zero_columns(edges, e, tuple(sorted(cols)), zeroed)
    first = len(edges.pairs)
    edges.pairs += new_pairs
    edges.costs += new_costs
    edges.local += new_local
    edges.memory.update({first + e: m for e, m in new_memory.items()})
    return copies


def _zero_columns(edges: Edges, e: int, cols: tuple[int, ...], memo: dict) -> None:
    for table in (edges.costs, edges.local):
        key = (id(table[e]), cols)
        if key not in memo:
            m = np.array(table[e], dtype=np.float64)
            m[:, list(cols)] = 0.0
            memo[key] = (table[e], m)  # keeps the original alive: its id stays unique
        table[e] = memo[key][1]
    if e in edges.memory:
        m = np.array(edges.memory[e], dtype=np.float64)
        m[:, list(cols)] = 0.0
        if m.any():
            edges.memory[e] = m
        else:
            del edges.memory[e]


def shared_reads(reads: Sequence[Read | None], edge_costs: Sequence[np.ndarray], choice) -> frozenset:
    """The (value key, layout) pairs a plan (a strategy per node) reads through two or
    more edges at a price: the copies that would lower its cost. ``reads`` and
    ``edge_costs``: the Problem's edges that ``reads`` describes (a copy's readers have
    its layout's columns zeroed, so a pair already shared is not found again)."""
    count: dict = {}
    for e, r in enumerate(reads):
        if r is None:
            continue
        t = int(choice[r.reader])
        if edge_costs[e][int(choice[r.producer]), t] > 0:
            pair = (r.key, r.dsts[t])
            count[pair] = count.get(pair, 0) + 1
    return frozenset(k for k, c in count.items() if c > 1)


def copy_labels(labels: np.ndarray, copies: Sequence[SharedCopy]) -> np.ndarray:
    """Tie labels (``repeats.tie_labels``) extended to the copy nodes: two copies tie when
    their producers tie, their readers tie in order, and they hold the same layout."""
    labels = np.asarray(labels, dtype=np.int64)
    out = list(labels)
    ids: dict = {}
    base = int(labels.max()) + 1 if len(labels) else 0
    for c in copies:
        key = (int(labels[c.producer]), c.key[1:] if isinstance(c.key, tuple) else (), c.layout,
               tuple(int(labels[r]) for r in c.readers))
        out.append(ids.setdefault(key, base + len(ids)))
    return np.array(out, dtype=np.int64)
