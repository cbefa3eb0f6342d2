"""GPU-target rows of every suite: compiled for the cluster's GPUs without them, judged with overlap.

python -m benchmarks.gpu_target [--suite gpt ...] [--cluster h100-8=2x4 --cluster h100-2x8-ib=2x8]

For each suite's GPU config (``fidelity_gpu.DEFAULT_GPU_CONFIGS``, medium widths in bf16) and
each (cluster, mesh): shardsearch's plan and every applicable hand baseline, each compiled
deviceless for the cluster's GPUs (``shardsearch.target``; jax's CUDA plugin) and judged by
``benchmarks.judge.gpu``: without overlap (compute + every collective), with overlap (the
scheduled program replayed on two clocks), exposed communication, the fraction hidden, XLA's
latency-hiding scheduler's own estimate, and GPU memory from ``memory_analysis()``.
Rows are appended to ``<out>/gpu_target.jsonl`` as each program is judged (a long run can be
resumed: a (suite, config, cluster, mesh) group already there is skipped), and
``<out>/gpu_target.md`` is written from all of them (``benchmarks.gpu_target_report``).
Needs shardsearch[gpu-aot].
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from pathlib import Path

from benchmarks.fidelity_gpu import DEFAULT_GPU_CONFIGS

RESULTS = Path(__file__).parent / "results"
DEFAULT_TARGETS = ("h100-8=2x4", "h100-2x8-ib=2x8")
SUITES = ("gpt", "bert", "moe", "wresnet")
TIME_LIMIT_S = 600.0  # the search's, for --replan


def load_rows(path: Path) -> list:
    from benchmarks.runner import Row

    if not path.exists():
        return []
    return [Row(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def replan(saved: Path, suites, configs, targets) -> None:
    """The shardsearch row of each saved group (of these suites, configs, ``CLUSTER=MESH``
    targets; None: all) planned, compiled and judged again; the file is rewritten."""
    import time

    import shardsearch as ss
    from benchmarks.judge import compile_with_estimate, judge_gpu
    from benchmarks.models import get_workload
    from benchmarks.runner import SHARDSEARCH, _row
    from cost_model import Cluster
    from shardsearch.target import target_mesh

    rows = load_rows(saved)
    for i, r in enumerate(rows):
        if r.strategy != SHARDSEARCH or (suites and r.suite not in suites) or (configs and r.config not in configs) \
                or (targets and f"{r.cluster}={r.mesh}" not in targets):
            continue
        cluster, workload = Cluster.load(r.cluster), get_workload(r.suite, r.config)
        mesh = target_mesh(cluster, tuple(int(t) for t in r.mesh.split("x")))
        t0 = time.perf_counter()
        # solved to its end, not to the wall clock: on a loaded machine 30 s stopped moe-medium-bf16's
        # two-node search at a plan predicted 8.81 ms (5.68 ms when it runs to optimality)
        step = ss.auto(workload.train_step, mesh=mesh, cluster=cluster, cache=False, pipeline=None,
                       time_limit_s=TIME_LIMIT_S)
        plan = step.plan_for(*workload.args)
        t1 = time.perf_counter()
        compiled, estimate = compile_with_estimate(step.lower(*workload.args))
        judged = judge_gpu(compiled, cluster, xla_estimate_s=estimate)
        base = {k: getattr(r, k) for k in ("suite", "config", "cluster", "mesh", "strategy", "target")}
        rows[i] = _row(base, judged, cluster, r.ideal_s, time.perf_counter() - t1, plan_s=t1 - t0,
                       predicted_s=plan.predicted.total_s, predicted_compute_s=plan.predicted.compute_s,
                       predicted_comm_s=plan.predicted.comm_s)
        print(f"  {r.config} {r.mesh} ({r.cluster}): shardsearch again: judged {judged.overlap_s * 1e3:.3f} ms "
              f"(was {r.overlap_s * 1e3:.3f}), predicted {plan.predicted.total_s * 1e3:.3f} ms "
              f"(was {r.predicted_s * 1e3:.3f})", file=sys.stderr, flush=True)
        saved.write_text("".join(json.dumps(dataclasses.asdict(x)) + "\n" for x in rows))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_target", description=__doc__)
    ap.add_argument("--suite", action="append", default=None, choices=SUITES)
    ap.add_argument("--config", action="append", default=None, help="config names; default: the suite's GPU one")
    ap.add_argument("--cluster", action="append", default=None, help="CLUSTER=MESH, e.g. h100-8=2x4")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--report-only", action="store_true", help="only write the markdown from the saved rows")
    ap.add_argument("--replan", action="store_true",
                    help="plan, compile and judge the shardsearch rows of saved groups again (after a cost "
                         "model change), keeping their baselines")
    a = ap.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the CUDA plugin loads without a GPU only so
    a.out.mkdir(parents=True, exist_ok=True)
    saved = a.out / "gpu_target.jsonl"
    if not a.report_only:
        from benchmarks.runner import run_config
        from cost_model import Cluster

        done = {(r.suite, r.config, r.cluster, r.mesh) for r in load_rows(saved)}
        if a.replan:
            replan(saved, a.suite, a.config, a.cluster)
        for suite in a.suite or SUITES:
            for config in a.config or DEFAULT_GPU_CONFIGS[suite]:
                for target in a.cluster or DEFAULT_TARGETS:
                    name, mesh = target.split("=")
                    shape = tuple(int(t) for t in mesh.split("x"))
                    if (suite, config, name, mesh) in done or a.replan:
                        continue
                    cluster = Cluster.load(name)
                    # across nodes the replicated program is no contender and the slowest compile
                    rows = run_config(suite, config, cluster, shape, target="gpu", pipeline=None, megatron_3d=False,
                                      reference=math.prod(shape) <= cluster.devices_per_node)
                    with saved.open("a") as f:
                        for r in rows:
                            f.write(json.dumps(dataclasses.asdict(r)) + "\n")
    from benchmarks.gpu_target_report import write

    print(f"report written to {write(load_rows(saved), a.out / 'gpu_target.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
