"""Predicted vs judged for programs compiled for the cluster's GPUs, with overlap.

python -m benchmarks.fidelity_gpu --cluster h100-8 --mesh 2x4

For every benchmark suite's GPU config (``DEFAULT_GPU_CONFIGS``) and every tests/models
step: shardsearch plans it for the cluster, the plan is compiled for the cluster's GPUs
(deviceless, ``shardsearch.target``) and judged by ``benchmarks.judge.gpu`` (each kernel's
roofline; collectives replayed with overlap). The table sets ``plan.predicted`` (its
compute, its exposed communication, its total) beside the judged compute, exposed
communication and step with overlap, and XLA's own estimate. Needs shardsearch[gpu-aot].
Writes benchmarks/results/fidelity-gpu-<cluster>.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

RESULTS = Path(__file__).parent / "results"
TESTS = Path(__file__).resolve().parent.parent / "tests"
DEFAULT_GPU_CONFIGS = {
    "gpt": ["gpt-medium-bf16"], "bert": ["bert-medium-bf16"], "moe": ["moe-medium-bf16"],
    "wresnet": ["wresnet-medium-bf16"], "mlp": ["mlp-dp", "mlp-tp"],
}
WITHIN = 0.10
KNOWN_ERRORS = (
    "Known causes. XLA's GPU compiler merges small dots that share an operand (its DotMerger: Q, K and V "
    "projections, their weight gradients): priced since 509a034 (costs/dot_merge), which brought the "
    "tests/models steps (planned replicated on h100-8, all gemms at the efficiency curve's floor) from "
    "+13..+23% to within 10%. A pre-norm residual stream was fused backwards through every layer into "
    "each reduction (fixed: gpt-medium-bf16 +19.5% -> +8.9%). Asynchronous collectives' buffer traffic "
    "was counted as kernel time besides the contention (fixed: data parallel gpt-medium-bf16 -0.25 ms). "
    "FSDP's gathers were priced in full (fixed: gpt-medium-bf16 with FSDP pinned, +33% -> +4%). "
    "A tied weight's two gradient all-reduces were priced as two where XLA reassociates them into one "
    "(costs/reassociate) and a batch norm's independent backward all-reduces at a launch each where XLA "
    "combines them (costs/combined: wresnet-medium-bf16 with one block per stage on h100-8, 1.336 -> "
    "1.166 ms predicted, 1.183 judged). "
    "Left: across two nodes the gradient all-reduces are over-priced: each bucket hides at most its "
    "time at the intra-node figures (costs/overlap, as_one_node, fitted on 2x4-slow), but in these "
    "H100 programs XLA leaves a bucket's done before the next bucket's start, so only the last "
    "(the embedding's) stalls (gpt-medium-bf16 2x8: 1.09 ms of exposed communication predicted, 0.61 "
    "judged; moe-medium-bf16 2x8: 1.23 and 0.65); wresnet-medium-bf16's compute is under-priced "
    "(2x8, 4 images per device: 1.138 ms predicted, 1.441 judged; 2x4: 1.258 and 1.378), which the "
    "over-priced batch-norm all-reduces had hidden (2x8: +4.9% -> -12.5%, not diagnosed); on one node "
    "exposed communication is over-priced "
    "(the last bucket's window counts the optimizer update at its cheapest, split, strategy; a data "
    "parallel plan runs it on every device)."
)


@dataclasses.dataclass(frozen=True)
class FidelityRow:
    case: str  # "gpt-medium-bf16" or "tests/models:gpt"
    cluster: str
    mesh: str
    predicted_s: float
    predicted_compute_s: float
    predicted_comm_s: float  # what the plan expects to leave exposed
    judged_s: float  # with overlap
    judged_compute_s: float
    judged_exposed_s: float
    judged_comm_s: float  # every collective, no overlap
    xla_s: float | None
    plan_s: float
    compile_s: float

    @property
    def error(self) -> float:
        return self.predicted_s / self.judged_s - 1.0


def measure(name: str, train_step: Callable, args: tuple, cluster, mesh_shape: Sequence[int]) -> FidelityRow:
    import shardsearch as ss
    from benchmarks.judge import compile_with_estimate, judge_gpu
    from shardsearch.target import target_mesh

    mesh = target_mesh(cluster, tuple(mesh_shape))
    t0 = time.perf_counter()
    step = ss.auto(train_step, mesh=mesh, cluster=cluster, cache=False, pipeline=None)  # one program
    plan = step.plan_for(*args)
    t1 = time.perf_counter()
    compiled, estimate = compile_with_estimate(step.lower(*args))
    t2 = time.perf_counter()
    j = judge_gpu(compiled, cluster, xla_estimate_s=estimate)
    p = plan.predicted
    return FidelityRow(name, cluster.name, "x".join(map(str, mesh_shape)), p.total_s, p.compute_s, p.comm_s,
                       j.overlap_s, j.compute_s, j.exposed_comm_s, j.comm_s, estimate, t1 - t0, t2 - t1)


def from_suite_rows(rows) -> list[FidelityRow]:
    """The shardsearch rows of ``benchmarks.gpu_target`` (its JSONL) as fidelity rows: the
    same plan, compiled and judged there, so nothing is compiled twice."""
    out = []
    for r in rows:
        if r.strategy != "shardsearch" or r.overlap_s is None or r.predicted_s is None:
            continue
        out.append(FidelityRow(r.config, r.cluster, r.mesh, r.predicted_s, r.predicted_compute_s, r.predicted_comm_s,
                               r.overlap_s, r.compute_s, r.exposed_comm_s, r.comm_s, r.xla_s, r.plan_s or 0.0,
                               r.compile_s))
    return out


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.3f}"


def markdown(rows: Sequence[FidelityRow]) -> str:
    lines = [
        f"# Fidelity on GPU programs ({rows[0].cluster if rows else '-'}, with overlap)",
        "",
        "Predicted = `plan.predicted` (compute; communication as the planner prices it: gradient "
        "reductions by what they leave exposed under the rest of the backward pass, reshards of the carried "
        "state (FSDP's gathers) under the compute before their reader, everything else in full). Judged = the plan compiled for the cluster's GPUs without them and replayed on two clocks "
        "(`benchmarks/judge/replay.py`). XLA ms: XLA's latency-hiding scheduler's own estimate.",
        "",
        "| case | mesh | predicted ms | judged ms (overlap) | error | predicted compute | judged compute | "
        "predicted comm | judged exposed comm | judged comm (no overlap) | XLA ms | plan s | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.case} | {r.mesh} | {_ms(r.predicted_s)} | {_ms(r.judged_s)} | {100 * r.error:+.1f}% | "
            f"{_ms(r.predicted_compute_s)} | {_ms(r.judged_compute_s)} | {_ms(r.predicted_comm_s)} | "
            f"{_ms(r.judged_exposed_s)} | {_ms(r.judged_comm_s)} | {_ms(r.xla_s)} | {r.plan_s:.1f} | "
            f"{r.compile_s:.1f} |")
    within = sum(1 for r in rows if abs(r.error) <= WITHIN)
    lines += ["", f"Within {100 * WITHIN:.0f}%: {within} of {len(rows)} rows.", "", KNOWN_ERRORS]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.fidelity_gpu", description=__doc__)
    ap.add_argument("--cluster", default="h100-8")
    ap.add_argument("--mesh", default="2x4")
    ap.add_argument("--config", action="append", default=None,
                    help="suite config names ('none': no suite); default: the GPU ones")
    ap.add_argument("--model", action="append", default=None, help="tests/models names ('none': none); default: all")
    ap.add_argument("--suite-rows", type=Path, default=None,
                    help="benchmarks.gpu_target's gpu_target.jsonl: take the suites' rows from it (this "
                         "cluster and mesh) instead of compiling them again; --config then defaults to none")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--saved", type=Path, default=None,
                    help="a JSONL of measured rows: each new row is appended, and a case already there "
                         "(same cluster and mesh) is read back instead of compiled again")
    a = ap.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the CUDA plugin loads without a GPU only so
    sys.path.insert(0, str(TESTS))
    from benchmarks.models import get_workload
    from benchmarks.models_vs_baselines import abstract
    from cost_model import Cluster
    from models import CASES

    cluster = Cluster.load(a.cluster)
    shape = tuple(int(t) for t in a.mesh.lower().split("x"))
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    configs = a.config if a.config is not None else [] if a.suite_rows else [
        c for cs in DEFAULT_GPU_CONFIGS.values() for c in cs]
    configs = [c for c in configs if c != "none"]  # --config none: the tests/models steps only
    models = [m for m in (a.model if a.model is not None else sorted(CASES)) if m != "none"]
    rows = []
    if a.suite_rows:
        from benchmarks.gpu_target import load_rows

        rows += [r for r in from_suite_rows(load_rows(a.suite_rows)) if r.cluster == cluster.name and r.mesh == a.mesh]
    saved = {}
    if a.saved is not None and a.saved.exists():
        for line in a.saved.read_text().splitlines():
            r = FidelityRow(**json.loads(line))
            saved[(r.case, r.cluster, r.mesh)] = r

    def run(case: str, make: Callable[[], FidelityRow]) -> None:
        row = saved.get((case, cluster.name, "x".join(map(str, shape))))
        if row is None:
            row = make()
            if a.saved is not None:
                with a.saved.open("a") as f:
                    f.write(json.dumps(dataclasses.asdict(row)) + "\n")
        rows.append(row)
        say(f"{case}: predicted {_ms(row.predicted_s)} ms, judged {_ms(row.judged_s)} ms")

    for config in configs:
        w = get_workload(config.split("-")[0], config)
        run(config, lambda: measure(config, w.train_step, w.args, cluster, shape))
    def model_row(name: str) -> FidelityRow:
        case = CASES[name]()
        return measure(f"tests/models:{name}", case.train_step, abstract(case.args), cluster, shape)

    for name in models:
        run(f"tests/models:{name}", lambda: model_row(name))
    out = a.out or RESULTS / f"fidelity-gpu-{cluster.name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(rows))
    print(f"report written to {out}")


if __name__ == "__main__":
    main()
