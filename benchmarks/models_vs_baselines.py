"""Every model of tests/models/ planned by shardsearch, next to data parallel and FSDP.

python -m benchmarks.models_vs_baselines --cluster h100-8 --cluster 2x4-slow --cluster slow-compute --mesh 2x4

The models carry no logical axis names (benchmarks/baselines.py needs them), so the two
baselines are built from argument positions alone: every model's step is
``train_step(params, opt_state, batch)``. Data parallel splits the per-example leaves of
``batch`` on their leading dim; FSDP (ZeRO-3) also splits every leaf of ``params`` and
``opt_state`` on its largest dim that the mesh axes divide. All three programs are compiled
from abstract arguments and judged by their optimized HLO on each cluster
(``benchmarks.judge``). Writes benchmarks/results/models-vs-baselines.md.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

RESULTS = Path(__file__).parent / "results"
TESTS = Path(__file__).resolve().parent.parent / "tests"  # tests/models imports itself as ``models``

# Argument positions of every tests/models step: train_step(params, opt_state, batch).
PARAMS, OPT_STATE, BATCH = 0, 1, 2
SHARDSEARCH, DATA_PARALLEL, FSDP = "shardsearch", "data parallel", "FSDP (ZeRO-3)"
STRATEGIES = (SHARDSEARCH, DATA_PARALLEL, FSDP)

# tests/test_numerics.py's cluster: compute so slow next to the links that these small
# models are worth splitting (on real presets their best plan is to replicate everything).
EXTRA_CLUSTERS = {
    "slow-compute": {
        "name": "slow-compute", "devices_per_node": 8, "peak_flops": 1e9, "memory_bytes": 16e9,
        "hbm_bandwidth": 1e9, "intra_node": {"bandwidth": 1e11, "latency": 1e-7},
        "inter_node": {"bandwidth": 1e10, "latency": 1e-6},
    },
}

Spec = tuple  # one tuple of mesh axis names per dim, as cost_model.Spec


# ---- spec builders (pure: shapes and mesh axes in, specs out) ----------------------------


def axis_groups(axis_names: Sequence[str], axis_sizes: Sequence[int]) -> list[tuple[str, ...]]:
    """Every set of mesh axes of size > 1 (in mesh order), the biggest device group first.

    A dim is split over the first group whose size divides it: all devices when it can,
    else as many axes as divide it."""
    real = [(a, s) for a, s in zip(axis_names, axis_sizes) if s > 1]
    groups = [c for r in range(len(real), 0, -1) for c in itertools.combinations(real, r)]
    groups.sort(key=lambda g: -_size(g))  # stable: more axes, then mesh order, win ties
    return [tuple(a for a, _ in g) for g in groups]


def _size(group) -> int:
    out = 1
    for _, s in group:
        out *= s
    return out


def batch_size(shapes: Sequence[tuple[int, ...]]) -> int | None:
    """The leading dim most batch leaves share (ties: the larger); None if no leaf has a dim.

    Leaves with another leading dim (a PRNG key riding in the batch) are not per-example."""
    counts = collections.Counter(s[0] for s in shapes if s)
    return max(counts, key=lambda n: (counts[n], n)) if counts else None


def data_parallel_spec(shape: tuple[int, ...], batch: int | None, groups: Sequence[tuple[str, ...]],
                       sizes: dict[str, int]) -> Spec:
    """A per-example leaf split on its leading dim over the biggest group that divides it."""
    spec: list[tuple[str, ...]] = [() for _ in shape]
    if shape and shape[0] == batch:
        spec[0] = next((g for g in groups if shape[0] % _group_size(g, sizes) == 0), ())
    return tuple(spec)


def fsdp_spec(shape: tuple[int, ...], groups: Sequence[tuple[str, ...]], sizes: dict[str, int]) -> Spec:
    """ZeRO-3: the largest dim divisible by the biggest group that divides any dim, split over it."""
    spec: list[tuple[str, ...]] = [() for _ in shape]
    for g in groups:
        fits = [i for i, n in enumerate(shape) if n % _group_size(g, sizes) == 0]
        if fits:
            spec[max(fits, key=lambda i: (shape[i], -i))] = g
            break
    return tuple(spec)


def _group_size(group: Sequence[str], sizes: dict[str, int]) -> int:
    out = 1
    for a in group:
        out *= sizes[a]
    return out


def baseline_specs(args: tuple, axis_names: Sequence[str], axis_sizes: Sequence[int], strategy: str) -> list[Spec]:
    """One spec per flat leaf of ``args`` = (params, opt_state, batch), for DATA_PARALLEL or FSDP."""
    import jax

    if strategy not in (DATA_PARALLEL, FSDP):
        raise ValueError(f"baseline_specs: {strategy!r} is not one of {DATA_PARALLEL!r}, {FSDP!r}")
    groups = axis_groups(axis_names, axis_sizes)
    sizes = dict(zip(axis_names, axis_sizes))
    shapes = [[tuple(x.shape) for x in jax.tree_util.tree_leaves(a)] for a in args]
    batch = batch_size(shapes[BATCH])
    specs: list[Spec] = []
    for pos, leaf_shapes in enumerate(shapes):
        for shape in leaf_shapes:
            if pos == BATCH:
                specs.append(data_parallel_spec(shape, batch, groups, sizes))
            elif strategy == FSDP:
                specs.append(fsdp_spec(shape, groups, sizes))
            else:
                specs.append(tuple(() for _ in shape))
    return specs


# ---- compile and judge ---------------------------------------------------------------------


def abstract(args):
    import jax

    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), args)


def lower_with_specs(train_step: Callable, args: tuple, mesh, specs: Sequence[Spec]):
    """jax.jit of the step with one spec per flat leaf of ``args``, lowered over ``mesh``;
    outputs keep the state's shardings and the loss is replicated (as
    benchmarks.baselines.compile_baseline)."""
    import jax
    from jax.sharding import NamedSharding

    from shardsearch.plan import to_partition_spec

    shardings = [NamedSharding(mesh, to_partition_spec(s)) for s in specs]
    in_sh = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(args), shardings)
    out_sh = (in_sh[PARAMS], in_sh[OPT_STATE], NamedSharding(mesh, to_partition_spec(())))
    return jax.jit(train_step, in_shardings=in_sh, out_shardings=out_sh).lower(*args)


def compile_with_specs(train_step: Callable, args: tuple, mesh, specs: Sequence[Spec]):
    """``lower_with_specs``, compiled."""
    return lower_with_specs(train_step, args, mesh, specs).compile()


@dataclasses.dataclass(frozen=True)
class Row:
    model: str
    cluster: str
    mesh: str
    strategy: str
    total_s: float
    compute_s: float
    comm_s: float
    memory_bytes: float  # per device
    collectives: str  # "kind xN" per kind, from the optimized HLO
    split: str  # "k/n": how many of the n argument leaves the program's input shardings split
    plan_s: float | None = None  # shardsearch only
    predicted_s: float | None = None  # shardsearch only


def _collectives(judged) -> str:
    kinds = judged.by_kind()
    return ", ".join(f"{k} x{n}" for k, (n, _, _) in sorted(kinds.items())) or "none"


def _split(compiled) -> str:
    import jax

    leaves = jax.tree_util.tree_leaves(compiled.input_shardings)
    return f"{sum(not s.is_fully_replicated for s in leaves)}/{len(leaves)}"


def run_model(name: str, make: Callable, clusters: Sequence, mesh, say: Callable[[str], None]) -> list[Row]:
    import shardsearch as ss
    from benchmarks.judge import judge

    case = make()
    args = abstract(case.args)
    mesh_name = "x".join(str(s) for s in mesh.devices.shape)
    names, sizes = tuple(mesh.axis_names), tuple(mesh.devices.shape)
    baselines = {s: compile_with_specs(case.train_step, args, mesh, baseline_specs(args, names, sizes, s))
                 for s in (DATA_PARALLEL, FSDP)}
    rows = []
    for cluster in clusters:
        t0 = time.perf_counter()
        # time the search; the plan over the whole mesh, judged as one program like the baselines
        step = ss.auto(case.train_step, mesh=mesh, cluster=cluster, cache=False, pipeline=None)
        plan = step.plan_for(*args)
        plan_s = time.perf_counter() - t0
        compiled = {SHARDSEARCH: step.lower(*args).compile(), **baselines}
        for strategy in STRATEGIES:
            j = judge(compiled[strategy], cluster)
            ours = strategy == SHARDSEARCH
            rows.append(Row(name, cluster.name, mesh_name, strategy, j.total_s, j.compute_s, j.comm_s,
                            j.memory_bytes, _collectives(j), _split(compiled[strategy]), plan_s if ours else None,
                            plan.predicted.total_s if ours else None))
        ss_row, dp_row, fsdp_row = rows[-3:]
        say(f"{name} on {cluster.name}: shardsearch {ss_row.total_s * 1e3:.4f} ms (planned in {plan_s:.1f} s), "
            f"DP {dp_row.total_s * 1e3:.4f} ms, FSDP {fsdp_row.total_s * 1e3:.4f} ms")
    return rows


# ---- report --------------------------------------------------------------------------------


def _ms(s: float) -> str:
    return f"{s * 1e3:.4f}"


def _kib(b: float) -> str:
    return f"{b / 1024:.0f}"


def verdict(ours: Row, dp: Row, fsdp: Row) -> bool:
    return ours.total_s <= dp.total_s and ours.total_s <= fsdp.total_s


def markdown(rows: Sequence[Row], notes: str = "") -> str:
    by = {(r.model, r.cluster, r.strategy): r for r in rows}
    keys = list(dict.fromkeys((r.model, r.cluster) for r in rows))
    mesh = rows[0].mesh if rows else "?"
    lines = [
        f"# tests/models: shardsearch against data parallel and FSDP (mesh {mesh})",
        "",
        "Judged = the compiled program's optimized HLO priced on the cluster (`benchmarks.judge`): "
        "compute (one per-device roofline over the program: `cost_analysis` bytes against its FLOPs, "
        "each matmul at its dtype's peak and size's efficiency) + every collective, no overlap. "
        "Predicted = the plan's own figure (a roofline per operator, summed). Memory = per-device "
        "`memory_analysis` (arguments + outputs + temporaries - aliases). DP splits the batch's "
        "per-example leaves on their leading dim; FSDP also splits each parameter and optimizer-state "
        "leaf on its largest dim the mesh axes divide. Ratios below 1 mean shardsearch is faster. "
        "Regenerate with `python -m benchmarks.models_vs_baselines --cluster h100-8 --cluster 2x4-slow "
        "--cluster slow-compute --mesh 2x4` (about 6 minutes on 2 cores; the Findings section is written by hand).",
        "",
        "| model | cluster | shardsearch ms | DP ms | FSDP ms | ss / DP | ss / FSDP | memory KiB/dev ss / DP / FSDP "
        "| leaves split ss / FSDP | plan s | predicted ms | ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, cluster in keys:
        ours, dp, fsdp = (by[(model, cluster, s)] for s in STRATEGIES)
        lines.append(
            f"| {model} | {cluster} | {_ms(ours.total_s)} | {_ms(dp.total_s)} | {_ms(fsdp.total_s)} "
            f"| {ours.total_s / dp.total_s:.3f} | {ours.total_s / fsdp.total_s:.3f} "
            f"| {_kib(ours.memory_bytes)} / {_kib(dp.memory_bytes)} / {_kib(fsdp.memory_bytes)} "
            f"| {ours.split} / {fsdp.split} | {ours.plan_s:.1f} | {_ms(ours.predicted_s)} | {'yes' if verdict(ours, dp, fsdp) else '**no**'} |"
        )
    lines += ["", "## Breakdown (compute ms + comm ms; collectives in the optimized HLO)", "",
              "| model | cluster | strategy | compute ms | comm ms | collectives |", "|---|---|---|---|---|---|"]
    for model, cluster in keys:
        for s in STRATEGIES:
            r = by[(model, cluster, s)]
            lines.append(f"| {model} | {cluster} | {s} | {_ms(r.compute_s)} | {_ms(r.comm_s)} | {r.collectives} |")
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.models_vs_baselines", description=__doc__)
    ap.add_argument("--cluster", action="append", default=None, help="preset, profile JSON or slow-compute; repeat for several")
    ap.add_argument("--mesh", default="2x4")
    ap.add_argument("--model", action="append", default=None, help="tests/models name; default: all")
    ap.add_argument("--out", type=Path, default=RESULTS / "models-vs-baselines.md")
    ap.add_argument("--notes", type=Path, default=None, help="markdown appended to the report")
    a = ap.parse_args(argv)
    shape = tuple(int(t) for t in a.mesh.lower().split("x"))
    need = 1
    for s in shape:
        need *= s
    flag = f"--xla_force_host_platform_device_count={need}"
    if flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, str(TESTS))
    from benchmarks.runner import make_mesh
    from cost_model import Cluster
    from models import CASES

    clusters = [Cluster.load(EXTRA_CLUSTERS.get(c, c)) for c in (a.cluster or ["h100-8"])]
    mesh = make_mesh(shape)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    rows: list[Row] = []
    for name in a.model or sorted(CASES):
        rows += run_model(name, CASES[name], clusters, mesh, say)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(markdown(rows, a.notes.read_text() if a.notes else ""))
    print(f"report written to {a.out}")


if __name__ == "__main__":
    main()
