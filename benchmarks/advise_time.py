"""How long the advisor's sweep takes: python -m benchmarks.advise_time [--config gpt-350M]
[--cluster h100-8x8-ib] [--max-devices 64] [--workers 2] [--no-prune-too]

Sweeps every device count 1, 2, 4, ... and every mesh of each (``ss.advise``, plan cache
off) for a GPT at the config's widths (24 layers for gpt-350M, AdamW), and writes
benchmarks/results/advise-<config>-<cluster>.md (the advice, per-configuration search time,
wall and CPU time of the sweep) and .png (the advice's plot). The machine is shared, so
the CPU time of the sweep (this process and its workers) is the figure to compare; wall
time is reported too. The sweep runs once in this process and once shared between
``--workers`` spawned processes, side by side.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def gpt_350m():
    """``shardsearch advise benchmarks.advise_time:gpt_350m ...``: the 24-layer GPT step
    (hidden 1024, AdamW, batch 32 x 1024 tokens) and its abstract arguments."""
    from benchmarks.models import gpt

    w = gpt.make_workload(gpt.CONFIGS["gpt-350M"])
    return w.train_step, w.args


def one_plan(config: str, cluster: str, time_limit: float) -> tuple[float, float]:
    import shardsearch as ss
    from benchmarks.models import gpt

    w = gpt.make_workload(gpt.CONFIGS[config])
    t0, c0 = time.perf_counter(), time.process_time()
    # as the sweep plans each row: without the recipes priced beside it
    ss.plan(w.train_step, *w.args, mesh=(8, 8), cluster=cluster, cache=False, compare=False, time_limit_s=time_limit,
            pipeline=None)  # as the sweep plans each mesh
    return time.perf_counter() - t0, time.process_time() - c0


def sweep(config: str, cluster: str, max_devices: int, prune: bool, workers: int = 1, time_limit: float = 300.0):
    import shardsearch as ss
    from benchmarks.models import gpt

    w = gpt.make_workload(gpt.CONFIGS[config])
    t0 = time.perf_counter()
    target = "benchmarks.advise_time:gpt_350m" if config == "gpt-350M" else None
    advice = ss.advise(w.train_step, *w.args, cluster=cluster, max_devices=max_devices, cache=False, prune=prune,
                       workers=workers, target=target, time_limit_s=time_limit)
    return advice, time.perf_counter() - t0, advice.cpu_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="gpt-350M")
    ap.add_argument("--cluster", default="h100-8x8-ib")
    ap.add_argument("--max-devices", type=int, default=64)
    ap.add_argument("--no-prune-too", action="store_true", help="also time the sweep that plans every mesh to the end")
    ap.add_argument("--workers", type=int, default=2, help="processes for the side-by-side parallel sweep (1: none)")
    # wall-clock limits: generous, so that a loaded machine measures the planner's optima, not its timeouts
    ap.add_argument("--time-limit", type=float, default=300.0, help="solver time limit per configuration, s")
    a = ap.parse_args()
    one_wall, one_cpu = one_plan(a.config, a.cluster, a.time_limit)
    advice, wall, cpu = sweep(a.config, a.cluster, a.max_devices, prune=True, time_limit=a.time_limit)
    print(advice)
    print(f"sweep: {len(advice.rows)} configurations, {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    lines = [f"# Advisor sweep time: {a.config} (AdamW), 1..{a.max_devices} devices, every mesh, {a.cluster}", "",
             f"One `ss.advise` call, plan cache off, solver time limit {a.time_limit:g} s per configuration, on "
             f"this shared 2-core machine: **{cpu:.1f} s CPU** "
             f"(time.process_time of the single-threaded sweep), {wall:.1f} s wall, for {len(advice.rows)} "
             "configurations (trace once; meshes the solver proves no faster than a fitting mesh with as many "
             "devices stop at their bound: 'dominated'). For scale, in the same process one `ss.plan` of the "
             f"same step on an 8x8 mesh (trace + search, compare=False as in the sweep) took {one_cpu:.1f} s CPU "
             f"({one_wall:.1f} s wall): the sweep costs {cpu / one_cpu:.1f} such plans.", ""]
    if a.workers > 1:
        shared, swall, scpu = sweep(a.config, a.cluster, a.max_devices, prune=True, workers=a.workers,
                                    time_limit=a.time_limit)
        print(f"with {a.workers} workers: {swall:.1f} s wall, {scpu:.1f} s CPU (all processes)", flush=True)
        same = all(x.step_s == y.step_s and x.status == y.status for x, y in zip(advice.rows, shared.rows))
        lines += [f"The same sweep shared between {a.workers} spawned worker processes (`workers={a.workers}`, "
                  f"`--workers {a.workers}`), run right after: {swall:.1f} s wall, {scpu:.1f} s CPU over all "
                  f"processes (each worker imports jax and traces the step itself); "
                  f"{'the same rows' if same else 'rows differ (time limits hit on the loaded machine)'}.", ""]
    if a.no_prune_too:
        full, fwall, fcpu = sweep(a.config, a.cluster, a.max_devices, prune=False, time_limit=a.time_limit)
        print(f"without pruning: {fwall:.1f} s wall, {fcpu:.1f} s CPU", flush=True)
        lines += [f"Planning every mesh to the end (`prune=False`) takes {fcpu:.1f} s CPU ({fwall:.1f} s wall); "
                  f"pruning saves {1 - cpu / fcpu:.0%} of the CPU time and picks the same best rows: fastest "
                  f"{full.best('fastest').devices} devices as {full.best('fastest').mesh}, cheapest "
                  f"{full.best('cheapest').devices} as {full.best('cheapest').mesh}.", ""]
    lines += ["| devices | mesh | status | solver | search s (wall) |", "|---|---|---|---|---|"]
    lines += [f"| {r.devices} | {r.mesh} | {r.status.value} | {r.plan.stats.status if r.plan else 'cutoff'} | "
              f"{r.search_s:.2f} |" for r in advice.rows]
    stem = RESULTS / f"advise-{a.config}-{a.cluster}"
    body = advice.to_markdown().replace("# shardsearch advise: how many devices?", "## The advice")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n\n" + body + f"\n![advice]({stem.name}.png)\n")
    advice.plot(stem.with_suffix(".png"))
    print(f"written {stem}.md")


if __name__ == "__main__":
    main()
