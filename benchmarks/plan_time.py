"""Trace + plan time against depth: python -m benchmarks.plan_time [--layers 1 2 4 8] [--mesh 2x4]

Writes benchmarks/results/plan-time-<cluster>.md and .png (GPT at gpt-tiny widths).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def measure(layers: list[int], mesh: tuple[int, ...], cluster: str) -> list[tuple[int, float, int, str]]:
    import shardsearch as ss
    from benchmarks.models import gpt

    rows = []
    for n in layers:
        cfg = dataclasses.replace(gpt.CONFIGS["gpt-tiny"], name=f"gpt-tiny-{n}L", layers=n)
        w = gpt.make_workload(cfg)
        t0 = time.perf_counter()
        plan = ss.plan(w.train_step, *w.args, mesh=mesh, cluster=cluster, cache=False)  # time the search
        rows.append((n, time.perf_counter() - t0, plan.stats.num_nodes, plan.stats.status))
        print(f"{n} layers: {rows[-1][1]:.1f} s, {plan.stats.num_nodes} nodes, {plan.stats.status}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--mesh", default="2x4")
    ap.add_argument("--cluster", default="h100-8")
    a = ap.parse_args()
    mesh = tuple(int(t) for t in a.mesh.split("x"))
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    rows = measure(a.layers, mesh, a.cluster)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"plan-time-{a.cluster}"
    lines = [f"# Trace + plan time vs depth (GPT at gpt-tiny widths, mesh {a.mesh}, {a.cluster})", "",
             "| layers | graph nodes | plan s | solver status |", "|---|---|---|---|"]
    lines += [f"| {n} | {nodes} | {s:.1f} | {status} |" for n, s, nodes, status in rows]
    stem.with_suffix(".md").write_text("\n".join(lines) + f"\n\n![plan time]({stem.name}.png)\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r[0] for r in rows], [r[1] for r in rows], "o-")
    ax.set_xlabel("layers")
    ax.set_ylabel("trace + plan time (s)")
    ax.set_title(f"shardsearch plan time, mesh {a.mesh}")
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    print(f"written {stem}.md")


if __name__ == "__main__":
    main()
