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

import bisect
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


class _Slots:
    """A home's occupied spans, kept sorted (they never overlap)."""

    def __init__(self, home: Home):
        self.home = home
        self.spans = sorted(home.busy)
        self.starts = [a for a, _ in self.spans]

    def fits(self, s: Span) -> bool:
        i = bisect.bisect_right(self.starts, s.last)  # spans starting at or before s.last
        if i == 0:
            return True
        a, b = self.spans[i - 1]
        if b >= s.first:
            # touching the result's write in place is no conflict (same size, read there)
            return a == s.last == self.home.shares and s.nbytes == self.home.nbytes and \
                (i < 2 or self.spans[i - 2][1] < s.first)
        return True

    def add(self, s: Span) -> None:
        i = bisect.bisect_left(self.starts, s.first)
        self.starts.insert(i, s.first)
        self.spans.insert(i, (s.first, s.last))


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
    slots = [_Slots(h) for h in homes]
    by_size = sorted(range(len(slots)), key=lambda i: (slots[i].home.nbytes, -i))  # smallest first
    sizes = [slots[i].home.nbytes for i in by_size]
    home_of = [-1] * len(temps)
    for t in sorted(range(len(temps)), key=lambda t: (-temps[t].nbytes, temps[t].first, t)):
        s = temps[t]
        if s.nbytes <= 0:
            continue
        for i in by_size[bisect.bisect_left(sizes, s.nbytes):]:
            if slots[i].fits(s):
                slots[i].add(s)
                home_of[t] = i
                break
    heap = [s for s, h in zip(temps, home_of) if h < 0]
    if not heap:
        return Assignment(tuple(home_of), 0.0, -1)
    profile = live_profile(num_positions, heap)
    at = int(np.argmax(profile))
    return Assignment(tuple(home_of), float(profile[at]), at)
