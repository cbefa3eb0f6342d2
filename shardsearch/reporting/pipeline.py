"""A pipelined plan in words and tables, for ``shardsearch explain``.

``pipeline_lines(plan, top)``: the schedule and bubble in one sentence; a table of the
stages (devices, submesh, layer units, predicted time per microbatch and per step, peak
memory per device); the bytes crossing each boundary per microbatch; and per stage its
programs with their predicted time, dearest first (each program is an ordinary plan:
``plan.pipeline.stages[s].programs[kind].summary()`` shows its layouts).
"""

from __future__ import annotations

from shardsearch.reporting.format import fmt_bytes, fmt_s, table


def _devices(ids) -> str:
    ids = list(ids)
    if ids == list(range(ids[0], ids[0] + len(ids))):
        return f"{ids[0]}-{ids[-1]}" if len(ids) > 1 else str(ids[0])
    return ",".join(map(str, ids))


def pipeline_lines(plan, top: int = 10) -> list[str]:
    p = plan.pipeline
    if p is None:
        return []
    if p.num_stages <= 1:
        return []  # (the verdict says it: gradient accumulation)
    lines = []
    rows = [(str(s), _devices(st.devices), "x".join(map(str, st.shape)), f"{st.layers[0]}-{st.layers[1] - 1}"
             if st.layers[1] > st.layers[0] else "-", fmt_s(st.micro_s), fmt_s(st.step_s), fmt_bytes(st.peak_bytes))
            for s, st in enumerate(p.stages)]
    lines += ["stages (time: forward + backward of one microbatch; once per step: before and after the loop):",
              *table(("stage", "devices", "submesh", "layer units", "per microbatch", "once per step", "peak"),
                     rows, right=(4, 5, 6))]
    if p.transfers:
        lines += ["", "sent between stages per microbatch (forward activations, backward cotangents):",
                  *table(("boundary", "forward", "backward"),
                         [(f"{b} -> {b + 1}", fmt_bytes(f), fmt_bytes(k)) for b, (f, k) in enumerate(p.transfers)],
                         right=(1, 2))]
    programs = sorted(((pl.predicted.total_s, s, kind) for s, st in enumerate(p.stages)
                       for kind, pl in st.programs.items()), key=lambda x: (-x[0], x[1], x[2]))
    if programs:
        lines += ["", "programs, dearest first (plan.pipeline.stages[s].programs[kind] is each one's plan):",
                  *table(("stage", "program", "predicted"), [(str(s), kind, fmt_s(t)) for t, s, kind in programs[:top]],
                         right=(2,))]
    return lines
