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
import os
import sys
from pathlib import Path

from benchmarks.fidelity_gpu import DEFAULT_GPU_CONFIGS

RESULTS = Path(__file__).parent / "results"
DEFAULT_TARGETS = ("h100-8=2x4", "h100-2x8-ib=2x8")
SUITES = ("gpt", "bert", "moe", "wresnet")


def load_rows(path: Path) -> list:
    from benchmarks.runner import Row

    if not path.exists():
        return []
    return [Row(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_target", description=__doc__)
    ap.add_argument("--suite", action="append", default=None, choices=SUITES)
    ap.add_argument("--config", action="append", default=None, help="config names; default: the suite's GPU one")
    ap.add_argument("--cluster", action="append", default=None, help="CLUSTER=MESH, e.g. h100-8=2x4")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--report-only", action="store_true", help="only write the markdown from the saved rows")
    a = ap.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the CUDA plugin loads without a GPU only so
    a.out.mkdir(parents=True, exist_ok=True)
    saved = a.out / "gpu_target.jsonl"
    if not a.report_only:
        from benchmarks.runner import run_config
        from cost_model import Cluster

        done = {(r.suite, r.config, r.cluster, r.mesh) for r in load_rows(saved)}
        for suite in a.suite or SUITES:
            for config in a.config or DEFAULT_GPU_CONFIGS[suite]:
                for target in a.cluster or DEFAULT_TARGETS:
                    name, mesh = target.split("=")
                    shape = tuple(int(t) for t in mesh.split("x"))
                    if (suite, config, name, mesh) in done:
                        continue
                    rows = run_config(suite, config, Cluster.load(name), shape, target="gpu", pipeline=None)
                    with saved.open("a") as f:
                        for r in rows:
                            f.write(json.dumps(dataclasses.asdict(r)) + "\n")
    from benchmarks.gpu_target_report import write

    print(f"report written to {write(load_rows(saved), a.out / 'gpu_target.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
