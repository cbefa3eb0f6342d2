"""The advice as a figure: step time against devices (with linear scaling for reference)
and cost per sample against step time, the Pareto front marked."""

from __future__ import annotations

from shardsearch.advise.advice import Advice, RowStatus


def plot(advice: Advice, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    timed = [r for r in advice.rows if r.step_s is not None]
    fits = [r for r in timed if r.status is RowStatus.PLANNED]
    over = [r for r in timed if r.status is RowStatus.OVER_MEMORY]
    left.scatter([r.devices for r in fits], [r.step_s * 1e3 for r in fits], s=18, color="tab:blue",
                 label="a mesh that fits")
    if over:
        left.scatter([r.devices for r in over], [r.step_s * 1e3 for r in over], s=22, marker="x", color="tab:red",
                     label="does not fit in memory")
    counts = sorted({r.devices for r in timed})
    fastest = [min((r for r in timed if r.devices == n), key=lambda r: r.step_s) for n in counts]
    left.plot(counts, [r.step_s * 1e3 for r in fastest], "-", color="tab:blue", alpha=0.6,
              label="fastest mesh per count")
    base = min(fastest, key=lambda r: r.devices)
    per_device = base.batch / base.step_s / base.devices  # samples/s per device at the base
    left.plot(counts, [r.batch / (per_device * r.devices) * 1e3 for r in fastest], ":", color="gray",
              label="linear scaling")
    front = sorted(advice.pareto(), key=lambda r: r.step_s)
    if front:
        left.scatter([r.devices for r in front], [r.step_s * 1e3 for r in front], s=70, facecolors="none",
                     edgecolors="tab:orange", linewidths=1.5, label="Pareto front (faster or cheaper)")
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_xticks(counts, [str(n) for n in counts])
    left.set_xlabel("devices")
    left.set_ylabel("predicted step time (ms)")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)

    priced = advice.price_per_device_hour is not None
    unit = "tokens" if advice.batch.seq is not None else "samples"

    def cost(r):
        if priced:
            return r.cost_per_million_tokens if advice.batch.seq is not None else r.cost_per_million_samples
        return r.device_s_per_sample

    right.scatter([r.step_s * 1e3 for r in fits], [cost(r) for r in fits], s=18, color="tab:blue")
    labels: dict[tuple, list[str]] = {}  # meshes that plan alike share a point: one label
    for r in fits:
        point = (float(f"{r.step_s * 1e3:.4g}"), float(f"{cost(r):.4g}"))
        labels.setdefault(point, []).append(f"{r.devices}:{r.mesh}")
    for point, names in labels.items():
        right.annotate(", ".join(names), point, fontsize=6, alpha=0.7, xytext=(2, 2), textcoords="offset points")
    if front:
        right.plot([r.step_s * 1e3 for r in front], [cost(r) for r in front], "o-", color="tab:orange",
                   label="Pareto front (faster or cheaper)")
        right.legend(fontsize=8)
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("predicted step time (ms)")
    right.set_ylabel(f"cost per million {unit}" if priced else "device-seconds per sample")
    right.grid(alpha=0.3)
    fig.suptitle(f"{advice.cluster}, batch mode {advice.batch_mode.value}: {advice.scaling}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
