"""XLA's GPU all-gather combiner: the reshards of values ready at the step's start (GPU clusters).

A reshard of a value that needs no heavy compute (a parameter, a moment of the optimizer
state, the batch, and what light operators make of them: ``overlap.ready_at_start``) waits
on nothing the step computes, so the reshards of a plan are independent of each other and
XLA's all-gather combiner merges them, in program order, into one variadic collective per
device group up to ``COMBINE_THRESHOLD_BYTES`` (its GPU default). A merged collective pays
one launch latency for all its members, is issued once, and every member waits for all of
it: its bandwidth hides only under the compute before the *first* reader of the group.

Compiled for A100s (2x4-slow, mesh (2, 4)), each program has one all-gather-start per group
(benchmarks gpt-tiny FSDP: 38 reshards in one 1.89 MB gather, 130 us judged, fully exposed:
the embedding reads it first; the batch's tokens and labels gathered with the parameters,
or alone in a data-parallel plan that gathers both: one launch, not two). The planner priced
each reshard at 1/g of a launch (g: the plan's count) and its bandwidth under the compute
before its own reader, and the batch's reshards at a whole launch each. Convolutional nets
gather more than one group per device group: the flipped kernels their backward pass reads
(tests/models resnet FSDP: 22 reshards at the top, 4 flipped kernels later, and one gather
XLA could not make its major dimension: 3 launches; wresnet-tiny 5), so the gathers read
after the forward pass are grouped apart (resnet: 2 launches priced, 3 made).

The search sees numbers only (``GatherPricing``), settled by its fixed point on the plan's
own reshards (``settle``): each combinable reshard pays ``share`` of a launch latency
(launches / members), and a hidden one (of the carried state, read by a heavy operator)
its bandwidth at the exposed fraction of the combined gather its reader falls in (the
gathers queue on the links, what one leaves exposed delays the readers of the next, and
each hides at most its time at the intra-node figures, as ``overlap.exposed_comm`` says of
XLA's scheduler). A reshard of the batch is never hidden
(XLA leaves one next to its reader unless the combiner takes it to the top, where nothing
runs before it): it pays its bandwidth in full.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cost_model.overlap import exposed_time
from shardsearch.memory.combine import COMBINE_THRESHOLD_BYTES

# Fractions closer than this are the same price (the fixed point stops there).
FRACTION_TOLERANCE = 0.05


@dataclasses.dataclass(frozen=True)
class GatherPricing:
    """What each combinable reshard of a plan pays: ``share`` of a launch latency, and a
    hidden one its bandwidth times the exposed fraction of the combined gather whose first
    reader is the latest at or before its own (``spans``: (first reader, fraction), by reader).
    ``members``, ``launches``: the plan's reshards and combined gathers it was settled on."""

    share: float = 1.0
    spans: tuple[tuple[int, float], ...] = ()
    members: int = 0
    launches: int = 0

    def fraction(self, reader: int) -> float | None:
        """The exposed share of the bandwidth of a hidden reshard read by node ``reader``;
        None before the plan's first combined gather (it would be a gather of its own)."""
        found = None
        for first, f in self.spans:
            if first > reader:
                break
            found = f
        return found

    def same_price(self, other: GatherPricing) -> bool:
        """Whether pricing with ``other`` instead changes what the plan pays by less than a
        tenth of a launch latency and ``FRACTION_TOLERANCE`` of any bandwidth."""
        n = max(self.members, other.members, 1)
        return (abs(self.share - other.share) * n <= 0.1
                and [r for r, _ in self.spans] == [r for r, _ in other.spans]
                and all(abs(a - b) <= FRACTION_TOLERANCE for (_, a), (_, b) in zip(self.spans, other.spans)))

    def signature(self) -> tuple:
        return (self.members, self.launches, tuple((r, round(f / FRACTION_TOLERANCE)) for r, f in self.spans))


@dataclasses.dataclass(frozen=True)
class Combinable:
    """An edge whose reshard the combiner can merge: ``producer`` -> ``reader``, the
    layouts on both sides per strategy, which strategy pairs move data (``moves``), their
    bandwidth seconds on the links and as XLA's scheduler estimates them (``estimate``),
    the gathered bytes per device per reader strategy (``nbytes``), the compute before the
    reader (``window``), and whether its bandwidth can hide (``hidden``)."""

    producer: int
    reader: int
    srcs: tuple
    dsts: tuple
    moves: np.ndarray
    bandwidth: np.ndarray
    estimate: np.ndarray
    nbytes: np.ndarray
    window: float
    hidden: bool
    contention: float
    backward: bool = False  # read only after the forward pass ends

    def priced(self, edge: tuple, pricing: GatherPricing) -> tuple:
        """The edge's (seconds, of which on the device's memory) per strategy pair, from
        its prices in full (``edge``): ``pricing.share`` of its launch latency; a hidden
        reshard's bandwidth at its combined gather's exposed fraction (before the plan's
        first one: under the compute before its reader, at most its estimated time) and its
        buffers' traffic in the contention; the batch's bandwidth and traffic in full."""
        full, local = edge
        latency = (full - local - self.bandwidth) * pricing.share
        if not self.hidden:  # left next to its reader, or taken to the top with nothing before it
            return latency + self.bandwidth + local, local
        f = pricing.fraction(self.reader)
        exposed = self.bandwidth * f if f is not None else exposed_time(
            self.bandwidth, np.minimum(self.window, self.estimate), self.contention)
        return latency + exposed, np.zeros_like(full)


def _key(src, dst) -> tuple:
    """The device groups a reshard moves data over (the combiner merges one group's):
    the mesh axes it takes off the layout and those it adds."""
    had = {a for d in src for a in d}
    has = {a for d in dst for a in d}
    return tuple(sorted(had - has)), tuple(sorted(has - had))


def settle(combinable, choice) -> GatherPricing:
    """The pricing of ``choice``'s own combinable reshards: one member per (value, layout)
    (readers of one copy share it), grouped as the combiner does (per device groups, in
    reader order, up to the threshold; those the backward pass reads apart from the
    forward's), each group one launch and one queued collective."""
    members: dict = {}
    for c in combinable:
        a, b = int(choice[c.producer]), int(choice[c.reader])
        if not c.moves[a, b]:
            continue
        k = (c.producer, c.dsts[b])
        if k in members and members[k][0] <= c.reader:
            continue
        members[k] = (c.reader, c.window, float(c.nbytes[b]), float(c.bandwidth[a, b]), float(c.estimate[a, b]),
                      (_key(c.srcs[a], c.dsts[b]), c.backward), c.contention)
    if not members:
        return GatherPricing()
    groups: list[list[tuple]] = []
    open_: dict = {}  # key -> (group index, bytes so far)
    for m in sorted(members.values(), key=lambda m: m[0]):
        at = open_.get(m[5])
        if at is None or at[1] + m[2] > COMBINE_THRESHOLD_BYTES:
            groups.append([])
            at = (len(groups) - 1, 0.0)
        groups[at[0]].append(m)
        open_[m[5]] = (at[0], at[1] + m[2])
    # issued at the start, one at a time on the links; each first reader waits for its own,
    # which delays the compute (and so the readers) after it
    spans, free, stalled = [], 0.0, 0.0
    for group in sorted(groups, key=lambda g: g[0][0]):
        bandwidth = sum(m[3] for m in group)
        estimate = sum(m[4] for m in group)
        window = min(max(group[0][1] + stalled - free, 0.0), estimate)
        free += bandwidth
        exposed = float(exposed_time(bandwidth, window, group[0][6]))
        stalled += exposed
        spans.append((group[0][0], exposed / bandwidth if bandwidth > 0 else 1.0))
    merged: dict = {}
    for reader, f in spans:  # groups of several device groups first read by one node: the larger
        merged[reader] = max(f, merged.get(reader, 0.0))
    return GatherPricing(len(groups) / len(members), tuple(sorted(merged.items())), len(members), len(groups))
