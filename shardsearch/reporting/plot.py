"""``plan.plot(path)``: the plan as one figure (matplotlib, imported when called).

Three panels, each read left to right in program order:

- *weights*: each parameter array (argument order: a stack's layers in turn), one row
  per dim, colored by the mesh axes that split it (grey: whole on every device);
- *activations*: the output of each contraction (dot_general, convolution) in program
  order, the forward pass then the backward pass, one row per dim, colored the same way;
- *time*: where the predicted step time goes per stretch of the program that ends at
  one contraction: compute, the operators' own collectives, and resharding into them.
"""

from __future__ import annotations

from collections import Counter

HEAVY = ("dot_general", "conv_general_dilated")
SHORT = {"dot_general": "dot", "conv_general_dilated": "conv"}
REPLICATED = (0.85, 0.85, 0.85)
MAX_COLUMNS = 120  # thin columns stay readable: beyond this, columns are sampled evenly


def _layout_colors(specs) -> dict[tuple[str, ...], tuple]:
    import matplotlib

    palette = matplotlib.colormaps["tab10"].colors
    kinds = sorted({tuple(axes) for spec in specs for axes in spec if axes})
    return {kind: palette[i % len(palette)] for i, kind in enumerate(kinds)}


def _sample(items: list, limit: int = MAX_COLUMNS) -> list:
    if len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def _grid(ax, columns, colors, title, xlabel):
    """One colored cell per (column, dim): columns = [(label, spec)]."""
    import numpy as np

    rank = max((len(spec) for _, spec in columns), default=1) or 1
    image = np.ones((rank, max(len(columns), 1), 3))
    for x, (_, spec) in enumerate(columns):
        for d in range(rank):
            axes = tuple(spec[d]) if d < len(spec) else None
            image[d, x] = (1, 1, 1) if axes is None else colors.get(axes, REPLICATED) if axes else REPLICATED
    ax.imshow(image, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(rank), [f"dim {d}" for d in range(rank)])
    ax.set_title(title, loc="left", fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    if len(columns) <= 40:
        ax.set_xticks(range(len(columns)), [label for label, _ in columns], rotation=90, fontsize=6)
    else:
        ax.set_xticks([])


def _label(name: str, limit: int = 28) -> str:
    """A tick label short enough to leave room for the grid: the end of the name counts most."""
    return name if len(name) <= limit else "..." + name[-(limit - 3):]


def _segments(plan) -> list[tuple[str, float, float, float]]:
    """(label, compute, collectives, resharding) per stretch of operators ending at a
    contraction (the last stretch ends at the step's last operator)."""
    into = Counter()
    for e in plan.reshard_edges:
        into[e.dst] += e.seconds
    out, acc = [], [0.0, 0.0, 0.0]
    nodes = sorted(plan.node_primitive)
    for i in nodes:
        acc[0] += plan.node_compute_s.get(i, 0.0)
        acc[1] += plan.node_comm_s.get(i, 0.0)
        acc[2] += into.get(i, 0.0)
        if plan.node_primitive[i] in HEAVY or i == nodes[-1]:
            out.append((f"#{i}", *acc))
            acc = [0.0, 0.0, 0.0]
    return out


def plot_plan(plan, path) -> None:
    """Write the figure described in the module notes to ``path`` (PNG, or any format
    matplotlib knows by the suffix)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    roles = plan.in_roles or ("parameter",) * len(plan.in_paths)
    from shardsearch.reporting.verdict import _short

    weights = [(_label(_short(p, fold=False)), s) for p, s, r in zip(plan.in_paths, plan.flat_in_specs, roles) if r == "parameter"]
    acts = [(f"#{i} {SHORT[plan.node_primitive[i]]}", plan.node_out_specs[i][0])
            for i in sorted(plan.node_primitive) if plan.node_primitive[i] in HEAVY and plan.node_out_specs.get(i)]
    colors = _layout_colors([s for _, s in weights + acts])
    segments = _sample(_segments(plan))

    fig, axes = plt.subplots(3, 1, figsize=(13, 9), gridspec_kw={"height_ratios": [1, 1, 1.4]})
    mesh = " x ".join(f"{n}={s}" for n, s in zip(plan.mesh.axis_names, plan.mesh.axis_sizes))
    fig.suptitle(f"shardsearch plan: mesh [{mesh}], cluster {plan.cluster}, "
                 f"predicted {plan.predicted.total_s * 1e3:.3g} ms/step", fontsize=11)
    _grid(axes[0], _sample(weights), colors, "weights: how each parameter is split (argument order)",
          f"{len(weights)} parameter arrays")
    _grid(axes[1], _sample(acts), colors, "activations: the output of each contraction (program order)",
          f"{len(acts)} contractions, forward then backward")
    legend = [Patch(color=REPLICATED, label="whole on every device")]
    legend += [Patch(color=c, label="split over " + "+".join(k)) for k, c in colors.items()]
    axes[0].legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, borderaxespad=0)

    ax = axes[2]
    xs = range(len(segments))
    bottom = [0.0] * len(segments)
    for k, (name, color) in enumerate((("compute", "tab:blue"), ("collectives", "tab:red"),
                                       ("resharding", "tab:orange"))):
        values = [seg[1 + k] * 1e3 for seg in segments]
        ax.bar(xs, values, bottom=bottom, color=color, label=name, width=0.9)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("ms per step")
    ax.set_title("time: where the predicted step goes, per stretch ending at a contraction (program order)",
                 loc="left", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, borderaxespad=0)
    if len(segments) <= 40:
        ax.set_xticks(list(xs), [seg[0] for seg in segments], rotation=90, fontsize=6)
    else:
        ax.set_xticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
