"""Plan time with pipeline stages: python -m benchmarks.pipeline_time [--layers 24 96]
[--meshes 2x8:h100-2x8-ib 8x8:h100-8x8-ib] [--config gpt-350M] [--dp-only]

Two measurements, process CPU time (single-threaded work on a shared 2-core machine):
- the stage DP alone (``pipeline.stage_search``) on 2 + L units (embedding, L layers, head)
  with additive synthetic costs, for each M the search tries, on each mesh;
- ``ss.plan(..., pipeline="auto")`` of GPT at the config's widths: the whole-mesh search,
  pricing the layer units on every submesh, the DP, and planning the chosen stages.
Writes benchmarks/results/pipeline-time-<config>.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def dp_time(units: int, devices: int, per_node: int, cluster) -> tuple[float, int]:
    """CPU seconds of the stage DP over every M the search tries, and the stages it picks."""
    from shardsearch.pipeline.choose import MICROBATCH_COUNTS
    from shardsearch.pipeline.stage_search import Links, StageCosts, search_stages, submesh_choices

    subs = submesh_choices(devices, per_node)
    size = np.array([s.size for s in subs], dtype=float)
    work = np.full(units, 1e-3)
    work[0], work[-1] = 2e-4, 5e-4  # embedding, head
    cum = np.concatenate([[0.0], np.cumsum(work)])
    span = (cum[None, :] - cum[:, None])[:units, :, None] / size ** 0.85
    count = (np.arange(units + 1)[None, :] - np.arange(units)[:, None])[:, :, None] + 0 * size
    costs = StageCosts(time=span, step_time=span * 0.05, static_bytes=count * 2e9 / size,
                       activation_bytes=count * 5e8 / size, temp_bytes=np.full(span.shape, 1e9),
                       cut_bytes=np.concatenate([[0.0], np.full(units - 1, 8e6), [0.0]]))
    t0 = time.process_time()
    best = None
    for m in MICROBATCH_COUNTS:
        got = search_stages(costs, num_devices=devices, devices_per_node=per_node, links=Links.of(cluster),
                            num_microbatches=m, memory_budget=cluster.memory_bytes)
        best = got if best is None or (got and got.step_s < best.step_s) else best
    return time.process_time() - t0, best.num_stages if best else 0


def plan_time(layers: int, mesh: tuple[int, ...], cluster: str, config: str, time_limit_s: float = 600.0) -> dict:
    import shardsearch as ss
    from benchmarks.models import gpt

    from shardsearch.pipeline import choose

    cfg = dataclasses.replace(gpt.CONFIGS[config], name=f"{config}-{layers}L", layers=layers)
    w = gpt.make_workload(cfg)
    stage = {}
    original = choose.choose_pipeline

    def timed(*args, **kwargs):  # the stage search (units priced on submeshes + the DP), timed apart
        c = time.process_time()
        d = original(*args, **kwargs)
        stage.update(cpu_s=time.process_time() - c, solves=d.solves, dp_s=d.dp_s)
        return d

    choose.choose_pipeline = timed
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        plan = ss.plan(w.train_step, *w.args, mesh=mesh, cluster=cluster, cache=False, compare=False,
                       pipeline="auto", time_limit_s=time_limit_s)
    finally:
        choose.choose_pipeline = original
    return dict(wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0, why=plan.pipeline_why,
                total_s=plan.predicted.total_s, stage_cpu_s=stage.get("cpu_s", 0.0), solves=stage.get("solves", 0),
                status=plan.stats.status)


def main() -> None:
    from benchmarks.plan_time import load_note
    from cost_model import Cluster

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, nargs="+", default=[24, 96])
    ap.add_argument("--meshes", nargs="+", default=["2x8:h100-2x8-ib", "8x8:h100-8x8-ib"])
    ap.add_argument("--config", default="gpt-350M")
    ap.add_argument("--dp-only", action="store_true", help="time the stage DP alone")
    # wall-clock: on a loaded machine the default 30 s stops the whole-mesh MIP early and the
    # CPU figure leaves it out (the unit solves keep their own 10 s limit)
    ap.add_argument("--time-limit-s", type=float, default=600.0, help="the search's time_limit_s (wall)")
    a = ap.parse_args()
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    lines = [f"# Plan time with pipeline stages (GPT at {a.config} widths, AdamW)", "",
             f"Process CPU seconds, one run each on a shared 2-core machine, time_limit_s={a.time_limit_s:g} (wall), "
             f"{load_note()}. 'DP' is the stage DP "
             "alone over every M the search tries (synthetic additive costs, the cluster's memory "
             "as budget); 'plan' is ss.plan(..., pipeline=\"auto\") end to end, and of it 'stage search' the "
             "pricing of layer units on submeshes (intra-op solves, 'solves' of them) and the DP; the rest is the "
             "whole-mesh search (its solver status beside it: FEASIBLE where its wall-clock limit stopped the MIP).",
             "",
             "| layers | mesh | cluster | DP CPU s | stages (DP) | plan CPU s | plan wall s | stage search CPU s "
             "| unit solves | whole-mesh status | decision |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for spec in a.meshes:
        shape, cluster = spec.split(":")
        mesh = tuple(int(t) for t in shape.split("x"))
        cl = Cluster.load(cluster)
        for n in a.layers:
            dp_s, stages = dp_time(n + 2, int(np.prod(mesh)), min(cl.devices_per_node, int(np.prod(mesh))), cl)
            row = dict(cpu_s=float("nan"), wall_s=float("nan"), why="(not run)", stage_cpu_s=float("nan"),
                       solves=0, status="")
            if not a.dp_only:
                row = plan_time(n, mesh, cluster, a.config, a.time_limit_s)
            print(f"{n} layers on {shape} ({cluster}): DP {dp_s:.2f} s CPU ({stages} stages); plan "
                  f"{row['cpu_s']:.1f} s CPU, {row['wall_s']:.1f} s wall; {row['why']}", flush=True)
            lines.append(f"| {n} | {shape} | {cluster} | {dp_s:.2f} | {stages} | {row['cpu_s']:.1f} | "
                         f"{row['wall_s']:.1f} | {row['stage_cpu_s']:.1f} | {row['solves']} | {row['status']} "
                         f"| {row['why']} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"pipeline-time-{a.config}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
