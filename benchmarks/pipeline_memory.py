"""Memory of pipelined plans: python -m benchmarks.pipeline_memory [--cases gpt-test gpt-350M-8L] [--stages 2 4]

For each case and stage count S, ``ss.plan(..., pipeline=S)`` on a (2, 4) mesh of
``2x4-slow``, its stage programs compiled for fake CPU devices (nothing runs), and per
stage: the plan's predicted peak (``plan.pipeline.stages[s].peak_bytes``: its largest
program's) next to the largest ``memory_analysis()`` peak of the stage's compiled programs
(arguments + results + temporaries - aliases, per device), and the worst single program's
error (``plan.fidelity(compiled)``). Writes benchmarks/results/pipeline-memory.md.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
MESH, CLUSTER = (2, 4), "2x4-slow"


def case(name: str):
    """(train step, args) of a case: "gpt-test" is tests/models gpt (4 layers, AdamW), else a
    benchmark GPT config."""
    if name == "gpt-test":
        import sys

        sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
        from models import gpt as test_gpt

        c = test_gpt.make(layers=4, abstract=True)
        return c.train_step, c.args
    from benchmarks.models import gpt

    w = gpt.make_workload(gpt.CONFIGS[name])
    return w.train_step, w.args


def measure(name: str, num_stages: int) -> list[dict]:
    import jax
    import numpy as np
    from jax.sharding import AxisType, Mesh

    import shardsearch as ss

    fn, args = case(name)
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(MESH), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    c0 = time.process_time()
    plan = ss.plan(fn, *args, mesh=mesh, cluster=CLUSTER, cache=False, pipeline=num_stages)
    compiled = plan.apply(fn, mesh=mesh).lower(*args).compile()
    cpu_s = time.process_time() - c0
    report = plan.fidelity(compiled)
    p = plan.pipeline
    rows = []
    for st_plan, st in zip(p.stages, report.stages):
        worst_key, worst = max(((k, f) for k, f in st.programs.items()), key=lambda kf: abs(kf[1].memory_error))
        compiled_peak = st.compiled_peak_bytes
        rows.append(dict(case=name, stages=p.num_stages, m=p.num_microbatches, stage=st.stage,
                         layers=st_plan.layers, predicted=st_plan.peak_bytes, compiled=compiled_peak,
                         error=(st_plan.peak_bytes - compiled_peak) / compiled_peak,
                         worst=f"{worst_key} {worst.memory_error:+.1%}", cpu_s=cpu_s))
    print(report, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", nargs="+", default=["gpt-test", "gpt-350M-8L"])
    ap.add_argument("--stages", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--out", type=Path, default=RESULTS / "pipeline-memory.md")
    a = ap.parse_args()
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    mib = lambda b: f"{b / 2**20:,.0f}" if b >= 100 * 2**20 else f"{b / 2**20:.3g}"  # noqa: E731
    lines = ["# Pipelined plans: predicted vs compiled memory per stage", "",
             f"`ss.plan(..., pipeline=S)` on a {MESH[0]}x{MESH[1]} mesh of `{CLUSTER}`, every stage program compiled "
             "for fake CPU devices; per device. Predicted = `plan.pipeline.stages[s].peak_bytes` (the stage's "
             "largest program); compiled = the largest `memory_analysis()` peak of the stage's programs "
             "(arguments + results + temporaries - aliases); worst program = the stage program whose own "
             "prediction (`plan.fidelity`) is furthest off. gpt-test: tests/models gpt with 4 layers, AdamW "
             "(tests/test_stage_memory.py checks 2 layers, even stages). "
             "CPU s: plan + compile of every stage program, process CPU time on a shared 2-core machine.", "",
             "| case | S | M | stage | layer units | predicted MiB | compiled MiB | error | worst program | CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in a.cases:
        for s in a.stages:
            for r in measure(name, s):
                lines.append(f"| {r['case']} | {r['stages']} | {r['m']} | {r['stage']} | {r['layers'][0]}-"
                             f"{r['layers'][1]} | {mib(r['predicted'])} | {mib(r['compiled'])} | "
                             f"{r['error']:+.1%} | {r['worst']} | {r['cpu_s']:.0f} |")
                print(lines[-1], flush=True)
    a.out.parent.mkdir(exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
