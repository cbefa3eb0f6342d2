"""Predicted peak memory against what XLA compiles, on every benchmark suite and test model.

    python -m benchmarks.memory_fidelity [--cluster h100-8 --cluster 2x4-slow] [--mesh 2x4 ...]
        [--only gpt-tiny ...] [--target gpu|cpu] [--also-cpu] [--out benchmarks/results/memory_fidelity.md]

For each workload, cluster and mesh: plan with shardsearch (no budget binds), compile the
plan twice (no argument donated, and params + optimizer state donated), and compare the
predicted peak (``plan.predicted.peak_bytes`` / ``peak_donated_bytes``) with
``memory_analysis()`` (arguments + results + temporaries - aliases, per device), next to
the temporaries, where the model's misses are.

The bar for a GPU cluster is the program compiled for its GPUs (``--target gpu``, the
default: deviceless, ``shardsearch.target``, needs shardsearch[gpu-aot]); ``--also-cpu``
adds the program compiled for the CPU devices at hand as a second column. Rows are
appended to ``<out>.jsonl`` with the commit they were measured at, and the Markdown table
is written from all of them (the latest row per case, cluster, mesh, donation and target),
so runs over different ``--only`` sets add up to one table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SUITE_CONFIGS = {
    "gpt": ["gpt-tiny", "gpt-small"],
    "bert": ["bert-tiny", "bert-small"],
    "moe": ["moe-tiny", "moe-small"],
    "wresnet": ["wresnet-tiny", "wresnet-small"],
    "mlp": ["mlp-dp", "mlp-tp", "mlp-tiny"],
}
TEST_MODELS = ["gpt", "bert", "resnet", "vit", "moe", "gpt_scan", "equinox"]
# GPT slices with SGD, where activations dominate: 2 layers; the last two are the issue's
# widths at seq 1024 (their compiles take minutes: only with --only)
WIDE = {
    "gpt-h1024-s256": dict(hidden=1024, heads=8, seq=256, vocab=51200),
    "gpt-h512-s512-v8192": dict(hidden=512, heads=4, seq=512, vocab=8192),
    "gpt-h2048-s1024": dict(hidden=2048, heads=16, seq=1024, vocab=51200),
    "gpt-h4096-s1024": dict(hidden=4096, heads=32, seq=1024, vocab=51200),
}
ON_REQUEST = ("gpt-h2048-s1024", "gpt-h4096-s1024")


# What was found behind the rows over 10% (2026-12-07, shown under the table for those rows)
SPLIT_K = ("XLA's GPU compiler, compiling without a device, splits the contraction of gemms with a small "
           "output into f32 partial products (split-K: [128 x 512] @ [512 x 128] as f32[16,128,128], summed "
           "after). Modelled since 540a4eb / 9d090b6 (memory/splitk.py; gpt-tiny -23.6/-28.5% -> -17.9/-13.4%, "
           "bert-tiny -32.2/-36.7% -> -24.8/-20.4% on the same plans). What is left: at tensors this small "
           "XLA's GPU fusion keeps the partials of more dots than the model does: gpt-tiny's compiled peak (6.0 MiB of "
           "temporaries at the forward end) is 7 partial-product buffers (both fc1s, both attention "
           "projections, the last fc2, the logits, the first backward dot), of which the model keeps 3: XLA "
           "recomputes the residual stream from the projections' partials in the backward pass instead of "
           "keeping it. The CPU program is within 10% (before the split-K rule).")
TANH = ("the model keeps each tanh-gelu's tanh for the backward pass besides its input and output (3 buffers per "
        "MLP); XLA's GPU fusion keeps the input and gelu's output and recomputes tanh in the backward kernel "
        "(models/bert: [8,16,128] x 2 per layer compiled, x 3 predicted).")
CAUSES = {
    "gpt-tiny": SPLIT_K,
    "bert-tiny": SPLIT_K,
    "moe-tiny": "over on the GPU program only (CPU -7.8/-7.3%): the expert FFN's kept activations agree in size "
                "(XLA: h and gelu(h), the model: h and tanh(...), f32[8,16,20,1024], 10 MiB each); the excess is at "
                "the model's peak in the experts' backward pass (dy @ w2^T and the gelu gradient, 10 MiB each, on "
                "top of all that is kept): not diagnosed further.",
    "models/bert": "+12/+19% since the compiled program shrank (1.49 -> 1.33 MiB without donation, the plan's "
                   "prediction unchanged; main's apply/cost commits between bc30547 and this row): " + TANH,
    "moe-small": "over on the GPU program, donated (h100-8 +11.5%, CPU -7.7%): GPU fusion keeps less than the "
                 "model; not diagnosed further.",
    "models/resnet": "-24.8/-26.1% on the GPU program with the plan of a1238eb's cost model (0.60 MiB compiled, "
                     "0.49 with the plan before): not diagnosed. CPU-compiled: XLA's CPU compiler expands max-pool's "
                     "gradient (select_and_scatter_add) into padded index tensors the model does not count.",
    "models/gpt_scan": "-17.1/-20.0% (CPU -3/-4%): a scanned layer stack; the loop's stacks and operands are held "
                       "as XLA's while loop holds them; the rest not diagnosed.",
    "wresnet-small": "not diagnosed (over-predicted: likely convolution temporaries XLA places in freed buffers).",
    "models/equinox": "over on the GPU program (CPU +9/+10%): not diagnosed.",
    "gpt-h512-s512-v8192": "not diagnosed; the logits (16 x 512 x 8192) dominate: likely the softmax "
                           "cross-entropy's temporaries, which XLA keeps more of than the model.",
}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    train_step: object
    args: tuple


def _suite_cases(only) -> list[Case]:
    from benchmarks.models import get_workload

    out = []
    for suite, configs in SUITE_CONFIGS.items():
        for c in configs:
            if only and c not in only:
                continue
            w = get_workload(suite, c)
            out.append(Case(c, w.train_step, w.args))
    return out


def _model_cases(only) -> list[Case]:
    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    from models import CASES

    from shardsearch.trace import abstract_args

    out = []
    for name in TEST_MODELS:
        if only and f"models/{name}" not in only:
            continue
        case = CASES[name]()
        out.append(Case(f"models/{name}", case.train_step, abstract_args(case.args)))
    return out


def wide_gpt(name: str, batch: int = 16, layers: int = 2):
    """A GPT slice of ``WIDE`` (SGD) as a Workload."""
    import optax

    from benchmarks.models import gpt

    cfg = gpt.GPTConfig(name, layers=layers, batch=batch, **WIDE[name])
    return gpt.make_workload(cfg, optax.sgd(1e-3))


def _wide_cases(only) -> list[Case]:
    out = []
    for name in WIDE:
        if (name in only) if name in ON_REQUEST or only else True:
            w = wide_gpt(name)
            out.append(Case(name, w.train_step, w.args))
    return out


@dataclasses.dataclass(frozen=True)
class Row:
    case: str
    cluster: str
    mesh: str
    donated: bool
    predicted: float
    compiled: float
    temps: float  # compiled
    p_temps: float  # predicted
    plan_s: float
    compile_s: float
    target: str = "cpu"  # the program compiled for: "gpu" (the cluster's GPUs, deviceless) or "cpu"
    cpu_compiled: float | None = None  # the same plan compiled for the CPU devices at hand (--also-cpu)
    commit: str = ""

    @property
    def error(self) -> float:
        return (self.predicted - self.compiled) / self.compiled

    @property
    def cpu_error(self) -> float | None:
        return None if self.cpu_compiled is None else (self.predicted - self.cpu_compiled) / self.cpu_compiled


def _compiled_bytes(plan, case: Case, mesh, donated: bool):
    m = plan.apply(case.train_step, mesh=mesh, donate_argnums=(0, 1) if donated else ()) \
        .lower(*case.args).compile().memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes, m


def measure(case: Case, cluster, mesh_shape, target: str = "cpu", also_cpu: bool = False) -> list[Row]:
    """Rows for the plan compiled without donation and with params + optimizer state donated,
    for ``target`` ("gpu": the cluster's GPUs, deviceless; "cpu": the devices at hand)."""
    import shardsearch as ss
    from benchmarks.runner import make_mesh

    cpu_mesh = make_mesh(mesh_shape) if target == "cpu" or also_cpu else None
    if target == "gpu":
        from shardsearch.target import target_mesh

        mesh = target_mesh(cluster, tuple(mesh_shape))
    else:
        mesh = cpu_mesh
    t0 = time.perf_counter()
    plan = ss.auto(case.train_step, mesh=mesh, cluster=cluster, cache=False, pipeline=None).plan_for(*case.args)
    plan_s = time.perf_counter() - t0
    rows = []
    for donated in (False, True):
        t0 = time.perf_counter()
        try:
            compiled, m = _compiled_bytes(plan, case, mesh, donated)
        except Exception as e:  # XLA's GPU compiler refuses some programs without a device
            if target != "gpu":
                raise
            print(f"{case.name}: the GPU compile failed ({str(e).splitlines()[0][:160]}); CPU-compiled instead",
                  flush=True)
            target, mesh = "cpu (GPU compile failed)", cpu_mesh or make_mesh(mesh_shape)
            compiled, m = _compiled_bytes(plan, case, mesh, donated)
        compile_s = time.perf_counter() - t0
        cpu = _compiled_bytes(plan, case, cpu_mesh, donated)[0] if also_cpu and target == "gpu" else None
        p = plan.predicted
        predicted = p.peak_donated_bytes if donated else p.peak_bytes
        rows.append(Row(case.name, cluster.name, "x".join(map(str, mesh_shape)), donated, predicted,
                        float(compiled), m.temp_size_in_bytes, predicted - (compiled - m.temp_size_in_bytes),
                        plan_s, compile_s, target, None if cpu is None else float(cpu), _commit()))
    return rows


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def load_rows(path: Path) -> list[Row]:
    """The rows saved in ``path`` (JSONL), the latest per (case, cluster, mesh, donated, target)."""
    rows: dict = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = Row(**json.loads(line))
                rows[(r.case, r.cluster, r.mesh, r.donated, r.target)] = r
    return list(rows.values())


def _mib(b: float) -> str:
    return f"{b / 2**20:.2f}"


def write_table(rows: list[Row], path: Path, command: str) -> None:
    worst = max(rows, key=lambda r: abs(r.error))
    within = sum(abs(r.error) <= 0.10 for r in rows)
    cpu = [r for r in rows if r.cpu_error is not None]
    cpu_line = (f" Against the CPU-compiled program (second column): {sum(abs(r.cpu_error) <= 0.10 for r in cpu)} of "
                f"{len(cpu)} within 10%." if cpu else "")
    lines = [
        "# Predicted peak memory vs the compiled program",
        "",
        "Per device, in MiB. *compiled* = `memory_analysis()`: arguments + outputs + temporaries - aliased, of the "
        "program compiled for *target*: `gpu` = the cluster's GPUs (deviceless, `shardsearch.target`: the bar "
        "for a GPU cluster), `cpu` = the CPU devices at hand; *CPU* is the same plan compiled for the CPU, "
        "and the prediction's error against it. *predicted* = `plan.predicted.peak_bytes`, or "
        "`peak_donated_bytes` where params and optimizer state are donated (shardsearch/memory/). Arguments "
        "and results are exact; *temp* is the temporary heap, compiled / predicted (the predicted peak less "
        "the compiled arguments and results). *commit*: what the row was measured at.",
        "",
        f"Regenerate: `{command}` (rows accumulate in {path.with_suffix('.jsonl').name})",
        "",
        f"{within} of {len(rows)} within 10%; largest error {worst.error:+.1%} ({worst.case}, {worst.cluster}, "
        f"{worst.mesh}, {worst.target}).{cpu_line}",
        "",
        "| case | cluster | mesh | donated | target | compiled | predicted | error | temp | CPU: compiled, error "
        "| plan s | compile s | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        second = "" if r.cpu_compiled is None else f"{_mib(r.cpu_compiled)}, {r.cpu_error:+.1%}"
        lines.append(
            f"| {r.case} | {r.cluster} | {r.mesh} | {'yes' if r.donated else 'no'} | {r.target} | "
            f"{_mib(r.compiled)} | {_mib(r.predicted)} | {r.error:+.1%} | {_mib(r.temps)} / {_mib(r.p_temps)} | "
            f"{second} | {r.plan_s:.1f} | {r.compile_s:.1f} | {r.commit} |")
    over = sorted({r.case for r in rows if abs(r.error) > 0.10}, key=[r.case for r in rows].index)
    if over:
        lines += ["", "## Rows over 10%: what causes them", ""]
        lines += [f"- **{case}**: {CAUSES.get(case, 'not diagnosed.')}" for case in over]
    path.write_text("\n".join(lines) + "\n")


def _table_order(rows: list[Row]) -> list[Row]:
    names = [c for cs in SUITE_CONFIGS.values() for c in cs] + [f"models/{m}" for m in TEST_MODELS] + list(WIDE)
    order = {n: i for i, n in enumerate(names)}
    return sorted(rows, key=lambda r: (order.get(r.case, len(order)), r.case, r.cluster, r.mesh, r.target, r.donated))


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cluster", action="append", default=None)
    ap.add_argument("--mesh", action="append", default=None, help="e.g. 2x4; repeat for several")
    ap.add_argument("--only", action="append", default=None,
                    help="case names (gpt-tiny, models/gpt, gpt-h4096-s1024 ...); default: all but the "
                         "seq-1024 GPT slices")
    ap.add_argument("--target", choices=("gpu", "cpu"), default="gpu",
                    help="compile for the cluster's GPUs (deviceless; the bar for a GPU cluster) or the CPU")
    ap.add_argument("--also-cpu", action="store_true", help="also compile each plan for the CPU (second column)")
    ap.add_argument("--out", type=Path, default=RESULTS / "memory_fidelity.md")
    a = ap.parse_args(argv)
    if a.target == "gpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the CUDA plugin loads without a GPU only so
    meshes = [tuple(int(t) for t in m.split("x")) for m in (a.mesh or ["2x4", "8", "4x2"])]
    need = max(math.prod(s) for s in meshes)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={need}").strip()
    import warnings

    from cost_model import Cluster

    warnings.simplefilter("ignore")  # not-proven-optimal warnings of time-limited solves
    clusters = [Cluster.load(c) for c in (a.cluster or ["h100-8", "2x4-slow"])]
    only = set(a.only or ())
    cases = _suite_cases(only) + _model_cases(only) + _wide_cases(only)
    command = "python -m benchmarks.memory_fidelity " + " ".join(argv if argv is not None else sys.argv[1:])
    saved = a.out.with_suffix(".jsonl")
    rows = []
    # breadth first: every case on the first (cluster, mesh), then the next, the table
    # rewritten after each plan so that a run cut short still leaves one
    for mesh in meshes:
        for cluster in clusters:
            for case in cases:
                target = a.target if cluster.gpu_target is not None else "cpu"
                for r in measure(case, cluster, mesh, target, a.also_cpu):
                    rows.append(r)
                    with saved.open("a") as f:
                        f.write(json.dumps(dataclasses.asdict(r)) + "\n")
                    print(f"{r.case:22s} {r.cluster:9s} {r.mesh:4s} {'donated' if r.donated else 'plain  '} "
                          f"{r.target} compiled {_mib(r.compiled):>9s} MiB, predicted {_mib(r.predicted):>9s} "
                          f"({r.error:+.1%}); temp {_mib(r.temps)}/{_mib(r.p_temps)}"
                          + ("" if r.cpu_error is None else f"; cpu {_mib(r.cpu_compiled)} ({r.cpu_error:+.1%})"),
                          flush=True)
                write_table(_table_order(load_rows(saved)), a.out, command.strip())
    print(f"table written to {a.out}")
    return rows


if __name__ == "__main__":
    main()
