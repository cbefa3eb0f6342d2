"""Third-party model smoke suite: models from Flax (linen, NNX), Equinox, Haiku, Hugging Face
Flax, keras-hub (JAX backend, MoE with rotary embeddings) and penzai, planned by
shardsearch next to data parallel and FSDP, each judged by its compiled program.

    pip install -e '.[thirdparty]'
    python -m benchmarks.thirdparty --cluster h100-8 --mesh 2x4 [--model 'keras-hub qwen3-moe' ...]

Reports per model the operators left to the replicated fallback and the judged step time
against data parallel and FSDP (benchmarks/models_vs_baselines does the compiling and
judging); writes benchmarks/results/thirdparty.md. Outside the default tests (it needs the
optional libraries and a few minutes), network-free: configs and random weights.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")  # keras-hub models: before keras is imported

RESULTS_FILE = "thirdparty.md"
SLOWER_OK = 1.02  # judged shardsearch / data parallel above this needs an account


def run(names, cluster_name: str, mesh_shape, say) -> tuple[list, dict, dict]:
    """(rows of models_vs_baselines.Row, fallback primitives per model, errors per model)."""
    import jax

    import shardsearch as ss
    from benchmarks.judge import judge
    from benchmarks.models_vs_baselines import (
        DATA_PARALLEL, FSDP, SHARDSEARCH, STRATEGIES, Row, _collectives, _split, abstract, baseline_specs,
        compile_with_specs)
    from benchmarks.runner import make_mesh
    from benchmarks.thirdparty.models import MODELS
    from cost_model import Cluster

    cluster = Cluster.load(cluster_name)
    mesh = make_mesh(mesh_shape)
    names_, sizes = tuple(mesh.axis_names), tuple(mesh.devices.shape)
    rows, fallbacks, errors = [], {}, {}
    for name in names:
        try:
            case = MODELS[name]()
            args = abstract(case.args)
            t0 = time.perf_counter()
            step = ss.auto(case.train_step, mesh=mesh, cluster=cluster, cache=False, pipeline=None)  # one program
            plan = step.plan_for(*args)
            plan_s = time.perf_counter() - t0
            compiled = {SHARDSEARCH: step.lower(*args).compile()}
            for s in (DATA_PARALLEL, FSDP):
                compiled[s] = compile_with_specs(case.train_step, args, mesh, baseline_specs(args, names_, sizes, s))
        except Exception as err:  # a library's model that does not build or trace: reported, not fatal
            errors[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            say(f"{name}: {errors[name]}")
            continue
        fallbacks[name] = sorted({f.primitive for f in plan.fallback})
        for s in STRATEGIES:
            j = judge(compiled[s], cluster)
            ours = s == SHARDSEARCH
            rows.append(Row(name, cluster.name, "x".join(map(str, sizes)), s, j.total_s, j.compute_s, j.comm_s,
                            j.memory_bytes, _collectives(j), _split(compiled[s]), plan_s if ours else None,
                            plan.predicted.total_s if ours else None))
        ours, dp, fsdp = rows[-3:]
        say(f"{name}: shardsearch {ours.total_s * 1e3:.4f} ms, DP {dp.total_s * 1e3:.4f} ms, "
            f"FSDP {fsdp.total_s * 1e3:.4f} ms, fallback {fallbacks[name] or 'none'} (planned in {plan_s:.1f} s)")
        jax.clear_caches()
    return rows, fallbacks, errors


def report(rows, fallbacks: dict, errors: dict, versions: str, notes: str = "") -> str:
    from benchmarks.models_vs_baselines import DATA_PARALLEL, SHARDSEARCH, markdown

    by = {(r.model, r.strategy): r for r in rows}
    table = ["| model | replicated fallback operators | shardsearch / DP | within 2% of DP or better |",
             "|---|---|---|---|"]
    for model, prims in fallbacks.items():
        ratio = by[(model, SHARDSEARCH)].total_s / by[(model, DATA_PARALLEL)].total_s
        table.append(f"| {model} | {', '.join(prims) or 'none'} | {ratio:.3f} | {'yes' if ratio <= SLOWER_OK else '**no**'} |")
    for model, why in errors.items():
        table.append(f"| {model} | (did not build: {why}) | - | - |")
    body = markdown(rows).replace("# tests/models: shardsearch against data parallel and FSDP",
                                  "# Third-party models: shardsearch against data parallel and FSDP", 1)
    body = re.sub(r" Regenerate with `python -m benchmarks.models_vs_baselines.*?by hand\)\.", "", body)
    head, rest = body.split("\n", 1)
    return "\n".join([head, "", f"Libraries: {versions}. Regenerate with `python -m benchmarks.thirdparty "
                      "--cluster h100-8 --mesh 2x4` (the notes at the end are written by hand).", "",
                      *table, rest, notes]).rstrip() + "\n"


def _versions() -> str:
    from importlib import metadata

    out = []
    for pkg in ("jax", "flax", "equinox", "dm-haiku", "transformers", "keras", "keras-hub", "penzai"):
        try:
            out.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            out.append(f"{pkg} (not installed)")
    return ", ".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.thirdparty", description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", default="h100-8")
    parser.add_argument("--mesh", default="2x4", help="mesh shape, e.g. 2x4")
    parser.add_argument("--model", action="append", help="a model name of benchmarks/thirdparty/models.py; repeatable")
    parser.add_argument("--out", default=None, help=f"markdown file (default benchmarks/results/{RESULTS_FILE})")
    parser.add_argument("--notes", default=None, help="a markdown file appended to the report")
    a = parser.parse_args(argv)
    shape = tuple(int(n) for n in a.mesh.split("x"))
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={max(8, _prod(shape))}")
    from benchmarks.models_vs_baselines import RESULTS
    from benchmarks.thirdparty.models import MODELS

    rows, fallbacks, errors = run(a.model or list(MODELS), a.cluster, shape, lambda s: print(s, file=sys.stderr))
    notes = open(a.notes).read() if a.notes else ""
    out = a.out or str(RESULTS / RESULTS_FILE)
    with open(out, "w") as f:
        f.write(report(rows, fallbacks, errors, _versions(), notes))
    print(out)


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


if __name__ == "__main__":
    main()
