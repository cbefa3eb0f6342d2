"""Stage search: layer ranges, submeshes, microbatches and schedule by dynamic programming.

Numpy only; it sees numbers, never the graph. The caller prices every candidate stage:
a range ``[i, j)`` of the layer units on submesh ``m`` (``StageCosts``, arrays indexed
``[i, j, m]``: time per microbatch, once-per-step time, memory). The search picks stages
that cover the units in order, on submeshes that tile the devices in order (stage ``s``
on the devices right after stage ``s - 1``'s), minimizing the step time

    sum_s t_s + sum_b x_b + (M - 1) * max(max_s t_s, max_b x_b),   t_s = time_s + step_s / M

where ``x_b`` is the time to move the activations and their cotangents across boundary
``b`` per microbatch (a link is a pipeline stage of its own: it overlaps with compute),
plus, once a step, what crosses between stages whole (the gradient partials of a
parameter kept on several stages, a tied embedding's: ``once_exposed``), and each stage's
once-per-step work (its optimizer update) is spread over the M microbatches. A stage fits
in memory when ``static + in_flight * activation + temp`` stays within the budget, with
``in_flight = min(S - s, M)`` microbatches on stage ``s`` of ``S`` under 1F1B and ``M`` under GPipe.

Submeshes (``submesh_choices``): a piece of one node (``(1, 2^k)`` devices, placed at a
multiple of its size) or whole nodes (``(n, devices_per_node)``, placed at a node
boundary). Device ``i`` sits on node ``i // devices_per_node``, as in ``cost_model``.

The DP is Alpa's (Zheng et al., OSDI'22, section 5.2) with the placement in the state:
for each candidate ``t_max`` (ascending; a stage or link slower than ``t_max`` is not
allowed), ``f[n][i, o]`` is the least ``sum t + sum x`` covering units ``i..U-1`` with
stages on devices ``o..D-1``, the first of which has ``n`` stages from it to the end
(what 1F1B's memory depends on; levels past the last that matters are merged). The
best ``f + (M - 1) * t_max`` over ``t_max`` is the optimum. Candidates below the least
``t_max`` that can cover the units with the devices at all are skipped (binary search
on a relaxed covering DP), and the scan stops once ``M * t_max`` exceeds the best found.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import itertools

import numpy as np

from shardsearch.pipeline.links import Links, once_exposed  # noqa: F401 (Links: re-exported)

INF = np.inf
# Under 1F1B a stage's memory depends on how many stages follow it; the DP tracks that
# exactly for this many, and wants a stage further from the end to hold all M
# microbatches (always safe; it can only miss a deep pipeline that fits just barely).
# Every level tracked costs the DP another pass.
MEMORY_LEVELS = 16
_ANY = 1 << 30  # nmax of a stage that fits however many stages follow


class Schedule(enum.Enum):
    GPIPE = "gpipe"  # all forwards, then all backwards: M microbatches of activations in flight
    ONE_F_ONE_B = "1f1b"  # one forward, one backward: stage s keeps at most S - s in flight


@dataclasses.dataclass(frozen=True)
class Submesh:
    nodes: int  # nodes it spans (1 for a piece of one node)
    per_node: int  # devices on each of them

    @property
    def size(self) -> int:
        return self.nodes * self.per_node

    def __str__(self) -> str:
        return f"{self.nodes}x{self.per_node}"


def submesh_choices(num_devices: int, devices_per_node: int) -> tuple[Submesh, ...]:
    """(1, 2^k) pieces of a node and (n, devices_per_node) whole nodes that fit the devices."""
    out, k = [], 1
    while k < devices_per_node and k <= num_devices:
        out.append(Submesh(1, k))
        k *= 2
    if num_devices < devices_per_node:
        if not out or out[-1].size != num_devices:
            out.append(Submesh(1, num_devices))
        return tuple(out)
    out += [Submesh(n, devices_per_node) for n in range(1, num_devices // devices_per_node + 1)]
    return tuple(out)


def valid_offsets(sub: Submesh, num_devices: int, devices_per_node: int) -> np.ndarray:
    """Device offsets where ``sub`` may start: aligned, inside one node for a piece of one."""
    k = sub.size
    if sub.per_node == devices_per_node or num_devices <= devices_per_node:
        step = devices_per_node if num_devices > devices_per_node else k
        return np.arange(0, num_devices - k + 1, step)
    return np.array([o for o in range(0, num_devices - k + 1, k)
                     if o // devices_per_node == (o + k - 1) // devices_per_node], dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class StageCosts:
    """The price of each candidate stage: units ``[i, j)`` on submesh ``m``.

    Arrays of shape ``(U, U + 1, K)``; entries with ``j <= i`` are ignored, ``time = inf``
    marks a stage that cannot run. Seconds and bytes per device."""

    time: np.ndarray  # per microbatch: the range's forward and backward
    step_time: np.ndarray  # once per step: its optimizer update (and other once-per-step work)
    static_bytes: np.ndarray  # parameters, optimizer state, gradient accumulators
    activation_bytes: np.ndarray  # kept from forward to backward, per microbatch in flight
    temp_bytes: np.ndarray  # the working set on top, at the stage's peak
    # per cut before unit j (U + 1 entries; 0 and U unused): bytes per microbatch the
    # forward sends across it (its backward sends as many back)
    cut_bytes: np.ndarray
    # once per step: bytes sent each way at once (the gradient partials of a parameter kept
    # on several stages, a tied embedding's), either per cut (U + 1 entries: every boundary
    # at that cut pays) or (U, U + 1): per stage [i, j), what the boundary after it is the
    # first to carry (values made in [i, j), read at or after j: a transfer goes straight
    # to its reader, so a pipeline pays it once, not once per boundary it passes); None: none
    step_cut_bytes: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class StageChoice:
    """The chosen pipeline: stage ``s`` runs units ``ranges[s]`` on ``submeshes[s]`` at
    device offset ``offsets[s]`` (devices ``offsets[s] .. offsets[s] + size - 1``)."""

    ranges: tuple[tuple[int, int], ...]
    submeshes: tuple[Submesh, ...]
    offsets: tuple[int, ...]
    num_microbatches: int
    schedule: Schedule
    stage_s: tuple[float, ...]  # per microbatch: time + step_time / M
    transfer_s: tuple[float, ...]  # per boundary, per microbatch (forward and backward)
    step_s: float  # the objective: predicted seconds per step
    bubble: float  # fraction of device time idle in the pipeline's fill and drain
    memory_bytes: tuple[float, ...]  # per stage, per device, under the schedule
    micro_s: tuple[float, ...] = ()  # per stage: forward + backward of one microbatch
    once_s: tuple[float, ...] = ()  # per stage: its once-per-step work
    step_transfer_s: tuple[float, ...] = ()  # per boundary: what its once-a-step transfers add to step_s

    @property
    def num_stages(self) -> int:
        return len(self.ranges)


def in_flight(schedule: Schedule, stages_from_here: int, num_microbatches: int) -> int:
    """Microbatches of activations a stage keeps, ``stages_from_here`` = S - s."""
    if schedule is Schedule.GPIPE:
        return num_microbatches
    return min(stages_from_here, num_microbatches)


def step_time(stage_s, transfer_s, num_microbatches: int) -> float:
    """The objective: ``sum t + sum x + (M - 1) * max(t, x)``."""
    worst = max(list(stage_s) + list(transfer_s))
    return float(sum(stage_s) + sum(transfer_s) + (num_microbatches - 1) * worst)


def bubble_fraction(stage_s, sizes, step_s: float, num_microbatches: int) -> float:
    """Share of device-seconds the pipeline leaves idle."""
    busy = sum(num_microbatches * t * k for t, k in zip(stage_s, sizes))
    return float(max(0.0, 1.0 - busy / (step_s * sum(sizes)))) if step_s > 0 else 0.0


@dataclasses.dataclass
class _Tables:
    """Everything the DP reads, prepared once for one (M, schedule).

    A *placement* ``p`` is a submesh ``pm[p]`` at a device offset ``po[p]`` where it may
    start (sorted by offset); the DP's columns are placements, not (submesh, offset) pairs,
    as most pairs are not placeable (an 8-device stage starts only at a node boundary)."""

    cost: np.ndarray  # (U, U+1, K) stage time incl. step_time / M; inf = not allowed
    nmax: np.ndarray  # (U, U+1, K) most stages-from-here its memory allows (0: never fits)
    sizes: np.ndarray  # (K,) devices per submesh
    pm: np.ndarray  # (P,) submesh of each placement
    po: np.ndarray  # (P,) its start offset
    link: np.ndarray  # (U+1, P): link time after a stage placed at p that ends before unit j
    once_link: np.ndarray  # (U, U+1, P): once-per-step transfers after stage [i, j) at p (``once_exposed`` of them)
    groups: np.ndarray  # (G, W): placements starting at each offset in ``offsets``, padded with P
    offsets: np.ndarray  # (G,) the offsets some placement starts at
    levels: int  # exact levels 1..levels-1, then one merged level

    @property
    def after(self) -> np.ndarray:  # (P,) the device right after each placement
        return self.po + self.sizes[self.pm]


def _tables(costs: StageCosts, subs, num_devices: int, dpn: int, links: Links, m_micro: int,
            schedule: Schedule, budget: float | None, memory_levels: int) -> _Tables:
    u, d = costs.time.shape[0], num_devices
    tri = np.triu(np.ones((u, u + 1), dtype=bool), k=1)[:, :, None]
    cost = np.where(tri, costs.time + costs.step_time / m_micro, INF)
    cost = np.where(np.isnan(cost), INF, cost)
    if budget is None:
        nmax = np.full(cost.shape, _ANY)
    else:
        room = budget - costs.static_bytes - costs.temp_bytes
        act = np.maximum(costs.activation_bytes, 0.0)
        if schedule is Schedule.GPIPE:
            nmax = np.where(room >= m_micro * act, _ANY, 0)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                fit = np.where(act > 0, np.floor(room / np.where(act > 0, act, 1.0)), _ANY)
            fit = np.where(room < 0, 0, fit)
            nmax = np.where(fit >= m_micro, _ANY, np.clip(fit, 0, memory_levels)).astype(np.int64)
    finite = nmax[(nmax < _ANY) & np.isfinite(cost)]
    levels = int(finite.max()) + 1 if finite.size else 1
    places = sorted((int(o), m) for m, sub in enumerate(subs) for o in valid_offsets(sub, d, dpn))
    po = np.array([o for o, _ in places], dtype=np.int64)
    pm = np.array([m for _, m in places], dtype=np.int64)
    cut = np.asarray(costs.cut_bytes, dtype=float)
    step_cut = np.zeros(u + 1) if costs.step_cut_bytes is None else np.asarray(costs.step_cut_bytes, dtype=float)
    step_cut = np.broadcast_to(step_cut, (u, u + 1))  # per cut: every stage ending there
    link, once_link = np.zeros((u + 1, len(places))), np.zeros((u, u + 1, len(places)))
    for p, (o, m) in enumerate(places):
        end = o + subs[m].size
        same = end % dpn != 0 and end < d  # the next stage starts inside this node
        link[:u, p] = links.time(cut[:u], min(subs[m].size, dpn), same)
        # the copies' stages are the first and the last ones, on different nodes unless all is one node
        once_link[:, :u, p] = links.once(step_cut[:, :u], min(subs[m].size, dpn), d <= dpn)
    offsets = np.unique(po)
    width = max(int(np.sum(po == o)) for o in offsets) if len(offsets) else 1
    groups = np.full((len(offsets), width), len(places), dtype=np.int64)
    for g, o in enumerate(offsets):
        members = np.flatnonzero(po == o)
        groups[g, : len(members)] = members
    sizes = np.array([s.size for s in subs], dtype=np.int64)
    return _Tables(cost, nmax, sizes, pm, po, link, once_link, groups, offsets, levels)


def _dp(t: _Tables, t_max: float, num_devices: int):
    """``f[n][i, o]``: least ``sum t + sum x`` with every stage and link <= t_max (see the
    module notes), and the argmins (placement and next unit, encoded ``p * (U+1) + j``)."""
    u, n_place = t.cost.shape[0], len(t.pm)
    nlev = t.levels
    f = np.full((nlev + 1, u + 1, num_devices + 1), INF)
    f[0, u, num_devices] = 0.0
    arg = np.full((nlev + 1, u + 1, num_devices + 1), -1, dtype=np.int64)
    cost = np.where(t.cost <= t_max, t.cost, INF)[:, :, t.pm]  # (U, U+1, P)
    # stages no slower than t_max span at most ``band`` units: look only that far ahead
    i_idx, j_idx, _ = np.nonzero(np.isfinite(cost))
    band = int((j_idx - i_idx).max()) if len(i_idx) else 1
    ahead = np.minimum(np.arange(u)[:, None] + 1 + np.arange(band)[None, :], u)  # (U, band): j
    inside = np.arange(u)[:, None] + 1 + np.arange(band)[None, :] <= u
    cost = np.where(inside[:, :, None], np.take_along_axis(cost, ahead[:, :, None], axis=1), INF)  # (U, band, P)
    nmax = np.take_along_axis(t.nmax[:, :, t.pm], ahead[:, :, None], axis=1)
    link = np.where(t.link <= t_max, t.link, INF)  # (U+1, P)
    once = once_exposed(np.take_along_axis(t.once_link, ahead[:, :, None], axis=1), cost)  # (U, band, P)
    after = t.after

    def by_offset(val: np.ndarray, j: np.ndarray, rows) -> None:
        """Per start offset, the best placement's value and argmin into f/arg rows."""
        padded = np.concatenate([val, np.full(val.shape[:-1] + (1,), INF)], axis=-1)[..., t.groups]  # (..., G, W)
        w = np.argmin(padded, axis=-1)
        p = t.groups[np.arange(len(t.offsets)), w]  # (..., G)
        best = np.take_along_axis(padded, w[..., None], axis=-1)[..., 0]
        jj = np.take_along_axis(np.concatenate([j, np.zeros(j.shape[:-1] + (1,), j.dtype)], -1), p, axis=-1)
        rows(best, p * (u + 1) + jj)

    for level in range(1, nlev):
        rows = u - level + 1  # at least one unit per stage
        if rows <= 0:
            break
        c = np.where(nmax[:rows] >= level, cost[:rows], INF)
        total = c + (f[level - 1][:, after] + link)[ahead[:rows]] + once[:rows]  # (rows, band, P)
        k = np.argmin(total, axis=1)
        val = np.take_along_axis(total, k[:, None, :], axis=1)[:, 0, :]

        def put(best, code, level=level, rows=rows):
            f[level][:rows][:, t.offsets] = best
            arg[level][:rows][:, t.offsets] = code

        by_offset(val, np.take_along_axis(ahead[:rows], k, axis=1), put)
    # the merged last level (n >= nlev stages from here) chains inside itself: row by row
    c = np.where(nmax >= nlev, cost, INF)
    nxt = np.minimum(f[nlev - 1], f[nlev])[:, after] + link  # (U+1, P)
    for i in range(u - 1, -1, -1):
        total = c[i] + nxt[ahead[i]] + once[i]
        k = np.argmin(total, axis=0)
        val = total[k, np.arange(n_place)]

        def put(best, code, i=i):
            f[nlev, i, t.offsets] = best
            arg[nlev, i, t.offsets] = code

        by_offset(val, ahead[i][k], put)
        nxt[i] = np.minimum(f[nlev - 1, i], f[nlev, i])[after] + link[i]
    return f, arg


def _backtrack(t: _Tables, f, arg, level: int, num_devices: int):
    """[((i, j), submesh, offset)] of the stages behind ``f[level][0, 0]``."""
    nlev = f.shape[0] - 1
    u = t.cost.shape[0]
    i, o, out = 0, 0, []
    while i < u:
        p, j = divmod(int(arg[level, i, o]), u + 1)
        m = int(t.pm[p])
        out.append(((i, j), m, o))
        i, o = j, o + int(t.sizes[m])
        if level == nlev:  # the merged level: whichever of its two sources held the minimum
            level = nlev if f[nlev, i, o] <= f[nlev - 1, i, o] else nlev - 1
        else:
            level -= 1
    assert o == num_devices and i == u, "stage DP backtrack did not tile the devices"
    return out


def _link_time(t: _Tables, m: int, o: int, j: int, table: str = "link") -> float:
    p = np.flatnonzero((t.pm == m) & (t.po == o))[0]
    return float(getattr(t, table)[j, p])


def _once_time(t: _Tables, i: int, j: int, m: int, o: int) -> float:
    """``once_exposed`` of the boundary after stage ``[i, j)`` on submesh ``m`` at ``o``."""
    p = np.flatnonzero((t.pm == m) & (t.po == o))[0]
    return float(once_exposed(t.once_link[i, j, p], t.cost[i, j, m]))


def _relaxed_devices(t: _Tables, t_max: float) -> float:
    """Fewest devices covering all units with stages <= t_max that fit in memory as the
    last stage (placement and links ignored): more than the mesh means infeasible."""
    u = t.cost.shape[0]
    need = np.full(u + 1, INF)
    need[u] = 0.0
    per = np.where((t.cost <= t_max) & (t.nmax >= 1), t.sizes[None, None, :], INF).min(axis=2)
    for i in range(u - 1, -1, -1):
        need[i] = np.min(per[i] + need)
    return need[0]


def _stage_max(t: _Tables, stages) -> float:
    worst = [t.cost[i, j, m] for (i, j), m, _ in stages]
    worst += [_link_time(t, m, o, j) for (_, j), m, o in stages[:-1]]
    return float(max(worst))


def search_stages(costs: StageCosts, *, num_devices: int, devices_per_node: int, links: Links,
                  num_microbatches: int, schedule: Schedule = Schedule.ONE_F_ONE_B,
                  memory_budget: float | None = None, submeshes=None,
                  num_stages: int | None = None, memory_levels: int = MEMORY_LEVELS) -> StageChoice | None:
    """The best pipeline for one (M, schedule), or None if no stages fit.

    ``num_stages``: only pipelines of exactly that many stages; ``memory_levels``: see
    ``MEMORY_LEVELS``.

    ``t_max`` is searched by branch and bound over the sorted candidates (every stage's
    and link's time): the DP's value ``F`` falls as ``t_max`` grows, so on an interval
    ``(a, b)`` between two evaluated candidates no pipeline beats ``F(b) + (M - 1) * a``,
    and the interval is dropped when that is no better than the best found, or when
    ``F(a) == F(b)`` (a pipeline with its slowest part inside costs no less than the one
    evaluated at ``a``). The DP's pipeline at ``t`` has a slowest stage or link ``w <= t``,
    and ``F`` is flat on ``[w, t]``.
    """
    subs = tuple(submeshes) if submeshes is not None else submesh_choices(num_devices, devices_per_node)
    m_micro = int(num_microbatches)
    units = costs.time.shape[0]
    if num_stages is not None and num_stages > min(units, num_devices):
        return None
    levels = max(memory_levels, num_stages or 0)
    t = _tables(costs, subs, num_devices, devices_per_node, links, m_micro, schedule, memory_budget, levels)
    if num_stages is not None:
        t.levels = max(t.levels, num_stages + 1)  # levels 1..num_stages count stages exactly
    cands = np.unique(np.concatenate([t.cost[np.isfinite(t.cost)], t.link.ravel()]))
    if not len(cands) or _relaxed_devices(t, cands[-1]) > num_devices:
        return None
    lo, hi = 0, len(cands) - 1  # the least candidate that can cover the units at all
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _relaxed_devices(t, cands[mid]) <= num_devices else (mid + 1, hi)
    best = [INF, None]
    values: dict[int, float] = {}

    def evaluate(k: int) -> int:
        """F at candidate k (into ``values``); returns the index of its pipeline's slowest part."""
        f, arg = _dp(t, cands[k], num_devices)
        heads = f[1:, 0, 0] if num_stages is None else f[num_stages: num_stages + 1, 0, 0]
        values[k] = float(np.min(heads))
        if not np.isfinite(values[k]):
            return k
        level = int(np.argmin(heads)) + (1 if num_stages is None else num_stages)
        stages = _backtrack(t, f, arg, level, num_devices)
        worst = _stage_max(t, stages)
        if values[k] + (m_micro - 1) * worst < best[0]:
            best[:] = [values[k] + (m_micro - 1) * worst, stages]
        w = int(np.searchsorted(cands, worst))
        values[w] = values[k]
        return w

    def push(a: int, b: int) -> None:
        # nothing inside, F flat across it (its pipelines are no better than a's), or bounded
        bound = values[b] + (m_micro - 1) * cands[min(a + 1, b)]
        if b - a > 1 and values[a] > values[b] and bound < best[0]:
            heapq.heappush(todo, (bound, a, b))

    top = evaluate(len(cands) - 1)
    todo: list = []
    if m_micro > 1 and lo < top:
        evaluate(lo)
        push(lo, top)
    while todo:  # the interval with the least bound first, so the best is found early
        bound, a, b = heapq.heappop(todo)
        if bound >= best[0]:
            break
        mid = (a + b) // 2
        w = evaluate(mid)
        push(mid, b)
        if a < w <= mid:
            push(a, w)
    if best[1] is None:
        return None
    return _choice(t, best[1], subs, costs, m_micro, schedule)


def _choice(t: _Tables, stages, subs, costs: StageCosts, m_micro: int, schedule: Schedule) -> StageChoice:
    """The StageChoice of backtracked ``stages``."""
    ranges = tuple(r for r, _, _ in stages)
    ms = [m for _, m, _ in stages]
    offsets = tuple(o for _, _, o in stages)
    stage_s = tuple(float(t.cost[i, j, m]) for (i, j), m in zip(ranges, ms))
    transfer_s = tuple(_link_time(t, m, o, j) for ((_, j), m, o) in stages[:-1])
    once_x = tuple(_once_time(t, i, j, m, o) for ((i, j), m, o) in stages[:-1])
    total = step_time(stage_s, transfer_s, m_micro) + sum(once_x)
    n = len(stages)
    memory = tuple(float(costs.static_bytes[i, j, m] + costs.temp_bytes[i, j, m]
                         + in_flight(schedule, n - s, m_micro) * costs.activation_bytes[i, j, m])
                   for s, ((i, j), m) in enumerate(zip(ranges, ms)))
    sizes = [subs[m].size for m in ms]
    micro = tuple(float(costs.time[i, j, m]) for (i, j), m in zip(ranges, ms))
    once = tuple(float(costs.step_time[i, j, m]) for (i, j), m in zip(ranges, ms))
    return StageChoice(ranges, tuple(subs[m] for m in ms), offsets, m_micro, schedule, stage_s, transfer_s,
                       total, bubble_fraction(stage_s, sizes, total, m_micro), memory, micro, once, once_x)


def _price(t: _Tables, bounds, ms, num_devices: int, m_micro: int) -> float:
    """``step_time`` of stages ``[bounds[s], bounds[s+1])`` on submeshes ``ms`` placed in
    order; inf when they do not tile the devices or a stage does not fit."""
    u, n = t.cost.shape[0], len(ms)
    o, stage_s, transfer_s, once_x = 0, [], [], 0.0
    for k, (m, i, j) in enumerate(zip(ms, bounds[:-1], bounds[1:])):
        placed = bool(np.any((t.pm == m) & (t.po == o)))
        if not placed or t.nmax[i, j, m] < n - k or not np.isfinite(t.cost[i, j, m]):
            return INF
        stage_s.append(t.cost[i, j, m])
        if j < u:
            transfer_s.append(_link_time(t, m, o, j))
            once_x += _once_time(t, i, j, m, o)
        o += int(t.sizes[m])
    return step_time(stage_s, transfer_s, m_micro) + once_x if o == num_devices else INF


def price_pipeline(costs: StageCosts, bounds, submesh_indices, *, num_devices: int, devices_per_node: int,
                   links: Links, num_microbatches: int, schedule: Schedule = Schedule.ONE_F_ONE_B,
                   memory_budget: float | None = None, submeshes=None) -> float:
    """The search's objective for one given pipeline: stage ``s`` runs units
    ``[bounds[s], bounds[s + 1])`` on submesh ``submesh_indices[s]``; inf if it is not one."""
    subs = tuple(submeshes) if submeshes is not None else submesh_choices(num_devices, devices_per_node)
    u = costs.time.shape[0]
    t = _tables(costs, subs, num_devices, devices_per_node, links, num_microbatches, schedule, memory_budget, u)
    return _price(t, tuple(bounds), tuple(submesh_indices), num_devices, num_microbatches)


def brute_force(costs: StageCosts, *, num_devices: int, devices_per_node: int, links: Links,
                num_microbatches: int, schedule: Schedule = Schedule.ONE_F_ONE_B,
                memory_budget: float | None = None, submeshes=None, num_stages: int | None = None) -> float:
    """The optimum by enumeration (for tests on small cases): the least ``step_time``."""
    subs = tuple(submeshes) if submeshes is not None else submesh_choices(num_devices, devices_per_node)
    u = costs.time.shape[0]
    t = _tables(costs, subs, num_devices, devices_per_node, links, num_microbatches, schedule, memory_budget, u)
    best = INF
    for s in (range(1, u + 1) if num_stages is None else [num_stages]):
        for cuts in itertools.combinations(range(1, u), s - 1):
            for ms in itertools.product(range(len(subs)), repeat=s):
                best = min(best, _price(t, (0,) + cuts + (u,), ms, num_devices, num_microbatches))
    return best
