"""The plan's memory in words: one breakdown, worded the same in ``plan.summary()``,
``shardsearch explain`` and ``MemoryBudgetError`` (``memory.explain.kinds_line``)."""

from __future__ import annotations

from shardsearch.memory.explain import fmt_memory, kinds_line
from shardsearch.reporting.format import table

PEAK_LABEL = "predicted peak memory per device"


def _label(m) -> str:
    state = "parameters and optimizer state donated" if m.donated else "no argument donated"
    return f"{PEAK_LABEL} ({state})"


def peak_line(m) -> str:
    """``predicted peak memory per device (no argument donated): 1.20 GiB = parameters ...``"""
    return f"{_label(m)}: {fmt_memory(m.peak_bytes)} = {kinds_line(m.by_kind)}"


def summary_lines(plan) -> list[str]:
    """The summary's memory lines: the peak with and without the state donated, each with
    what it is made of."""
    return [peak_line(m) for m in plan.memory_at_peak]


def explain_lines(plan, top: int) -> list[str]:
    """``explain``'s memory sections: the largest contributors at the peak, each with the
    plan choice (remat, microbatches, a ZeRO-style split) that would cut it, then the
    peak by kind."""
    if not plan.memory_at_peak:
        return []
    m = plan.memory_at_peak[0]  # the figure the plan is judged by (predicted.peak_bytes)
    share = (lambda b: f"{100 * b / m.peak_bytes:.0f}%") if m.peak_bytes > 0 else (lambda b: "-")
    lines = [f"top memory: the largest buffers at the {_label(m)}, {fmt_memory(m.peak_bytes)}, "
             f"and the plan choice that would cut each"]
    lines += table(("buffer", "kind", "per device", "would cut it"),
                   [(name, kind, fmt_memory(b), cut) for kind, name, b, cut in m.top[:top]], right=(2,))
    lines += ["", f"memory by kind: {peak_line(m)}"]
    lines += table(("kind", "per device", "of peak"), [(k, fmt_memory(b), share(b)) for k, b in m.by_kind],
                   right=(1, 2))
    lines += [f"  {peak_line(d)}" for d in plan.memory_at_peak[1:]]
    return lines
