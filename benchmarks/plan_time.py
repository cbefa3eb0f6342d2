"""Trace + plan time against depth: python -m benchmarks.plan_time [--layers 1 2 4 8] [--mesh 2x4]
[--config gpt-350M]

Writes benchmarks/results/plan-time-<config>-<cluster>.md and .png (GPT at the config's
widths, AdamW), with the ILP's size before and after reduction.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def measure(layers: list[int], mesh: tuple[int, ...], cluster: str, config: str = "gpt-tiny",
            batch: int | None = None) -> list[tuple]:
    import shardsearch as ss
    from benchmarks.models import gpt

    rows = []
    for n in layers:
        cfg = dataclasses.replace(gpt.CONFIGS[config], name=f"{config}-{n}L", layers=n)
        cfg = dataclasses.replace(cfg, batch=batch) if batch else cfg
        w = gpt.make_workload(cfg)
        t0 = time.perf_counter()
        # time the search alone: compare=False skips pricing the recipes for plan.alternatives()
        plan = ss.plan(w.train_step, *w.args, mesh=mesh, cluster=cluster, cache=False, compare=False)
        st = plan.stats
        rows.append((n, time.perf_counter() - t0, st.num_nodes, st.unreduced_variables, st.unreduced_constraints,
                     st.reduced_nodes, st.num_variables, st.num_constraints, st.status))
        print(f"{n} layers: {rows[-1][1]:.1f} s, {st.num_nodes} nodes (an ILP of {st.unreduced_variables} variables, "
              f"{st.unreduced_constraints} constraints) -> ILP of {st.reduced_nodes} nodes "
              f"({st.num_variables} variables, {st.num_constraints} constraints), {st.status}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--mesh", default="2x4")
    ap.add_argument("--cluster", default="h100-8")
    ap.add_argument("--config", default="gpt-tiny", help="GPT config whose widths to use (depth varies)")
    ap.add_argument("--batch", type=int, default=None, help="override the config's batch size")
    a = ap.parse_args()
    mesh = tuple(int(t) for t in a.mesh.split("x"))
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    rows = measure(a.layers, mesh, a.cluster, a.config, a.batch)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"plan-time-{a.config}-{a.cluster}"
    batch = f", batch {a.batch}" if a.batch else ""
    lines = [f"# Trace + plan time vs depth (GPT at {a.config} widths{batch}, AdamW, mesh {a.mesh}, {a.cluster})", "",
             "Repeated layers are tied (every other copy shares the first two copies' strategies); "
             "'before' is the MIP of the whole graph, 'after' the one solved after reduction and tying. "
             "One run on this 2-core machine.", "",
             "| layers | graph nodes | plan s | variables before | constraints before | ILP nodes after "
             "| variables after | constraints after | solver status |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {nodes} | {s:.1f} | {uv} | {uc} | {core} | {nv} | {nc} | {status} |"
              for n, s, nodes, uv, uc, core, nv, nc, status in rows]
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
