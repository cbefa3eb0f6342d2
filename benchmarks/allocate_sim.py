"""Sharing a cluster between jobs: python -m benchmarks.allocate_sim [--cluster h100-2x8-ib]
[--jobs 24] [--seed 0] [--restart-s 60] [--replan]

Each benchmark model below is swept by ``ss.advise`` on the cluster (1, 2, 4, ... devices,
global batch); its fastest fitting mesh per count is its speedup curve (``Job.from_advice``;
its minimum is the smallest count that fits). A trace of jobs (model drawn at random,
Poisson arrivals, each to run the steps that take it 10 min to 2 h alone on the whole
cluster) is replayed against shardsearch's allocation, equal share and first-come
exclusive (``shardsearch.advise.simulate``); a resized job pays ``--restart-s`` to
checkpoint and restart under its new plan. Writes benchmarks/results/allocation.md and .png
(allocation-<cluster>.* for another cluster); the curves are kept in
allocation-curves-<cluster>.json (``--replan`` redoes them).
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DEFAULT_CLUSTER = "h100-2x8-ib"
MODELS = (("gpt", "gpt-350M"), ("gpt", "gpt-small"), ("bert", "bert-base"), ("moe", "moe-380M"),
          ("wresnet", "wresnet-250M"), ("mlp", "mlp-dp"), ("mlp", "mlp-tp"), ("moe", "moe-small"))


def curves(cluster: str, replan: bool, models=MODELS) -> dict:
    """Each model's speedup curve, from the saved file where it has it (``replan``: none);
    the file is written after each model swept, so an interrupted run resumes."""
    path = RESULTS / f"allocation-curves-{cluster}.json"
    out = {} if replan or not path.exists() else json.loads(path.read_text())
    import shardsearch as ss
    from benchmarks.models import get_workload
    from shardsearch.advise import Job

    for suite, config in models:
        if config in out:
            continue
        w = get_workload(suite, config)
        # a generous time limit: curves of the planner's optima, not of what a loaded machine reached
        advice = ss.advise(w.train_step, *w.args, cluster=cluster, progress=False, time_limit_s=300)
        job = Job.from_advice(config, advice)
        out[config] = {"throughput": dict(job.throughput), "batch": job.batch, "min_devices": job.min_devices,
                       "meshes": {n: list(m) for n, m in job.meshes}, "sweep_cpu_s": advice.cpu_s}
        print(f"{config}: min {job.min_devices} devices, samples/s " +
              ", ".join(f"{n}: {r:.4g}" for n, r in job.throughput), flush=True)
        saved = json.loads(path.read_text()) if path.exists() else {}  # another run may add models too
        path.write_text(json.dumps({**saved, **out}, indent=1) + "\n")
    return {k: v for k, v in json.loads(path.read_text()).items() if k in {c for _, c in models}}


def make_trace(models: dict, count: int, seed: int, mean_gap_s: float):
    """Jobs drawn at random from ``models``, Poisson arrivals; the same seed draws the same
    jobs and sizes at every gap (only the arrival times scale)."""
    from shardsearch.advise.allocate import Job
    from shardsearch.advise.simulate import TraceJob

    rng = random.Random(seed)
    names = sorted(models)
    trace, t = [], 0.0
    for i in range(count):
        name = names[rng.randrange(len(names))]
        m = models[name]
        job = Job(f"{i:02d}-{name}", {int(n): r for n, r in m["throughput"].items()}, batch=m["batch"],
                  min_devices=m["min_devices"])
        alone = max(job.steps_per_s(n) for n, _ in job.throughput)
        minutes = math.exp(rng.uniform(math.log(10), math.log(120)))
        trace.append(TraceJob(job, t, max(1, round(minutes * 60 * alone))))
        t += rng.expovariate(1.0 / mean_gap_s)
    return trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cluster", default=DEFAULT_CLUSTER)
    ap.add_argument("--jobs", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    # every 300 s the queue only grows (jobs of 10 min to 2 h of the whole cluster); every 1800 s it drains
    ap.add_argument("--mean-gap-s", type=float, nargs="+", default=[300.0, 1800.0])
    ap.add_argument("--restart-s", type=float, default=60.0)
    ap.add_argument("--replan", action="store_true")
    ap.add_argument("--models", nargs="+", default=[c for _, c in MODELS], help="configs of the trace's jobs")
    a = ap.parse_args()
    from shardsearch.advise.simulate import POLICIES, simulate

    models = curves(a.cluster, a.replan, [(s, c) for s, c in MODELS if c in a.models])
    by_gap = {}
    for gap in a.mean_gap_s:
        trace = make_trace(models, a.jobs, a.seed, gap)
        by_gap[gap] = {p: simulate(trace, a.cluster, p, restart_s=a.restart_s) for p in POLICIES}
    lines = [f"# Sharing {a.cluster} between {a.jobs} jobs: shardsearch's allocation vs equal share vs first come",
             "", f"Trace: seed {a.seed}, {a.jobs} jobs drawn from {len(models)} benchmark models, Poisson arrivals "
             "(mean gap below), each job the steps that take it 10 min to 2 h (log-uniform) alone on the whole "
             f"cluster; a resized job pays {a.restart_s:.0f} s to restart from its checkpoint. Jobs' speedup "
             "curves: `ss.advise` of each model (global batch), its fastest fitting mesh per device count. "
             "shardsearch: `ss.allocate` re-run at every arrival and finish; equal: every job present an equal "
             "share (the largest size it may take); fcfs: first come, exclusive, each job on the count of its "
             "fastest configuration until it finishes.", "",
             "| mean gap (s) | policy | mean JCT (min) | median JCT (min) | p90 JCT (min) | makespan (min) "
             "| device utilization | restarts |",
             "|---|---|---|---|---|---|---|---|"]
    for gap, results in by_gap.items():
        for p, r in results.items():
            jct = sorted(r.jct_s.values())
            lines.append(f"| {gap:.0f} | {p} | {r.mean_jct_s / 60:.1f} | {jct[len(jct) // 2] / 60:.1f} | "
                         f"{jct[int(0.9 * (len(jct) - 1))] / 60:.1f} | {r.makespan_s / 60:.1f} | "
                         f"{r.utilization:.1%} | {r.restarts} |")
    lines += ["", "Device utilization: device-seconds allocated to jobs over devices x makespan (a job on more "
              "devices than it uses well counts as busy: fcfs gives each job the whole cluster).", "",
              "| model | min devices | samples/s by devices (mesh) |", "|---|---|---|"]
    for name, m in sorted(models.items()):
        lines.append(f"| {name} | {m['min_devices']} | " + ", ".join(
            f"{n}: {float(r):.4g} ({'x'.join(map(str, m['meshes'].get(n, '?')))})" for n, r in m["throughput"].items())
            + " |")
    lines += [f"\n{name}: {m['note']}." for name, m in sorted(models.items()) if m.get("note")]
    stem = RESULTS / ("allocation" if a.cluster == DEFAULT_CLUSTER else f"allocation-{a.cluster}")
    lines += ["", f"![policies]({stem.name}.png)"]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    plot(by_gap, stem.with_suffix(".png"), a.cluster)
    print("\n".join(lines))


def plot(by_gap: dict, path: Path, cluster: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(by_gap), 3, figsize=(12, 3.4 * len(by_gap)), squeeze=False)
    colors = ["tab:blue", "tab:orange", "tab:gray"]
    for (gap, results), (left, mid, right) in zip(by_gap.items(), axes):
        names = list(results)
        left.bar(names, [results[p].mean_jct_s / 60 for p in names], color=colors)
        left.set_ylabel("mean job completion time (min)")
        left.set_title(f"a job every {gap:.0f} s on average", fontsize=9)
        mid.bar(names, [results[p].utilization for p in names], color=colors)
        mid.set_ylabel("device utilization")
        mid.set_ylim(0, 1)
        for p, c in zip(names, colors):
            jct = sorted(v / 60 for v in results[p].jct_s.values())
            right.step(jct, [(i + 1) / len(jct) for i in range(len(jct))], where="post", color=c, label=p)
        right.set_xlabel("job completion time (min)")
        right.set_ylabel("fraction of jobs")
        right.legend(fontsize=8)
    jobs = len(next(iter(next(iter(by_gap.values())).values())).jct_s)
    fig.suptitle(f"{jobs} jobs on {cluster}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
