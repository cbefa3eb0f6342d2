"""Per-device memory of a planned step: what stays resident, what the backward pass
keeps, and the peak, as XLA's buffer assignment makes it (``memory_analysis()``).
Plain data in, numbers out (numpy only, no jax).

``buffers``: which values XLA writes to memory (after fusion) and until when;
``assign``: which of them share an argument's or result's buffer, and the heap the rest
need; ``liveness``: the points in time the search's memory proxy counts at;
``breakdown``: the figures of a plan; ``explain``: what the peak is made of, item by item.
"""

from shardsearch.memory.assign import Assignment as Assignment
from shardsearch.memory.assign import Home as Home
from shardsearch.memory.assign import Span as Span
from shardsearch.memory.assign import assign as assign
from shardsearch.memory.assign import live_profile as live_profile
from shardsearch.memory.breakdown import MemoryBreakdown as MemoryBreakdown
from shardsearch.memory.breakdown import memory_breakdown as memory_breakdown
from shardsearch.memory.buffers import Buffers as Buffers
from shardsearch.memory.buffers import Lifetime as Lifetime
from shardsearch.memory.buffers import buffers as buffers
from shardsearch.memory.explain import KINDS as KINDS
from shardsearch.memory.explain import REMEDY as REMEDY
from shardsearch.memory.explain import Contributor as Contributor
from shardsearch.memory.explain import PeakExplained as PeakExplained
from shardsearch.memory.explain import explain_peak as explain_peak
from shardsearch.memory.explain import explain_plan as explain_plan
from shardsearch.memory.liveness import carried_args as carried_args
from shardsearch.memory.liveness import forward_end as forward_end
from shardsearch.memory.liveness import kept_for_backward as kept_for_backward
from shardsearch.memory.liveness import lifetimes as lifetimes
from shardsearch.memory.liveness import live_across as live_across
from shardsearch.memory.liveness import live_at as live_at
from shardsearch.memory.liveness import peak_point as peak_point
from shardsearch.memory.liveness import resharded_copies as resharded_copies

__all__ = [
    "Assignment",
    "Buffers",
    "Home",
    "Lifetime",
    "MemoryBreakdown",
    "Span",
    "assign",
    "buffers",
    "carried_args",
    "forward_end",
    "kept_for_backward",
    "lifetimes",
    "live_across",
    "live_at",
    "live_profile",
    "memory_breakdown",
    "peak_point",
    "resharded_copies",
]
