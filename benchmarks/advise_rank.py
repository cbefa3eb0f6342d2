"""Does the advisor rank configurations as the compiled programs do?
python -m benchmarks.advise_rank [--suite gpt moe] [--cluster h100-8 2x4-slow] [--devices 1 2 4 8]

For each scaled-down config of each suite, ``ss.advise`` (every mesh planned to the end)
ranks its configurations (device count x mesh) by predicted step time; every row's plan
is compiled on a fake CPU mesh of its size and priced by the benchmark judge
(``benchmarks.judge``: the optimized HLO priced on the cluster). The agreement is
Kendall's tau-b between the two orders, per config, and per suite as the mean over its
configs weighted by their pairs of rows. Writes benchmarks/results/advise-rank-<cluster>.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CONFIGS = {"gpt": ("gpt-tiny", "gpt-small"), "moe": ("moe-tiny", "moe-small"),
           "bert": ("bert-tiny", "bert-small"), "wresnet": ("wresnet-tiny", "wresnet-small")}


def rank_one(suite: str, config: str, cluster: str, devices: list[int]) -> list[tuple]:
    """(devices, mesh, predicted s, judged s) of every configuration."""
    import shardsearch as ss
    from benchmarks.judge import judge
    from benchmarks.models import get_workload
    from cost_model import Cluster

    w = get_workload(suite, config)
    advice = ss.advise(w.train_step, *w.args, cluster=cluster, devices=devices, prune=False, cache=False,
                       progress=False)
    out = []
    for r in advice.rows:
        compiled = r.auto(w.train_step).lower(*w.args).compile()
        out.append((r.devices, r.mesh, r.step_s, judge(compiled, Cluster.load(cluster)).total_s))
        print(f"  {config} {r.devices} {r.mesh}: predicted {r.step_s * 1e3:.4g} ms, judged {out[-1][3] * 1e3:.4g} ms",
              flush=True)
    return out


def tau(rows: list[tuple]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau([r[2] for r in rows], [r[3] for r in rows]).statistic)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--suite", nargs="+", default=["gpt", "moe"])
    ap.add_argument("--cluster", nargs="+", default=["h100-8", "2x4-slow"])
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    a = ap.parse_args()
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={max(a.devices)}")
    for cluster in a.cluster:
        lines = [f"# Advisor ranking vs the judge: {cluster}, devices {a.devices}", "",
                 "Each config's configurations (device count x mesh, every mesh planned to the end) ranked by the "
                 "advisor's predicted step time and by the benchmark judge's price of the compiled program "
                 "(fake CPU mesh, optimized HLO priced on the cluster). Kendall tau-b: 1 = the same order; "
                 "per suite the mean over its configs weighted by their pairs of rows.", "",
                 "| suite | config | rows | Kendall tau-b |", "|---|---|---|---|"]
        detail = ["", "| config | devices | mesh | predicted ms | judged ms |", "|---|---|---|---|---|"]
        for suite in a.suite:
            taus = []
            for config in CONFIGS[suite]:
                print(f"{suite} {config} on {cluster}", flush=True)
                rows = rank_one(suite, config, cluster, a.devices)
                t = tau(rows)
                pairs = len(rows) * (len(rows) - 1) // 2
                taus.append((t, pairs))
                lines.append(f"| {suite} | {config} | {len(rows)} | {t:.3f} |")
                detail += [f"| {config} | {n} | {mesh} | {p * 1e3:.4g} | {j * 1e3:.4g} |" for n, mesh, p, j in rows]
            suite_tau = sum(t * p for t, p in taus) / sum(p for _, p in taus)
            lines.append(f"| **{suite}** | all | | **{suite_tau:.3f}** |")
            print(f"{suite} on {cluster}: Kendall tau {suite_tau:.3f}", flush=True)
        path = RESULTS / f"advise-rank-{cluster}.md"
        path.write_text("\n".join(lines + detail) + "\n")
        print(f"written {path}")


if __name__ == "__main__":
    main()
