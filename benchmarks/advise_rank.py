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
    # a generous time limit: the rows should be the planner's optima, not what a loaded machine reached
    advice = ss.advise(w.train_step, *w.args, cluster=cluster, devices=devices, prune=False, cache=False,
                       progress=False, time_limit_s=300)
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


def pick_regret(rows: list[tuple]) -> float:
    """The judged step of the advisor's fastest pick over the judged fastest: 1.0 when the
    advisor's pick is the compiled programs' fastest too (what a user of ``best()`` gets)."""
    pick = min(rows, key=lambda r: (r[2], r[0]))
    return pick[3] / min(r[3] for r in rows)


def tau_within(rows: list[tuple], tolerance: float = 0.01) -> float:
    """Kendall tau-b where two times within ``tolerance`` (relative) of each other tie: a
    0.1% difference in a prediction is below the cost model's resolution, and the judge
    often prices two configurations' programs identically."""
    def cmp(a, b):
        return 0 if abs(a - b) <= tolerance * max(abs(a), abs(b)) else (1 if a > b else -1)

    concordant = tied_x = tied_y = total = 0
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            x, y = cmp(rows[i][2], rows[j][2]), cmp(rows[i][3], rows[j][3])
            total += 1
            tied_x += x == 0
            tied_y += y == 0
            concordant += x * y
    denom = ((total - tied_x) * (total - tied_y)) ** 0.5
    return concordant / denom if denom else float("nan")


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
                 "per suite the mean over its configs weighted by their pairs of rows. The last column counts "
                 "two times within 1% of each other as a tie (below the cost model's resolution).", "",
                 "The pick column: the judged step time of the advisor's fastest configuration over the judged "
                 "fastest (1.000: the advisor's pick is the fastest compiled program).", "",
                 "| suite | config | rows | Kendall tau-b | tau-b, ties within 1% | pick |",
                 "|---|---|---|---|---|---|"]
        detail = ["", "| config | devices | mesh | predicted ms | judged ms |", "|---|---|---|---|---|"]
        for suite in a.suite:
            taus, loose = [], []
            for config in CONFIGS[suite]:
                print(f"{suite} {config} on {cluster}", flush=True)
                rows = rank_one(suite, config, cluster, a.devices)
                t, t1 = tau(rows), tau_within(rows)
                pairs = len(rows) * (len(rows) - 1) // 2
                taus.append((t, pairs))
                loose.append((t1, pairs))
                lines.append(f"| {suite} | {config} | {len(rows)} | {t:.3f} | {t1:.3f} | {pick_regret(rows):.3f} |")
                detail += [f"| {config} | {n} | {mesh} | {p * 1e3:.4g} | {j * 1e3:.4g} |" for n, mesh, p, j in rows]
            suite_tau = sum(t * p for t, p in taus) / sum(p for _, p in taus)
            suite_loose = sum(t * p for t, p in loose) / sum(p for _, p in loose)
            lines.append(f"| **{suite}** | all | | **{suite_tau:.3f}** | **{suite_loose:.3f}** | |")
            print(f"{suite} on {cluster}: Kendall tau {suite_tau:.3f} ({suite_loose:.3f} with 1% ties)", flush=True)
        path = RESULTS / f"advise-rank-{cluster}.md"
        path.write_text("\n".join(lines + detail) + "\n")
        print(f"written {path}")


if __name__ == "__main__":
    main()
