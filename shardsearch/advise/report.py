"""Advice as people read it: a rich table for the terminal, markdown, CSV, JSON, and the
rows' plans as files. Every output names the cluster and the batch mode."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from shardsearch.advise.advice import Advice, Row, RowStatus
from shardsearch.errors import AdviseError

CSV_FIELDS = ("devices", "mesh", "stages", "batch", "step_s", "throughput", "tokens_per_s", "efficiency", "fits",
              "peak_bytes", "needs_bytes", "cost_per_step", "cost_per_million_samples", "cost_per_million_tokens",
              "status", "bound_s", "search_s")
UNKNOWN_SUFFIX = "cannot tell the format of {path!r} from its suffix; use .md, .csv or .json"


def _marks(advice: Advice) -> dict[int, str]:
    """Row index -> the goals it wins ('fastest', 'cheapest') and whether it is on the front."""
    out: dict[int, list[str]] = {}
    if not advice.usable():
        return {}
    index = {id(r): i for i, r in enumerate(advice.rows)}
    for goal in ("fastest", "cheapest"):
        out.setdefault(index[id(advice.best(goal))], []).append(goal)
    for r in advice.pareto():
        out.setdefault(index[id(r)], []).append("pareto")
    return {i: ", ".join(v) for i, v in out.items()}


def _unit(advice: Advice) -> str:
    return "tokens" if advice.batch.seq is not None else "samples"


def header(advice: Advice) -> list[str]:
    price = (f"{advice.price_per_device_hour:g} per device-hour" if advice.price_per_device_hour is not None
             else "no price per device-hour (cost columns empty; 'cheapest' uses device-seconds)")
    notes = [f"not planned: {n}" for n in advice.notes]
    return notes + [
        f"cluster {advice.cluster}; batch mode {advice.batch_mode.value} ({advice.scaling}); "
        f"batch {advice.batch.size}{' per device' if advice.batch_mode.value == 'per_device' else ''}"
        + (f" x {advice.batch.seq} tokens" if advice.batch.seq is not None else ""),
        f"memory {advice.memory_budget / 1e9:.4g} GB per device; {price}; "
        f"swept {len(advice.rows)} configurations in {advice.sweep_s:.1f} s ({advice.cpu_s:.1f} s CPU)",
    ]


def _cells(advice: Advice, r: Row, mark: str) -> list[str]:
    def f(x, fmt):
        return "-" if x is None else format(x, fmt)

    rate = r.tokens_per_s if advice.batch.seq is not None else r.throughput
    per_m = r.cost_per_million_tokens if advice.batch.seq is not None else r.cost_per_million_samples
    step = f">= {r.bound_s * 1e3:.4g}" if r.status is RowStatus.DOMINATED else f"{r.step_s * 1e3:.4g}"
    fits = {True: "yes", None: "?"}.get(r.fits) or (
        f"no (needs {r.needs_bytes / 1e9:.3g} GB)" if r.needs_bytes else "no")
    return [str(r.devices), r.mesh, str(r.batch), step, f(rate, ".4g"), f(r.efficiency, ".2f"),
            "-" if r.peak_bytes is None else f"{r.peak_bytes / 1e9:.3g}", fits, f(r.cost_per_step, ".3g"),
            f(per_m, ".3g"), r.status.value, mark]


def columns(advice: Advice) -> list[str]:
    unit = _unit(advice)
    return ["devices", "mesh", "batch", "step ms", f"{unit}/s", "efficiency", "peak GB", "fits", "cost/step",
            f"cost/M {unit}", "status", "best"]


def rich_table(advice: Advice):
    from rich.table import Table

    table = Table(title="shardsearch advise: how many devices?", caption="\n".join(header(advice)),
                  caption_justify="left")
    for c in columns(advice):
        # fold, never cut: a narrow terminal wraps a number rather than hiding its digits
        table.add_column(c, justify="right" if c not in ("mesh", "fits", "status", "best") else "left",
                         overflow="fold")
    marks = _marks(advice)
    for i, r in enumerate(advice.rows):
        style = "bold" if "fastest" in marks.get(i, "") or "cheapest" in marks.get(i, "") else (
            "dim" if not r.usable else None)
        table.add_row(*_cells(advice, r, marks.get(i, "")), style=style)
    return table


def text(advice: Advice) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=160, record=True)
    console.print(rich_table(advice))
    return console.export_text()


def markdown(advice: Advice) -> str:
    marks = _marks(advice)
    cols = columns(advice)
    lines = ["# shardsearch advise: how many devices?", ""] + [f"- {h}" for h in header(advice)] + [""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cells(advice, r, marks.get(i, ""))) + " |" for i, r in enumerate(advice.rows)]
    if advice.usable():
        fast, cheap = advice.best("fastest"), advice.best("cheapest")
        lines += ["", f"Fastest: {fast.devices} devices as {fast.mesh} ({fast.step_s * 1e3:.4g} ms/step). "
                      f"Cheapest per sample: {cheap.devices} devices as {cheap.mesh} "
                      f"({cheap.step_s * 1e3:.4g} ms/step, efficiency {cheap.efficiency:.2f})."]
    lines += ["", "Dominated rows were not solved to the end: the solver proved they are no faster than a "
                  "fitting mesh with the same devices (so no cheaper either). Efficiency is throughput per "
                  "device relative to the fastest mesh of the smallest count."]
    return "\n".join(lines) + "\n"


def csv_text(advice: Advice) -> str:
    out = io.StringIO()
    out.write("".join(f"# {h}\n" for h in header(advice)))
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in advice.rows:
        writer.writerow({**r.to_dict(), "mesh": r.mesh, "status": r.status.value})
    return out.getvalue()


def as_dict(advice: Advice, plan_paths: dict | None = None) -> dict:
    rows = []
    for r in advice.rows:
        d = r.to_dict()
        if plan_paths is not None:
            path = plan_paths.get((r.devices, r.mesh_shape, r.stages))
            d["plan_path"] = None if path is None else str(path)
        rows.append(d)
    return {
        "cluster": advice.cluster, "batch_mode": advice.batch_mode.value, "scaling": advice.scaling,
        "batch": advice.batch.size, "tokens_per_sample": advice.batch.seq, "memory_budget": advice.memory_budget,
        "price_per_device_hour": advice.price_per_device_hour, "sweep_s": advice.sweep_s, "cpu_s": advice.cpu_s,
        "notes": list(advice.notes), "rows": rows,
    }


def save_plans(advice: Advice, folder) -> dict:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for r in advice.rows:
        if r.plan is not None:
            stages = f"-{r.stages}stages" if r.stages > 1 else ""
            path = folder / f"plan-{r.devices}-{'x'.join(map(str, r.mesh_shape))}{stages}.json"
            r.plan.save(path)
            paths[(r.devices, r.mesh_shape, r.stages)] = path
    return paths


def save(advice: Advice, path, *, plans=None) -> None:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".md", ".csv", ".json"):
        raise AdviseError(UNKNOWN_SUFFIX.format(path=str(path)))
    paths = save_plans(advice, plans) if plans is not None else None
    if suffix == ".md":
        path.write_text(markdown(advice))
    elif suffix == ".csv":
        path.write_text(csv_text(advice))
    else:
        path.write_text(json.dumps(as_dict(advice, paths), indent=1) + "\n")
