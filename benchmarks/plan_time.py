"""Trace + plan time against depth: python -m benchmarks.plan_time [--layers 1 2 4 8] [--mesh 2x4]
[--config gpt-350M]

Writes benchmarks/results/plan-time-<config>-<cluster>.md and .png (GPT at the config's
widths, AdamW), with the ILP's size before and after reduction and where the time goes
(process CPU and wall seconds per stage, benchmarks/stage_times.py). Each depth is
planned twice and the second run reported (the first pays jax's and numpy's warm-up).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def measure(layers: list[int], mesh: tuple[int, ...], cluster: str, config: str = "gpt-tiny",
            batch: int | None = None, time_limit_s: float = 600.0, memory_budget=None) -> list[tuple]:
    import shardsearch as ss
    from benchmarks.models import gpt

    from benchmarks.stage_times import stage_times

    rows = []
    for n in layers:
        cfg = dataclasses.replace(gpt.CONFIGS[config], name=f"{config}-{n}L", layers=n)
        cfg = dataclasses.replace(cfg, batch=batch) if batch else cfg
        w = gpt.make_workload(cfg)
        runs = []
        for _ in range(2):  # the first run also pays jax's tracing caches and numpy's warm-up
            with stage_times() as times:
                # time the search alone: compare=False skips pricing the recipes for plan.alternatives()
                plan = ss.plan(w.train_step, *w.args, mesh=mesh, cluster=cluster, cache=False, compare=False,
                               time_limit_s=time_limit_s, memory_budget=memory_budget,
                               pipeline=None)  # the intra-op search (pipeline_time.py times stages)
            runs.append(times)
        first, times = runs
        st = plan.stats
        rows.append((n, times.total_wall, st.num_nodes, st.unreduced_variables, st.unreduced_constraints,
                     st.reduced_nodes, st.num_variables, st.num_constraints, st.status, times.total_cpu, times,
                     first.total_cpu, first.total_wall))
        print(f"{n} layers: {times.total_cpu:.1f} s CPU ({times.total_wall:.1f} s wall); first run in the process "
              f"{first.total_cpu:.1f} s CPU ({first.total_wall:.1f} s wall), {st.num_nodes} nodes "
              f"(an ILP of {st.unreduced_variables} variables, {st.unreduced_constraints} constraints) -> ILP of "
              f"{st.reduced_nodes} nodes ({st.num_variables} variables, {st.num_constraints} constraints), "
              f"{st.status}", flush=True)
        for stage, cpu, wall, calls in times.rows():
            print(f"    {stage:24s} {cpu:7.2f} s CPU {wall:7.2f} s wall" + (f"  ({calls} calls)" if calls > 1 else ""))
    return rows


def load_note() -> str:
    """The machine's load while measuring (other developers share it)."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return ""
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--mesh", default="2x4")
    ap.add_argument("--cluster", default="h100-8")
    ap.add_argument("--config", default="gpt-tiny", help="GPT config whose widths to use (depth varies)")
    ap.add_argument("--batch", type=int, default=None, help="override the config's batch size")
    # The solver's limit is wall-clock: on a loaded machine the default 30 s stops the MIP
    # early and hands back the local-search plan, and the CPU figure would leave it out.
    ap.add_argument("--time-limit-s", type=float, default=600.0, help="the search's time_limit_s (wall)")
    # A budget the plans never reach ("1000%") times the search alone; the default (the
    # device's memory) includes fitting a step whose fastest plan does not fit.
    ap.add_argument("--memory-budget", default=None, help="ss.plan's memory_budget (default: the device's memory)")
    a = ap.parse_args()
    mesh = tuple(int(t) for t in a.mesh.split("x"))
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    rows = measure(a.layers, mesh, a.cluster, a.config, a.batch, a.time_limit_s, a.memory_budget)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"plan-time-{a.config}-{a.cluster}"
    batch = f", batch {a.batch}" if a.batch else ""
    lines = [f"# Trace + plan time vs depth (GPT at {a.config} widths{batch}, AdamW, mesh {a.mesh}, {a.cluster})", "",
             "Repeated layers are tied (every other copy shares the first two copies' strategies); "
             "'before' is the MIP of the whole graph, 'after' the one solved after reduction and tying. "
             "CPU = this process's CPU time (time.process_time; the search is single-threaded), the "
             f"figure that holds on a shared machine; wall beside it. Each depth is planned twice in one "
             "process: the table gives the second run, and the first (which also fills jax's tracing caches) "
             f"beside it. time_limit_s={a.time_limit_s:g} (wall), so every MIP runs to its end on a loaded machine. "
             f"memory_budget={a.memory_budget or 'the device memory'}. "
             f"Measured with {load_note()}.", "",
             "| layers | graph nodes | plan s CPU | plan s wall | first run s CPU / wall | variables before "
             "| constraints before | ILP nodes after | variables after | constraints after | solver status |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {nodes} | {cpu:.1f} | {s:.1f} | {fc:.1f} / {fw:.1f} | {uv} | {uc} | {core} | {nv} | {nc} "
              f"| {status} |" for n, s, nodes, uv, uc, core, nv, nc, status, cpu, _, fc, fw in rows]
    lines += ["", "## Where the time goes (s CPU / s wall)", "",
              "| stage | " + " | ".join(f"{r[0]} layers" for r in rows) + " |",
              "|---|" + "---|" * len(rows)]
    stages = [stage for stage, *_ in rows[0][10].rows()]
    for stage in stages:
        cells = []
        for r in rows:
            got = {s: (c, w) for s, c, w, _ in r[10].rows()}
            c, w = got.get(stage, (0.0, 0.0))
            cells.append(f"{c:.2f} / {w:.2f}")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    stem.with_suffix(".md").write_text("\n".join(lines) + f"\n\n![plan time]({stem.name}.png)\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r[0] for r in rows], [r[9] for r in rows], "o-", label="CPU")
    ax.plot([r[0] for r in rows], [r[1] for r in rows], "s--", label="wall")
    ax.legend()
    ax.set_xlabel("layers")
    ax.set_ylabel("trace + plan time (s)")
    ax.set_title(f"shardsearch plan time, mesh {a.mesh}")
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    print(f"written {stem}.md")


if __name__ == "__main__":
    main()
