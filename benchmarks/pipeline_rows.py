"""Issue 12's table 2 rows, cheaply: a pinned pipeline, shardsearch's best plan without stages,
the hand Megatron 3-D recipe and the best flat hand baselines (data parallel, 2-D data x
tensor: the fastest fitting ones in the full suite runs), judged as the suite runner judges
them, appended to a JSON-lines file.

    python -m benchmarks.pipeline_rows --cluster 2x4-slow --mesh 2x4 --config gpt-350M-8L \\
        --target gpu --out benchmarks/results/pipeline-rows.jsonl

``--target gpu``: every program (each stage's too) compiled for the cluster's GPUs
(deviceless) and judged with overlap, the bar for a GPU preset; ``cpu``: fake CPU devices.
``--only-pipelines``: the pinned pipeline and the hand 3-D rows alone (what a change to
the pipeline runtime or its pricing moves; the flat rows stay as they were measured).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pipeline_rows", description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default="gpt")
    ap.add_argument("--config", required=True)
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--mesh", required=True, help="e.g. 2x4")
    ap.add_argument("--stages", type=int, default=2, help="shardsearch's pinned number of stages")
    ap.add_argument("--target", choices=("cpu", "gpu"), default="gpu")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only-pipelines", action="store_true", help="no flat rows (shardsearch's, hand baselines)")
    ap.add_argument("--microbatches", type=int, default=None, help="pin the pipeline's M too")
    a = ap.parse_args(argv)
    shape = tuple(int(t) for t in a.mesh.split("x"))
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the CUDA plugin loads without a GPU only so
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={math.prod(shape)}").strip()
    from benchmarks.baselines import Baseline
    from benchmarks.runner import run_config
    from cost_model import Cluster

    t0 = time.process_time()
    flat = () if a.only_pipelines else (Baseline.DATA_PARALLEL, Baseline.DP_X_TP)
    rows = run_config(a.suite, a.config, Cluster.load(a.cluster), shape, target=a.target, pipeline=a.stages,
                      wallclock=False, baselines=flat, reference=False, intra_op=not a.only_pipelines,
                      num_microbatches=a.microbatches)
    with a.out.open("a") as f:
        for r in rows:
            f.write(json.dumps(dataclasses.asdict(r)) + "\n")
    for r in rows:
        step = r.overlap_s if r.overlap_s is not None else r.total_s
        print(f"{r.strategy:32s} {step * 1e3:9.2f} ms (compute {r.compute_s * 1e3:.2f}) {r.pipeline or ''} "
              f"{r.pipeline_ms or ''}")
    print(f"process CPU {time.process_time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
