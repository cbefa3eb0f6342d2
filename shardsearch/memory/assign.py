"""Where XLA puts each temporary, and how large its temporary heap grows.

XLA's buffer assignment (``BufferAssigner`` in xla/service/buffer_assignment.cc): every
argument and every result of the step gets an allocation of its own; a temporary goes
into an argument's or result's allocation while that allocation holds nothing live (a
result buffer before the result is written, a donated argument's buffer between the
argument's last read and the result written into it), any number of temporaries one
after another; the temporaries that find no such home share one heap, whose peak is
what ``memory_analysis()`` reports as temporaries. XLA takes the buffers largest first,
each into the smallest allocation it fits in that holds nothing live over its lifetime.

Plain numbers in, numbers out: positions are node ids of the traced graph (its order
stands for XLA's schedule), sizes bytes per device.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Span:
    """A temporary: made at ``first``, last read at ``last`` (inclusive)."""

    first: int
    last: int
    nbytes: float


@dataclasses.dataclass(frozen=True)
class Home:
    """An argument's or result's allocation: ``busy`` are the (first, last) spans its own
    values occupy; a temporary read last at ``shares`` (the node that writes the result,
    reading its operand in place) may end there if it has the same size."""

    nbytes: float
    busy: tuple[tuple[int, int], ...]
    shares: int = -1


@dataclasses.dataclass(frozen=True)
class Assignment:
    home_of: tuple[int, ...]  # per span: index of the Home it went into, -1 for the heap
    heap_peak: float  # bytes: the heap's largest live sum
    heap_peak_at: int  # position of that peak; -1 if the heap stays empty


class _Gaps:
    """Every home's free gaps ``[lo, hi]`` (the complement of its occupied spans) in flat
    arrays, so one temporary's candidate homes are found in a few vector operations (a
    24-layer GPT has ~3,000 temporaries and ~1,200 homes: a loop over homes per
    temporary made ~1 million checks per placement).

    A temporary fits a home when one of its gaps holds ``[first, last]``; a gap followed
    by the span of the result written in place (``Home.shares``) also takes a temporary of
    the home's size that is last read exactly there (``ext``)."""

    def __init__(self, homes: Sequence[Home], rank: Sequence[int], room: int):
        lo, hi, ext, home = [], [], [], []
        for h, spans in enumerate(sorted(x.busy) for x in homes):
            prev = -1  # the gap before the first span starts at 0
            for a, b in spans:
                if a > prev + 1 or a == homes[h].shares:
                    lo.append(prev + 1), hi.append(a - 1), ext.append(a == homes[h].shares), home.append(h)
                prev = max(prev, b)
            lo.append(prev + 1), hi.append(np.iinfo(np.int64).max // 2), ext.append(False), home.append(h)
        # room for the two gaps each placed temporary may leave
        self.n, cap = len(lo), len(lo) + 2 * room

        def column(values, dtype):
            out = np.zeros(cap, dtype=dtype)
            out[:len(values)] = values
            return out

        self.lo, self.hi = column(lo, np.int64), column(hi, np.int64)
        self.ext, self.home = column(ext, bool), column(home, np.int64)
        sizes, rank = np.array([x.nbytes for x in homes], dtype=float), np.asarray(rank, dtype=np.int64)
        # a dead gap's size is -1: no temporary fits it
        self.size, self.rank = column(sizes[home], float), column(rank[home], np.int64)
        self.size[self.n:] = -1.0

    def take(self, s: Span) -> int:
        """Put ``s`` into the smallest home (by rank) free over its lifetime; its index, or -1."""
        n = self.n
        lo, hi, size = self.lo[:n], self.hi[:n], self.size[:n]
        ok = (size >= s.nbytes) & (lo <= s.first)
        ok &= (hi >= s.last) | (self.ext[:n] & (hi == s.last - 1) & (size == s.nbytes))
        found = np.flatnonzero(ok)
        if not len(found):
            return -1
        g = int(found[np.argmin(self.rank[found])]) if len(found) > 1 else int(found[0])
        home_size, self.size[g] = self.size[g], -1.0
        left = (self.lo[g], s.first - 1, False)
        right = (s.last + 1, self.hi[g], bool(self.ext[g]) and s.last <= self.hi[g])
        for a, b, ext in (left, right):
            if b >= a or ext:
                k = self.n
                self.lo[k], self.hi[k], self.ext[k] = a, b, ext
                self.home[k], self.size[k], self.rank[k] = self.home[g], home_size, self.rank[g]
                self.n += 1
        return int(self.home[g])


def live_profile(num_positions: int, spans: Sequence[Span]) -> np.ndarray:
    """Bytes live at each position from spans (inclusive ends)."""
    delta = np.zeros(num_positions + 1)
    for s in spans:
        delta[s.first] += s.nbytes
        delta[s.last + 1] -= s.nbytes
    return np.cumsum(delta[:-1])


def assign(num_positions: int, temps: Sequence[Span], homes: Sequence[Home]) -> Assignment:
    """XLA's assignment of ``temps`` to ``homes`` (largest first, each into the smallest
    home free over its lifetime) and the peak of the heap that holds the rest."""
    # smallest home first; among equal sizes the later one (as XLA's order has it)
    by_size = sorted(range(len(homes)), key=lambda i: (homes[i].nbytes, -i))
    rank = [0] * len(homes)
    for r, i in enumerate(by_size):
        rank[i] = r
    gaps = _Gaps(homes, rank, len(temps))
    home_of = [-1] * len(temps)
    for t in sorted(range(len(temps)), key=lambda t: (-temps[t].nbytes, temps[t].first, t)):
        if temps[t].nbytes > 0 and homes:
            home_of[t] = gaps.take(temps[t])
    heap = [s for s, h in zip(temps, home_of) if h < 0]
    if not heap:
        return Assignment(tuple(home_of), 0.0, -1)
    profile = live_profile(num_positions, heap)
    at = int(np.argmax(profile))
    return Assignment(tuple(home_of), float(profile[at]), at)
