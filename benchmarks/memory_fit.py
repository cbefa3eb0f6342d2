"""Fitting a memory budget: the GPT step of issue 13 under budgets below data parallel's.

    python -m benchmarks.memory_fit [--fractions 0.75 0.5 0.35] [--cluster h100-8] [--out PATH]
    python -m benchmarks.memory_fit --gpt39b [--compile] [--target gpu|cpu]   (64 fake devices: run it alone)

The step (hidden 4096, 32 heads, 2 layers, batch 16, seq 1024, vocab 51200, SGD) on a
(2, 4) mesh of fake CPU devices: data parallel compiled as jax.jit gives the reference
memory (``memory_analysis``, per device); for each fraction of it, ``ss.auto`` with that
``memory_budget`` (remat and microbatches chosen by the search, no user jax.checkpoint)
is planned, compiled and judged on the cluster beside data parallel. Writes a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def run(fractions, cluster_name: str, say=print) -> list[dict]:
    import shardsearch as ss
    from benchmarks.baselines import Baseline, compile_baseline
    from benchmarks.judge.price import judge
    from benchmarks.memory_fidelity import wide_gpt
    from benchmarks.runner import make_mesh
    from cost_model import Cluster
    from shardsearch.fidelity import compiled_peak_bytes

    cluster = Cluster.load(cluster_name)
    w = wide_gpt("gpt-h4096-s1024")
    mesh = make_mesh((2, 4))
    t = time.process_time()
    dp = compile_baseline(w, mesh, Baseline.DATA_PARALLEL)
    dp_mem, dp_s = compiled_peak_bytes(dp), judge(dp, cluster).total_s
    say(f"data parallel: {dp_mem / 2**30:.3f} GiB, judged {dp_s * 1e3:.2f} ms ({time.process_time() - t:.0f} s CPU)")
    rows = [dict(fraction=1.0, budget=None, how="data parallel (jax.jit)", compiled=dp_mem, judged=dp_s,
                 predicted=None, plan_s=None)]
    for f in fractions:
        budget = f * dp_mem
        t = time.process_time()
        step = ss.auto(w.train_step, mesh=mesh, cluster=cluster, memory_budget=budget, cache=False, compare=False,
                       pipeline=None)
        try:
            plan = step.plan_for(*w.args)
        except ss.MemoryBudgetError as err:
            say(f"{f}: {err}")
            rows.append(dict(fraction=f, budget=budget, how=f"MemoryBudgetError: {str(err)[:120]}", compiled=None,
                             judged=None, predicted=None, plan_s=time.process_time() - t))
            continue
        plan_s = time.process_time() - t
        compiled = step.lower(*w.args).compile()
        mem, judged = compiled_peak_bytes(compiled), judge(compiled, cluster).total_s
        how = []
        if plan.remat is not None:
            how.append(f"remat {plan.remat.policy} (layers {','.join(map(str, plan.remat.layers))})")
        if plan.pipeline is not None:
            how.append(f"{plan.pipeline.num_microbatches} microbatches")
        row = dict(fraction=f, budget=budget, how="; ".join(how) or "sharding only", compiled=mem, judged=judged,
                   predicted=plan.predicted.total_s, plan_s=plan_s)
        say(f"{f}: {row}")
        rows.append(row)
    return rows


def run_gpt39b(compile_it: bool, say=print, target: str = "gpu", **options) -> dict:
    """GPT-39B widths (hidden 8192, 64 heads, seq 1024, vocab 51200), 12 layers, batch 32,
    SGD, on an (8, 8) mesh planned for h100-8x8-ib with a 10 GiB budget per device, compiled
    for ``target``: "gpu" (the cluster's H100s, deviceless: the bar for a GPU preset; seconds)
    or "cpu" (the 64 fake devices: many minutes of codegen on 2 cores). ``options``: more
    search options (``remat="nothing_saveable"``, ``sharded_updates=True``, ...)."""
    import optax

    import shardsearch as ss
    from benchmarks.models import gpt
    from benchmarks.runner import make_mesh
    from shardsearch.fidelity import compiled_peak_bytes

    cfg = gpt.GPTConfig("gpt-39B-12L", hidden=8192, heads=64, seq=1024, vocab=51200, layers=12, batch=32)
    w = gpt.make_workload(cfg, optax.sgd(1e-3))
    mesh = make_mesh((8, 8))
    t, wall = time.process_time(), time.perf_counter()
    step = ss.auto(w.train_step, mesh=mesh, cluster="h100-8x8-ib", memory_budget="10GiB", cache=False, compare=False,
                   pipeline=None, **options)  # the whole-mesh plan (pipeline="auto" may cut the step into stages)
    plan = step.plan_for(*w.args)
    out = dict(plan_cpu_s=time.process_time() - t, plan_wall_s=time.perf_counter() - wall, remat=plan.remat,
               microbatches=plan.pipeline and plan.pipeline.num_microbatches, predicted_s=plan.predicted.total_s,
               predicted_peak=plan.predicted.peak_bytes)
    if compile_it:
        t = time.process_time()
        if target == "gpu":
            from shardsearch.target import target_mesh

            step = plan.apply(w.train_step, mesh=target_mesh("h100-8x8-ib", (8, 8)))
        out["compiled_peak"] = compiled_peak_bytes(step.lower(*w.args).compile())
        out["compiled_for"], out["compile_cpu_s"] = target, time.process_time() - t
    say(str(out))
    return out


def markdown(rows, cluster: str) -> str:
    dp = rows[0]
    gib = lambda b: "" if b is None else f"{b / 2**30:.3f}"  # noqa: E731
    lines = [f"GPT step (hidden 4096, 2 layers, batch 16, seq 1024, vocab 51200, SGD) on a (2, 4) mesh, judged on "
             f"{cluster}; memory is XLA's memory_analysis() of the CPU program per device (arguments + results + "
             "temporaries - aliases); plan time in process CPU seconds on the shared 2-core machine.", "",
             "| budget (x DP) | budget GiB | plan | compiled GiB | within | judged ms | x DP time | predicted ms "
             "| plan s |", "|---|---|---|---|---|---|---|---|---|"]
    ms = lambda x: "" if x is None else f"{x * 1e3:.2f}"  # noqa: E731
    for r in rows:
        within = "" if r["budget"] is None or r["compiled"] is None else ("yes" if r["compiled"] <= r["budget"] else "NO")
        ratio = "" if r["judged"] is None else f"{r['judged'] / dp['judged']:.2f}"
        plan_s = "" if r["plan_s"] is None else f"{r['plan_s']:.0f}"
        lines.append(f"| {r['fraction']:.2f} | {gib(r['budget'])} | {r['how']} | {gib(r['compiled'])} | {within} "
                     f"| {ms(r['judged'])} | {ratio} | {ms(r['predicted'])} | {plan_s} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    import os

    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    ap = argparse.ArgumentParser()
    ap.add_argument("--fractions", type=float, nargs="*", default=[0.75, 0.5, 0.35])
    ap.add_argument("--cluster", default="h100-8")
    ap.add_argument("--out", default=str(RESULTS / "memory.md"))
    ap.add_argument("--gpt39b", action="store_true", help="the 64-device GPT-39B-width case instead")
    ap.add_argument("--compile", action="store_true", help="with --gpt39b: compile the plan too")
    ap.add_argument("--target", choices=("gpu", "cpu"), default="gpu",
                    help="with --gpt39b --compile: the cluster's GPUs (deviceless) or the fake CPU devices")
    ap.add_argument("--remat", help="with --gpt39b: every layer recomputed with this policy")
    ap.add_argument("--sharded-updates", action="store_true", help="with --gpt39b: SearchConfig.sharded_updates")
    ap.add_argument("--no-accumulate", action="store_true", help="with --gpt39b: the whole batch only")
    a = ap.parse_args(argv)
    if a.gpt39b:
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=64"
        os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the CUDA plugin loads without a GPU only so
        options = dict(sharded_updates=a.sharded_updates, accumulate=not a.no_accumulate)
        if a.remat:
            options["remat"] = a.remat
        run_gpt39b(a.compile, target=a.target, **options)
        return
    rows = run(a.fractions, a.cluster)
    Path(a.out).write_text("# Fitting memory budgets (issue 13)\n\n" + markdown(rows, a.cluster))


if __name__ == "__main__":
    main()
