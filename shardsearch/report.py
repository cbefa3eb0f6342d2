"""Readable views of a Plan."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

from cost_model.mesh import spec_str
from shardsearch.reporting.format import fmt_bytes, fmt_s, table

_MAX_ROWS = 24


def _unreduced(st) -> str:
    if not st.unreduced_variables:  # a plan file that predates the figure
        return ""
    return f" (an ILP of {st.unreduced_variables} variables, {st.unreduced_constraints} constraints)"


_fmt_s, _fmt_bytes, _table = fmt_s, fmt_bytes, table  # the names this module used first


def _mesh_words(plan) -> str:
    return " x ".join(f"{n}={s}" for n, s in zip(plan.mesh.axis_names, plan.mesh.axis_sizes))


def header_section(plan) -> list[str]:
    return [f"shardsearch plan  mesh [{_mesh_words(plan)}]  cluster {plan.cluster}  program {plan.program_hash}"]


def verdict_section(plan) -> list[str]:
    from shardsearch.reporting.verdict import verdict

    return verdict(plan)


def pipeline_section(plan) -> list[str]:
    """Microbatches, stages and schedule in words (shardsearch.pipeline.plan_data)."""
    lines = [plan.pipeline.describe()] if plan.pipeline is not None else []
    if plan.pipeline is not None:
        lines += plan.pipeline.describe_copies(plan.in_paths)
    return lines + ([plan.pipeline_why] if plan.pipeline_why else [])


def prediction_section(plan) -> list[str]:
    from shardsearch.reporting.memory import PEAK_LABEL, fmt_memory, summary_lines

    p = plan.predicted
    memory = summary_lines(plan) or [f"{PEAK_LABEL}: {fmt_memory(p.peak_bytes)}"]  # old plan files
    return [f"predicted step: {_fmt_s(p.total_s)} (compute {_fmt_s(p.compute_s)}, communication {_fmt_s(p.comm_s)})",
            *memory]


def search_section(plan) -> list[str]:
    st = plan.stats
    size = (f"{st.num_nodes} graph nodes{_unreduced(st)} -> {st.reduced_nodes} ILP nodes, {st.num_variables} variables, "
            f"{st.num_constraints} constraints")
    if st.cached:  # the solver did not run now: say when it did, not as if it just had
        return [f"search: read from the plan cache; found earlier by solver {st.status} ({size}, "
                f"objective {_fmt_s(st.objective)}, bound {_fmt_s(st.bound)})"]
    return [f"search: {size}; solver {st.status} in {st.solve_s:.2f} s "
            f"(objective {_fmt_s(st.objective)}, bound {_fmt_s(st.bound)}); total search {st.search_s:.2f} s"]


def alternatives_section(plan) -> list[str]:
    """This plan and each recipe (plan.alternatives()) by the same cost model."""
    alts = plan.alternatives()
    if not alts:
        return []
    p = plan.predicted
    rows = [("this plan", _fmt_s(p.total_s), "1.00x", _fmt_s(p.compute_s), _fmt_s(p.comm_s),
             _fmt_bytes(p.peak_donated_bytes or p.peak_bytes), "")]
    for a in alts:
        ratio = f"{a.total_s / p.total_s:.2f}x" if p.total_s > 0 else "-"
        rows.append((a.name, _fmt_s(a.total_s), ratio, _fmt_s(a.compute_s), _fmt_s(a.comm_s),
                     _fmt_bytes(a.peak_bytes) + ("" if a.fits else " (over budget)"), a.description))
    return ["alternatives on the same model and cluster (same cost model; step time per device):",
            *_table(("", "step", "vs plan", "compute", "communication", "peak (donated)", "recipe"), rows,
                    right=(1, 2, 3, 4))]


def arguments_section(plan) -> list[str]:
    from shardsearch.reporting.verdict import group_name

    """Each argument's layout: inputs first (the batch always shows), then parameters and
    optimizer state; a long list is folded into groups (layers of a stack read as [*])."""
    roles = plan.in_roles or ("",) * len(plan.in_paths)
    lines = ["arguments (layout per dim; see the notation below):"]
    for role in ("input", "parameter", "optimizer state", ""):
        rows = [(path, spec_str(spec)) for path, spec, r in zip(plan.in_paths, plan.flat_in_specs, roles) if r == role]
        if not rows:
            continue
        if len(rows) > _MAX_ROWS:  # fold: one row per (path pattern, layout)
            folded = Counter((group_name(path), layout) for path, layout in rows)
            rows = [(f"{n} x {pattern}" if n > 1 else pattern, layout) for (pattern, layout), n in folded.items()]
        title = {"input": "inputs (fed each step)", "parameter": "parameters",
                 "optimizer state": "optimizer state", "": "all"}[role]
        lines.append(f"  {title}:")
        lines += _table(("path", "layout"), rows[:_MAX_ROWS], indent="    ")[1:]
        if len(rows) > _MAX_ROWS:
            lines.append(f"    ... {len(rows) - _MAX_ROWS} more")
    return lines


def strategies_section(plan) -> list[str]:
    """Every primitive's chosen strategies, dearest primitive first (predicted compute +
    collectives per step), the most used strategies of each."""
    by_prim: dict[str, Counter] = {}
    time_of: Counter = Counter()
    for i, prim in plan.node_primitive.items():
        by_prim.setdefault(prim, Counter())[plan.node_strategy[i]] += 1
        time_of[prim] += plan.node_compute_s.get(i, 0.0) + plan.node_comm_s.get(i, 0.0)
    total = sum(time_of.values())
    rows = []
    for prim in sorted(by_prim, key=lambda q: (-time_of[q], q)):
        counts = by_prim[prim]
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        shown = "; ".join(f"{n} x {name}" for name, n in top[:2])
        if len(top) > 2:
            shown += f"; +{len(top) - 2} more"
        share = f"{100 * time_of[prim] / total:.0f}%" if total > 0 else "-"
        rows.append((prim, str(sum(counts.values())), share, shown))
    if not rows:
        return []
    return ["strategies chosen, per primitive (share of predicted operator time):",
            *_table(("primitive", "ops", "time", "strategies"), rows, right=(1, 2))]


def costly_fallback_section(plan) -> list[str]:
    """At the top: operators with no rule whose replicated layout costs the plan a share of
    the step (shardsearch.fallbacks), with what a rule would save."""
    from shardsearch.fallbacks import costly_fallbacks, fallback_rows

    costly = costly_fallbacks(plan)
    if not costly:
        return []
    saving, total = plan.predicted.fallback_saving_s, plan.predicted.total_s
    share = f" ({saving / total:.0%} of the step)" if total > 0 else ""
    return [f"!! replicated fallback: {len(costly)} operator(s) with no strategy rule move tensors between "
            f"layouts; rules for them would save up to {_fmt_s(saving)} per step{share} "
            f"(columns: count, direct price, bytes moved, shapes, where)",
            *fallback_rows(costly)]


def fallback_section(plan) -> list[str]:
    if not plan.fallback:
        return ["replicated fallback: none (every operator had a strategy rule)"]
    lines = [f"replicated fallback ({len(plan.fallback)} operators with no strategy rule):"]
    by_prim = Counter(f.primitive for f in plan.fallback)
    for prim, n in sorted(by_prim.items()):
        example = next(f for f in plan.fallback if f.primitive == prim)
        shapes = ", ".join(str(list(s)) for s in example.shapes)
        lines.append(f"  {n:>4} x {prim:<20} e.g. -> {shapes}  {example.label}")
    return lines


def legend_section(plan) -> list[str]:
    from shardsearch.reporting.legend import legend_lines

    return legend_lines()


# The summary, section by section (plan -> lines; an empty list is left out). Add a
# section by inserting a function where it belongs.
SUMMARY_SECTIONS = [
    header_section, verdict_section, costly_fallback_section, pipeline_section, prediction_section, search_section, alternatives_section,
    arguments_section, strategies_section, fallback_section, legend_section,
]


def summarize(plan) -> str:
    """``plan.summary()``: the sections of ``SUMMARY_SECTIONS``, a blank line between."""
    blocks = [lines for section in SUMMARY_SECTIONS if (lines := section(plan))]
    out: list[str] = []
    for i, lines in enumerate(blocks):
        if i > 1 or (i == 1 and blocks[0] is not lines):  # the header and verdict stay together
            out.append("")
        out += lines
    return "\n".join(out)


# ----------------------------------------------------------------------------- explain

NO_COSTS = "  (this plan file predates per-operator costs: plan again to see them)"


def _itemsize(dtype_name: str) -> int | None:
    import ml_dtypes  # jax's own dependency: bfloat16, float8, int4 ...
    import numpy as np

    try:
        return np.dtype(getattr(ml_dtypes, dtype_name, dtype_name)).itemsize
    except TypeError:
        return None


def _argument_bytes(plan) -> list[tuple[float, str, str, str]]:
    """(per-device bytes, path, shape/dtype, layout) of each argument leaf it can size."""
    from cost_model.mesh import local_bytes

    avals = plan.in_avals or ((),) * len(plan.in_paths)
    out = []
    for i, (path, spec, aval) in enumerate(zip(plan.in_paths, plan.flat_in_specs, avals)):
        nbytes = plan.in_local_bytes[i] if plan.in_local_bytes else None
        if nbytes is None and aval and _itemsize(aval[1]) is not None:
            nbytes = local_bytes(aval[0], _itemsize(aval[1]), spec, plan.mesh)
        if nbytes is not None:
            what = f"{aval[1]}{list(aval[0])}" if aval else "?"
            out.append((nbytes, path, what, spec_str(spec)))
    return out


def _where(label: str) -> str:
    """A source label without its folders: ``train_mlp.py:32:12 (mlp)``."""
    return re.sub(r"^\S*/", "", label)


def _operator_rows(plan, primitives) -> list[tuple[str, ...]]:
    rows = []
    for i in sorted(plan.node_strategy):
        if primitives and plan.node_primitive[i] not in primitives:
            continue
        outs = " ".join(spec_str(s) for s in plan.node_out_specs.get(i, ()))
        compute = _fmt_s(plan.node_compute_s[i]) if i in plan.node_compute_s else "?"
        comm = plan.node_comm_s.get(i)
        rows.append((str(i), plan.node_primitive[i], plan.node_strategy[i], outs, compute,
                     "-" if comm == 0 else (_fmt_s(comm) if comm is not None else "?"), _where(plan.node_label.get(i, ""))))
    return rows


@dataclasses.dataclass(frozen=True)
class ExplainOptions:
    top: int = 10  # rows in each top-consumers list
    operators: bool = False  # the per-operator table
    primitives: tuple[str, ...] = ()  # limit the operator table to these


def _explain_header(plan, opts) -> list[str]:
    st = plan.stats
    return [*header_section(plan),
            f"solver {st.status}, {st.num_nodes} graph nodes, {len(plan.node_strategy)} operators"
            + ("; read from the plan cache" if st.cached else ""),
            "", *verdict_section(plan), "", *prediction_section(plan)]


def _explain_communication(plan, opts) -> list[str]:
    p = plan.predicted
    comm = sorted(((s, i) for i, s in plan.node_comm_s.items() if s > 0), key=lambda x: (-x[0], x[1]))
    lines = [f"top communication: operators whose strategy pays the most collective time ({len(comm)} pay some)"]
    if not plan.node_comm_s:
        lines.append(NO_COSTS)
    elif comm:
        share = lambda s: f"{100 * s / p.comm_s:.0f}%" if p.comm_s > 0 else "-"  # noqa: E731
        lines += _table(("node", "primitive", "strategy", "collectives", "of comm", "where"), [
            (str(i), plan.node_primitive[i], plan.node_strategy[i], _fmt_s(s), share(s), _where(plan.node_label.get(i, "")))
            for s, i in comm[:opts.top]])
    else:
        lines.append("  none: no operator's strategy communicates")
    return lines


def _explain_memory(plan, opts) -> list[str]:
    from shardsearch.reporting.memory import explain_lines

    if plan.memory_at_peak:
        return explain_lines(plan, opts.top)
    sized = sorted(_argument_bytes(plan), key=lambda x: (-x[0], x[1]))
    lines = ["top memory: largest argument buffers per device (this plan file predates the breakdown of the peak)"]
    if sized:
        total = sum(b for b, *_ in sized)
        lines += _table(("argument", "array", "layout", "per device"),
                        [(path, what, layout, _fmt_bytes(b)) for b, path, what, layout in sized[:opts.top]])
        lines.append(f"  all {len(sized)} arguments: {_fmt_bytes(total)} per device")
    else:
        lines.append("  (this plan file does not record argument shapes)")
    return lines


def _explain_resharding(plan, opts) -> list[str]:
    lines = ["top resharding: tensors moved between layouts on their way to a consumer"]
    if not plan.node_comm_s:
        lines.append(NO_COSTS)
    elif plan.reshard_edges:
        lines += _table(("from", "to", "shape", "layout change", "time"), [
            (e.src_name, e.dst_name, str(list(e.shape)), f"{spec_str(e.from_spec)} -> {spec_str(e.to_spec)}",
             _fmt_s(e.seconds))
            for e in plan.reshard_edges[:opts.top]])
    else:
        lines.append("  none: every operator gets its operands in the layout it needs")
    return lines


def _explain_fallback(plan, opts) -> list[str]:
    if not plan.fallback:
        return []
    return [f"replicated fallback: {len(plan.fallback)} operators with no strategy rule "
            f"({', '.join(sorted({f.primitive for f in plan.fallback}))})"]


def _explain_operators(plan, opts) -> list[str]:
    if not opts.operators:
        return []
    which = f" ({', '.join(opts.primitives)})" if opts.primitives else ""
    return [f"operators{which}: strategy chosen, output layouts, predicted time per step",
            *_table(("node", "primitive", "strategy", "outputs", "compute", "collectives", "where"),
                    _operator_rows(plan, set(opts.primitives)))]


# `explain`, top-down, section by section ((plan, ExplainOptions) -> lines; empty lists
# are left out). Add a section by inserting a function where it belongs.
EXPLAIN_SECTIONS = [
    _explain_header, lambda plan, opts: alternatives_section(plan), _explain_communication, _explain_memory,
    _explain_resharding, _explain_fallback, _explain_operators, lambda plan, opts: legend_section(plan),
]


def explain(plan, *, top: int = 10, operators: bool = False, primitives: tuple[str, ...] = ()) -> str:
    """A plan taken apart, top-down: the verdict and prediction, the alternatives, where the
    communication time goes (operators' own collectives), the largest argument buffers
    per device, the resharding between operators, and with ``operators`` what each
    operator runs as (``primitives`` limits that table)."""
    opts = ExplainOptions(top, operators, tuple(primitives))
    staged = plan.pipeline is not None and plan.pipeline.num_stages > 1
    sections = PIPELINE_SECTIONS if staged else EXPLAIN_SECTIONS
    blocks = [lines for section in sections if (lines := section(plan, opts))]
    return "\n\n".join("\n".join(lines) for lines in blocks)


def _explain_pipeline(plan, opts) -> list[str]:
    from shardsearch.reporting.pipeline import pipeline_lines

    return pipeline_section(plan) + [""] + pipeline_lines(plan, opts.top)


# A pipelined plan's operators live in its stages' programs (each an ordinary plan).
PIPELINE_SECTIONS = [_explain_header, _explain_pipeline, _explain_memory, lambda plan, opts: legend_section(plan)]
