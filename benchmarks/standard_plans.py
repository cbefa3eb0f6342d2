"""The standard plans inside shardsearch's search space: each pinned, compiled and judged.

python -m benchmarks.standard_plans --cluster h100-8 --cluster 2x4-slow

For every tests/models step and every benchmark suite's default configs, the argument
layouts of the standard plans (replicated, data parallel, FSDP/ZeRO-3 and, where the model
names its logical axes, Megatron tensor parallel) are handed to the search as pins, so the
planner chooses only the intermediates around them. Each pinned plan is compiled for the
cluster's GPUs (deviceless, ``shardsearch.target``) and judged with overlap
(``benchmarks.judge.gpu``), and its prediction set beside the judged figure: a pinned
standard plan predicted more than 10% off its program is a mispriced or missing strategy.
The auto plan is judged next to the hand-written programs of the same argument layouts
(``jax.jit`` with those in_shardings, XLA propagating the rest, compiled for the same GPUs)
and must be no slower than the best of replicated, data parallel and FSDP. Where the plugin
refuses a cluster's topology, that cluster's rows fall back to the CPU program judged
without overlap, labelled. ``--cpu`` adds the CPU-compiled programs judged without overlap
(``benchmarks.judge.judge``) as a second column. Writes benchmarks/results/standard-plans.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

RESULTS = Path(__file__).parent / "results"
TESTS = Path(__file__).resolve().parent.parent / "tests"  # tests/models imports itself as ``models``

AUTO = "auto"
REPLICATED, DATA_PARALLEL, FSDP, MEGATRON = "replicated", "data parallel", "FSDP (ZeRO-3)", "Megatron TP"
STANDARD = (REPLICATED, DATA_PARALLEL, FSDP, MEGATRON)
MUST_BEAT = (REPLICATED, DATA_PARALLEL, FSDP)  # judged as jax.jit of their argument layouts
FIDELITY = 0.10  # a pinned standard plan's prediction within this of its judged program
# Solves run to optimality, not to the wall clock: on a loaded machine the default 30 s
# stop hands on the heuristic start, and the table would depend on the machine's load.
TIME_LIMIT_S = 600.0
# The configs the suites' reports run (benchmarks.cli.DEFAULT_CONFIGS).
SUITE_CONFIGS = {
    "gpt": ["gpt-tiny", "gpt-small"],
    "bert": ["bert-tiny", "bert-small"],
    "moe": ["moe-tiny", "moe-small"],
    "wresnet": ["wresnet-tiny", "wresnet-small"],
    "mlp": ["mlp-dp", "mlp-tp", "mlp-tiny"],
}


@dataclasses.dataclass(frozen=True)
class Case:
    """A step ``train_step(params, opt_state, batch)``, abstract arguments, and the flat
    argument specs of each standard plan that applies, for a mesh."""

    name: str
    train_step: Callable
    args: tuple
    standard_specs: Callable  # MeshShape -> {standard plan name: [Spec per flat argument leaf]}


def _replicated(args) -> list:
    import jax

    return [tuple(() for _ in x.shape) for x in jax.tree_util.tree_leaves(args)]


def case_of_test_model(name: str, make: Callable) -> Case:
    """A tests/models step: data parallel and FSDP from argument positions alone (these
    models do not name their axes, so no Megatron)."""
    from benchmarks.models_vs_baselines import abstract, baseline_specs

    model = make()
    args = abstract(model.args)

    def specs(mesh) -> dict:
        names, sizes = tuple(mesh.axis_names), tuple(mesh.axis_sizes)
        return {REPLICATED: _replicated(args),
                **{s: baseline_specs(args, names, sizes, s) for s in (DATA_PARALLEL, FSDP)}}

    return Case(name, model.train_step, args, specs)


def suite_case(suite: str, config: str) -> Case:
    """A benchmark config: the hand baselines of benchmarks/baselines.py, Megatron included."""
    from benchmarks.baselines import Baseline, baseline_specs
    from benchmarks.models import get_workload

    workload = get_workload(suite, config)
    which = {REPLICATED: Baseline.REPLICATED, DATA_PARALLEL: Baseline.DATA_PARALLEL, FSDP: Baseline.FSDP,
             MEGATRON: Baseline.MEGATRON}

    def specs(mesh) -> dict:
        out = {name: baseline_specs(workload, mesh, b) for name, b in which.items()}
        if out[MEGATRON] == out[REPLICATED]:  # nothing the model names divides: not a plan of its own
            del out[MEGATRON]
        return out

    return Case(config, workload.train_step, workload.args, specs)


def pins_of(args, specs: Sequence) -> tuple:
    """Pins fixing every argument leaf to its spec: ((keystr path, PartitionSpec), ...)."""
    import jax

    from shardsearch.apply.mesh import to_partition_spec

    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(args)[0]]
    return tuple((path, to_partition_spec(spec)) for path, spec in zip(paths, specs))


GPU, CPU = "gpu", "cpu"  # which judge a row's figure is from


@dataclasses.dataclass(frozen=True)
class Row:
    model: str
    cluster: str
    plan: str  # AUTO, or a standard plan's name
    how: str  # "searched" (auto or pinned through the search) or "jax.jit" (its layouts, XLA the rest)
    judged_s: float  # the GPU program with overlap (or, judge == CPU, the CPU program without)
    compute_s: float
    comm_s: float  # every collective, no overlap
    predicted_s: float | None = None  # the planner's figure; searched rows only
    plan_s: float | None = None  # trace + search; searched rows only
    remat: int = 0  # XLA's "Involuntary full rematerialization" messages while compiling it
    judge: str = GPU
    cpu_judged_s: float | None = None  # the CPU program judged without overlap (--cpu)
    predicted_compute_s: float | None = None  # the planner's compute; searched rows only

    @property
    def error(self) -> float | None:
        """predicted / judged - 1."""
        return None if self.predicted_s is None else self.predicted_s / self.judged_s - 1.0

    @property
    def cpu_ratio(self) -> float | None:
        """predicted / CPU judged."""
        return None if self.predicted_s is None or self.cpu_judged_s is None else self.predicted_s / self.cpu_judged_s


def _compile_logged(lowered) -> tuple:
    """(compiled, XLA's involuntary rematerializations while compiling it)."""
    from benchmarks.judge.xla_log import involuntary_rematerializations, xla_log

    with xla_log() as log:
        compiled = lowered.compile()
    return compiled, len(involuntary_rematerializations(log.text))


def compile_gpu(lowered) -> tuple:
    """(compiled for the GPU target, rematerializations); a dot XLA's Triton emitter finds no
    tile for without a device is compiled with cuBLAS gemms (as ``judge.lhs``)."""
    from benchmarks.judge.lhs import _NO_TILE, CUBLAS_GEMMS
    from benchmarks.judge.xla_log import involuntary_rematerializations, xla_log

    with xla_log() as log:
        try:
            compiled = lowered.compile()
        except Exception as e:  # jax raises JaxRuntimeError for compiler failures
            if _NO_TILE not in str(e):
                raise
            compiled = lowered.compile(compiler_options=CUBLAS_GEMMS)
    return compiled, len(involuntary_rematerializations(log.text))


def judge_on_gpu(lowered, cluster) -> tuple[float, int]:
    """(seconds with overlap, XLA's involuntary rematerializations) of a program lowered for
    ``cluster``'s GPUs."""
    from benchmarks.judge import judge_gpu

    compiled, remat = compile_gpu(lowered)
    return judge_gpu(compiled, cluster).overlap_s, remat


def judged_pair(cluster, lower_gpu: Callable, cpu_compiled=None, say: Callable[[str], None] = lambda m: None):
    """(judge, total, compute, comm, remat, CPU total or None): the GPU program of
    ``lower_gpu()`` judged with overlap; where the plugin refuses the target, the CPU
    program (``cpu_compiled``: (compiled, remat)) judged without overlap, labelled CPU."""
    from benchmarks.judge import judge, judge_gpu
    from shardsearch.errors import TargetError

    cpu = None if cpu_compiled is None else judge(cpu_compiled[0], cluster)
    try:
        compiled, remat = compile_gpu(lower_gpu())
    except TargetError as e:
        if cpu is None:
            raise
        say(f"GPU target refused for {cluster.name} ({e}); judged on the CPU program")
        return CPU, cpu.total_s, cpu.compute_s, cpu.comm_s, cpu_compiled[1], cpu.total_s
    j = judge_gpu(compiled, cluster)
    remat += 0 if cpu_compiled is None else cpu_compiled[1]
    return GPU, j.overlap_s, j.compute_s, j.comm_s, remat, None if cpu is None else cpu.total_s


def searched(case: Case, mesh, cluster, pins=None):
    """(plan, the step, seconds to plan) of the search, with the pins given. The plan does
    not depend on the mesh's devices: ``step.lower`` compiles it for the CPU mesh at hand,
    ``step.lower_for_cluster`` for the cluster's GPUs."""
    import shardsearch as ss

    t0 = time.perf_counter()
    step = ss.auto(case.train_step, mesh=mesh, cluster=cluster, pins=pins, cache=False, time_limit_s=TIME_LIMIT_S,
                   compare=False, pipeline=None)  # the recipes do not change the plan; one program over the mesh
    plan = step.plan_for(*case.args)
    return plan, step, time.perf_counter() - t0


def hand_lowered(case: Case, mesh, specs: Sequence):
    """The jax.jit program of the step with ``specs`` as its argument layouts, lowered over ``mesh``."""
    from benchmarks.models_vs_baselines import lower_with_specs

    return lower_with_specs(case.train_step, case.args, mesh, specs)


def run_case(case: Case, clusters: Sequence, mesh, say: Callable[[str], None] = lambda m: None,
             cpu: bool = False) -> list[Row]:
    """The rows of one case on every cluster: judged on GPU programs; ``cpu``: the CPU
    programs judged without overlap as well."""
    from cost_model import MeshShape
    from shardsearch.target import target_mesh

    mshape = MeshShape(tuple(mesh.axis_names), tuple(mesh.devices.shape))
    specs = case.standard_specs(mshape)
    hand_cpu = {name: _compile_logged(hand_lowered(case, mesh, specs[name])) for name in specs} if cpu else {}
    rows = []
    for cluster in clusters:
        for name in (AUTO, *specs):
            pins = None if name == AUTO else pins_of(case.args, specs[name])
            plan, step, plan_s = searched(case, mesh, cluster, pins)
            cpu_c = _compile_logged(step.lower(*case.args)) if cpu else None
            judge_, total, comp, comm, remat, cpu_s = judged_pair(
                cluster, lambda: step.lower_for_cluster(*case.args), cpu_c, say)
            rows.append(Row(case.name, cluster.name, name, "searched", total, comp, comm,
                            predicted_s=plan.predicted.total_s, plan_s=plan_s, remat=remat, judge=judge_,
                            cpu_judged_s=cpu_s, predicted_compute_s=plan.predicted.compute_s))
        for name in specs:
            judge_, total, comp, comm, _, cpu_s = judged_pair(
                cluster, lambda: hand_lowered(case, target_mesh(cluster, mshape), specs[name]), hand_cpu.get(name), say)
            rows.append(Row(case.name, cluster.name, name, "jax.jit", total, comp, comm, judge=judge_,
                            cpu_judged_s=cpu_s))
        got = {(r.plan, r.how): r for r in rows if r.cluster == cluster.name}
        auto = got[(AUTO, "searched")]
        best = min(got[(n, "jax.jit")].judged_s for n in MUST_BEAT)
        say(f"{case.name} on {cluster.name}: auto {auto.judged_s * 1e3:.4f} ms judged ({auto.judge}; "
            f"{auto.predicted_s * 1e3:.4f} predicted), best of replicated/DP/FSDP {best * 1e3:.4f} ms; "
            + ", ".join(f"pinned {n} {got[(n, 'searched')].error:+.1%} (compute "
                        f"{got[(n, 'searched')].predicted_compute_s / got[(n, 'searched')].compute_s - 1:+.1%})"
                        for n in specs))
    return rows


# ---- verdicts and report -------------------------------------------------------------------


def auto_verdict(rows: Sequence[Row], model: str, cluster: str) -> tuple[float, float]:
    """(auto judged, best judged of replicated / data parallel / FSDP as jax.jit)."""
    got = {(r.plan, r.how): r for r in rows if r.model == model and r.cluster == cluster}
    best = min(got[(n, "jax.jit")].judged_s for n in MUST_BEAT if (n, "jax.jit") in got)
    return got[(AUTO, "searched")].judged_s, best


def mispriced(rows: Sequence[Row]) -> list[Row]:
    """Pinned standard plans predicted more than FIDELITY off their judged program."""
    return [r for r in rows if r.plan in STANDARD and r.how == "searched" and abs(r.error) > FIDELITY]


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.4f}"


def markdown(rows: Sequence[Row], mesh: str, notes: str = "") -> str:
    keys = list(dict.fromkeys((r.model, r.cluster) for r in rows))
    cpu = any(r.cpu_judged_s is not None for r in rows)
    lines = [
        f"# The standard plans in the search space (mesh {mesh})",
        "",
        "Each standard plan's argument layouts pinned (`ss.auto(..., pins=...)`): the search "
        "chooses the rest, the program is compiled for the cluster's GPUs (deviceless, "
        "`step.lower_for_cluster`) and judged with overlap (`benchmarks.judge.judge_gpu`: each "
        "kernel's roofline, the collectives replayed asynchronously). *pred/judged* is the planner's "
        f"evaluation of that pinned plan over the judged program (within {FIDELITY:.0%} is the bar). "
        "*jax.jit* is the same argument layouts compiled by XLA alone for the same GPUs. The auto plan "
        "must be judged no slower than the best jax.jit of replicated, data parallel and FSDP. "
        "*judge*: gpu, or cpu where the plugin refused the cluster's topology (the CPU program judged "
        "without overlap). *XLA remat*: \"Involuntary full rematerialization\" messages while "
        "compiling the auto and pinned plans. Regenerate with "
        "`python -m benchmarks.standard_plans --cluster h100-8 --cluster 2x4-slow`"
        + (" --cpu` (*CPU*: auto / best and each pinned plan's pred/judged on the CPU-compiled programs "
           "judged without overlap, the bar before 2026-12-07)." if cpu else "`."),
        "",
        "| model | cluster | judge | auto ms | auto pred ms | best of R/DP/FSDP ms | auto / best | ok "
        "| R pinned ms (pred/judged) | DP pinned ms (pred/judged) | FSDP pinned ms (pred/judged) "
        "| Megatron pinned ms (pred/judged) | R / DP / FSDP / Megatron jax.jit ms | XLA remat |"
        + (" CPU: auto / best; R / DP / FSDP / Megatron pred/judged |" if cpu else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if cpu else ""),
    ]
    for model, cluster in keys:
        got = {(r.plan, r.how): r for r in rows if r.model == model and r.cluster == cluster}
        auto, best = auto_verdict(rows, model, cluster)

        def pinned(name):
            r = got.get((name, "searched"))
            if r is None:
                return "-"
            flag = "**" if abs(r.error) > FIDELITY else ""
            return f"{_ms(r.judged_s)} ({flag}{r.predicted_s / r.judged_s:.2f}{flag})"

        hand = " / ".join(_ms(got[(n, "jax.jit")].judged_s) if (n, "jax.jit") in got else "-" for n in STANDARD)
        line = (
            f"| {model} | {cluster} | {'/'.join(sorted({r.judge for r in got.values()}))} | {_ms(auto)} "
            f"| {_ms(got[(AUTO, 'searched')].predicted_s)} | {_ms(best)} "
            f"| {auto / best:.3f} | {'yes' if auto <= best * (1 + 1e-9) else '**no**'} "
            f"| {' | '.join(pinned(n) for n in STANDARD)} | {hand} "
            f"| {sum(r.remat for r in got.values())} |"
        )
        if cpu:
            line += f" {_cpu_cell(got)} |"
        lines.append(line)
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"


def _cpu_cell(got: dict) -> str:
    """``auto / best; R / DP / FSDP / Megatron pred/judged`` on the CPU programs."""
    auto = got[(AUTO, "searched")].cpu_judged_s
    hand = [got[(n, "jax.jit")].cpu_judged_s for n in MUST_BEAT if (n, "jax.jit") in got]
    if auto is None or not hand or None in hand:
        return "-"
    ratios = [got[(n, "searched")].cpu_ratio if (n, "searched") in got else None for n in STANDARD]
    return f"{auto / min(hand):.3f}; " + " / ".join("-" if x is None else f"{x:.2f}" for x in ratios)


def all_cases(models: Sequence[str] | None = None) -> list[Callable[[], Case]]:
    """Makers of every tests/models case and every suite config (or those named, in that order)."""
    sys.path.insert(0, str(TESTS))
    from models import CASES

    makers = [(n, (lambda n=n: case_of_test_model(n, CASES[n]))) for n in sorted(CASES)]
    makers += [(c, (lambda s=s, c=c: suite_case(s, c))) for s, configs in SUITE_CONFIGS.items() for c in configs]
    if not models:
        return [m for _, m in makers]
    by_name = dict(makers)
    return [by_name[n] for n in models if n in by_name]  # in the order asked


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.standard_plans", description=__doc__)
    ap.add_argument("--cluster", action="append", default=None, help="preset or profile JSON; repeat for several")
    ap.add_argument("--mesh", default="2x4")
    ap.add_argument("--model", action="append", default=None, help="tests/models name or suite config; default: all")
    ap.add_argument("--out", type=Path, default=RESULTS / "standard-plans.md")
    ap.add_argument("--notes", type=Path, default=None, help="markdown appended to the report")
    ap.add_argument("--cpu", action="store_true", help="also judge the CPU-compiled programs (without overlap)")
    a = ap.parse_args(argv)
    shape = tuple(int(t) for t in a.mesh.lower().split("x"))
    flag = f"--xla_force_host_platform_device_count={max(8, int(__import__('math').prod(shape)))}"
    if flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from benchmarks.runner import make_mesh
    from cost_model import Cluster

    clusters = [Cluster.load(c) for c in (a.cluster or ["h100-8", "2x4-slow"])]
    mesh = make_mesh(shape)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    rows: list[Row] = []
    a.out.parent.mkdir(parents=True, exist_ok=True)
    for make in all_cases(a.model):
        rows += run_case(make(), clusters, mesh, say, cpu=a.cpu)
        # written after every case: a long run stopped early still leaves its rows
        a.out.write_text(markdown(rows, a.mesh, a.notes.read_text() if a.notes else ""))
    print(f"report written to {a.out}")


if __name__ == "__main__":
    main()
