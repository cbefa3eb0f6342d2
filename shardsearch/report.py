"""Readable views of a Plan."""

from __future__ import annotations

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


def summarize(plan) -> str:
    mesh = " x ".join(f"{n}={s}" for n, s in zip(plan.mesh.axis_names, plan.mesh.axis_sizes))
    p, st = plan.predicted, plan.stats
    lines = [
        f"shardsearch plan  mesh [{mesh}]  cluster {plan.cluster}  program {plan.program_hash}",
        f"predicted step: {_fmt_s(p.total_s)} (compute {_fmt_s(p.compute_s)}, communication {_fmt_s(p.comm_s)}), "
        f"resident arguments {_fmt_bytes(p.peak_bytes)} per device",
        f"search: {st.num_nodes} graph nodes{_unreduced(st)} -> {st.reduced_nodes} ILP nodes, {st.num_variables} variables, "
        f"{st.num_constraints} constraints; solver {st.status} in {st.solve_s:.2f} s "
        f"(objective {_fmt_s(st.objective)}, bound {_fmt_s(st.bound)}); total search {st.search_s:.2f} s",
        "",
        "arguments:",
    ]
    rows = list(zip(plan.in_paths, plan.flat_in_specs))
    for path, spec in rows[:_MAX_ROWS]:
        lines.append(f"  {path:<40} {spec_str(spec)}")
    if len(rows) > _MAX_ROWS:
        lines.append(f"  ... {len(rows) - _MAX_ROWS} more")
    counts = Counter((plan.node_primitive[i], plan.node_strategy[i]) for i in plan.node_strategy)
    heavy = sorted(((prim, name, n) for (prim, name), n in counts.items() if prim == "dot_general"), key=str)
    if heavy:
        lines += ["", "dot_general strategies chosen:"]
        lines += [f"  {n:>4} x {name}" for prim, name, n in heavy[:_MAX_ROWS]]
    lines.append("")
    if plan.fallback:
        lines.append(f"replicated fallback ({len(plan.fallback)} operators with no strategy rule):")
        by_prim = Counter(f.primitive for f in plan.fallback)
        for prim, n in sorted(by_prim.items()):
            example = next(f for f in plan.fallback if f.primitive == prim)
            shapes = ", ".join(str(list(s)) for s in example.shapes)
            lines.append(f"  {n:>4} x {prim:<20} e.g. -> {shapes}  {example.label}")
    else:
        lines.append("replicated fallback: none (every operator had a strategy rule)")
    return "\n".join(lines)


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


def explain(plan, *, top: int = 10, operators: bool = True, primitives: tuple[str, ...] = ()) -> str:
    """A plan taken apart: what each operator runs as, where the communication time goes
    (operators' own collectives, resharding between them), and the largest argument
    buffers per device. ``primitives`` limits the operator table to those primitives."""
    mesh = " x ".join(f"{n}={s}" for n, s in zip(plan.mesh.axis_names, plan.mesh.axis_sizes))
    p, st = plan.predicted, plan.stats
    lines = [
        f"shardsearch plan  mesh [{mesh}]  cluster {plan.cluster}  program {plan.program_hash}",
        f"predicted step: {_fmt_s(p.total_s)} (compute {_fmt_s(p.compute_s)}, communication {_fmt_s(p.comm_s)})",
        f"solver {st.status}, {st.num_nodes} graph nodes, {len(plan.node_strategy)} operators"
        + ("; read from the plan cache" if st.cached else ""),
    ]
    if operators:
        rows = _operator_rows(plan, set(primitives))
        which = f" ({', '.join(primitives)})" if primitives else ""
        lines += ["", f"operators{which}: strategy chosen, output layouts, predicted time per step"]
        lines += _table(("node", "primitive", "strategy", "outputs", "compute", "collectives", "where"), rows)

    has_costs = bool(plan.node_comm_s)
    comm = sorted(((s, i) for i, s in plan.node_comm_s.items() if s > 0), key=lambda x: (-x[0], x[1]))
    lines += ["", f"top communication: operators whose strategy pays the most collective time "
                  f"({len(comm)} pay some)"]
    if not has_costs:
        lines.append(NO_COSTS)
    elif comm:
        share = lambda s: f"{100 * s / p.comm_s:.0f}%" if p.comm_s > 0 else "-"  # noqa: E731
        lines += _table(("node", "primitive", "strategy", "collectives", "of comm", "where"), [
            (str(i), plan.node_primitive[i], plan.node_strategy[i], _fmt_s(s), share(s), _where(plan.node_label.get(i, "")))
            for s, i in comm[:top]])
    else:
        lines.append("  none: no operator's strategy communicates")

    lines += ["", "top resharding: tensors moved between layouts on their way to a consumer"]
    if not has_costs:
        lines.append(NO_COSTS)
    elif plan.reshard_edges:
        lines += _table(("from", "to", "shape", "layout change", "time"), [
            (e.src_name, e.dst_name, str(list(e.shape)), f"{spec_str(e.from_spec)} -> {spec_str(e.to_spec)}",
             _fmt_s(e.seconds))
            for e in plan.reshard_edges[:top]])
    else:
        lines.append("  none: every operator gets its operands in the layout it needs")

    sized = sorted(_argument_bytes(plan), key=lambda x: (-x[0], x[1]))
    lines += ["", "top memory: largest argument buffers per device"]
    if sized:
        total = sum(b for b, *_ in sized)
        lines += _table(("argument", "array", "layout", "per device"),
                        [(path, what, layout, _fmt_bytes(b)) for b, path, what, layout in sized[:top]])
        lines.append(f"  all {len(sized)} arguments: {_fmt_bytes(total)} per device")
    else:
        lines.append("  (this plan file does not record argument shapes)")
    if plan.fallback:
        lines += ["", f"replicated fallback: {len(plan.fallback)} operators with no strategy rule "
                      f"({', '.join(sorted({f.primitive for f in plan.fallback}))})"]
    return "\n".join(lines)
