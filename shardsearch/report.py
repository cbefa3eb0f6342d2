"""Readable views of a Plan."""

from __future__ import annotations

from collections import Counter

from cost_model.mesh import spec_str

_MAX_ROWS = 24


def _fmt_s(s: float) -> str:
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.1f} us"


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if b < 1024 or unit == "TiB":
            return f"{b:.1f} {unit}" if unit != "B" else f"{int(b)} B"
        b /= 1024
    return ""


def summarize(plan) -> str:
    mesh = " x ".join(f"{n}={s}" for n, s in zip(plan.mesh.axis_names, plan.mesh.axis_sizes))
    p, st = plan.predicted, plan.stats
    lines = [
        f"shardsearch plan  mesh [{mesh}]  cluster {plan.cluster}  program {plan.program_hash}",
        f"predicted step: {_fmt_s(p.total_s)} (compute {_fmt_s(p.compute_s)}, communication {_fmt_s(p.comm_s)}), "
        f"resident arguments {_fmt_bytes(p.peak_bytes)} per device",
        f"search: {st.num_nodes} graph nodes -> {st.reduced_nodes} ILP nodes, {st.num_variables} variables, "
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
