"""Run shardsearch and the hand-written baselines on a suite; judge every compiled program.

Across nodes (a mesh larger than one node, either target) two more rows: shardsearch with
``pipeline=None`` (its best plan without stages, when the chosen one is pipelined) and
the hand Megatron 3-D recipe (``benchmarks.megatron3d``: a stage per node, tensor
parallel inside) on the same pipeline runtime. A pipelined program is judged by
``benchmarks.judge.pipeline`` (its stages' programs combined by the schedule).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Callable, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

import shardsearch as ss
from benchmarks.baselines import Baseline, applicable, lower_baseline
from benchmarks.judge import compile_with_estimate, judge, judge_gpu, judge_pipeline
from benchmarks.judge.lhs import CUBLAS_GEMMS
from benchmarks.megatron3d import NAME as MEGATRON_3D
from benchmarks.megatron3d import plan_3d
from benchmarks.wallclock import concrete_args, median_step_s
from benchmarks.models import get_workload
from cost_model import Cluster, MeshShape
from shardsearch.errors import MicrobatchError, StageError

SHARDSEARCH = "shardsearch"
SHARDSEARCH_INTRA = "shardsearch, no pipeline"  # pipeline=None: the search's best plan without stages
TARGETS = ("cpu", "gpu")  # compile for fake CPU devices, or deviceless for the cluster's GPUs


@dataclasses.dataclass(frozen=True)
class Row:
    suite: str
    config: str
    cluster: str
    mesh: str
    strategy: str  # SHARDSEARCH or a Baseline value
    total_s: float  # judged step time (compute + communication, no overlap)
    compute_s: float
    comm_s: float
    comm_bytes: float
    memory_bytes: float  # per device, from memory_analysis
    fits: bool  # memory_bytes <= the cluster's device memory
    ideal_s: float  # total FLOPs / (devices x peak)
    compile_s: float
    plan_s: float | None = None  # shardsearch only: trace + search
    predicted_s: float | None = None  # shardsearch only: what the cost model said
    predicted_compute_s: float | None = None  # shardsearch only: the prediction's compute
    predicted_comm_s: float | None = None  # ... and communication (on GPU clusters: what it leaves exposed)
    error: str | None = None
    wall_s: float | None = None  # measured on the devices at hand (fake CPU mesh), median
    target: str = "cpu"  # "gpu": compiled for the cluster's GPUs (shardsearch.target), judged with overlap
    overlap_s: float | None = None  # gpu: the scheduled program replayed with overlap
    exposed_comm_s: float | None = None  # gpu: overlap_s - compute_s
    xla_s: float | None = None  # gpu: XLA's latency-hiding scheduler's estimate of the step
    pipeline: str | None = None  # a pipelined program: its stages, microbatches and schedule, in words
    pipeline_ms: str | None = None  # a pipelined program: where its judged step goes (JudgedPipeline.breakdown)


def make_mesh(shape: Sequence[int]) -> Mesh:
    names = ("data", "model")[: len(shape)] if len(shape) <= 2 else tuple(f"axis{i}" for i in range(len(shape)))
    devices = np.array(jax.devices()[: math.prod(shape)]).reshape(tuple(shape))
    return Mesh(devices, names, axis_types=(AxisType.Auto,) * len(names))


def _row(base: dict, judged, cluster: Cluster, ideal_s: float, compile_s: float, **extra) -> Row:
    return Row(
        **base,
        total_s=judged.total_s,
        compute_s=judged.compute_s,
        comm_s=judged.comm_s,
        comm_bytes=judged.comm_bytes,
        memory_bytes=judged.memory_bytes,
        fits=judged.memory_bytes <= cluster.memory_bytes,
        ideal_s=ideal_s,
        compile_s=compile_s,
        overlap_s=getattr(judged, "overlap_s", None),
        exposed_comm_s=getattr(judged, "exposed_comm_s", None),
        xla_s=getattr(judged, "xla_estimate_s", None),
        pipeline=judged.describe() if hasattr(judged, "stages") else None,
        pipeline_ms=judged.breakdown() if hasattr(judged, "stages") else None,
        **extra,
    )


def _judged(lowered, cluster: Cluster, target: str):
    """(compiled, judged, compile seconds) of a lowered step, by the target's judge; a
    pipelined step's lowering (no ``jax.stages.Lowered``) by the pipeline judge."""
    t0 = time.perf_counter()
    if not isinstance(lowered, jax.stages.Lowered):
        try:
            compiled = lowered.compile()
        except Exception as e:  # as compile_with_estimate: a gemm Triton cannot tile without a device
            if target != "gpu" or "output tile sizes" not in str(e):
                raise
            compiled = lowered.compile(CUBLAS_GEMMS)
        return compiled, judge_pipeline(compiled, cluster), time.perf_counter() - t0
    if target == "gpu":
        compiled, estimate = compile_with_estimate(lowered)
        return compiled, judge_gpu(compiled, cluster, xla_estimate_s=estimate), time.perf_counter() - t0
    compiled = lowered.compile()
    return compiled, judge(compiled, cluster), time.perf_counter() - t0


def run_config(
    suite: str,
    config: str,
    cluster: Cluster,
    mesh_shape: Sequence[int],
    *,
    baselines: Sequence[Baseline] = tuple(Baseline),
    wallclock: bool = False,
    target: str = "cpu",
    pipeline: str | int | None = "auto",
    megatron_3d: bool = True,
    reference: bool = True,
    intra_op: bool = True,
    num_microbatches: int | None = None,
    say: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> list[Row]:
    """``target="gpu"``: every program compiled for the cluster's GPUs (deviceless) and
    judged with overlap (``benchmarks.judge.gpu``); nothing runs, so no wall clock.
    ``pipeline``: shardsearch's option ("auto": stages where its cost model says they pay);
    ``megatron_3d``: add the hand 3-D recipe's row on meshes larger than a node.
    ``reference=False``: no replicated program (no row for it; the ideal is the auto plan's
    FLOPs per device at peak): on a large mesh it is the slowest compile and no contender.
    ``intra_op=False``: no row for shardsearch's plan without stages beside a pipelined one."""
    workload = get_workload(suite, config)
    if target == "gpu":
        from shardsearch.target import target_mesh

        mesh, wallclock = target_mesh(cluster, tuple(mesh_shape)), False
    else:
        mesh = make_mesh(mesh_shape)
    mshape = MeshShape(tuple(mesh.axis_names), tuple(mesh.devices.shape))
    base = dict(suite=suite, config=config, cluster=cluster.name, mesh="x".join(map(str, mesh_shape)), target=target)
    rows: list[Row] = []
    host_args = concrete_args(workload.args) if wallclock else None

    def wall(compiled) -> dict:
        runs = wallclock and isinstance(compiled, jax.stages.Compiled)  # a pipeline is not one program
        return {"wall_s": median_step_s(compiled, host_args)} if runs else {}

    if reference:
        replicated, judged, replicated_s = _judged(lower_baseline(workload, mesh, Baseline.REPLICATED), cluster,
                                                   target)
        ideal_s = judged.flops / (mshape.size * cluster.peak_flops)
        say(f"  {config} {base['mesh']} ({target}): replicated reference compiled in {replicated_s:.1f} s")

    t0 = time.perf_counter()
    staged = {"pipeline": pipeline} if _pipelines() else {}
    if staged and num_microbatches is not None:
        staged["num_microbatches"] = num_microbatches
    step = ss.auto(workload.train_step, mesh=mesh, cluster=cluster, cache=False, **staged)  # time the search
    plan = step.plan_for(*workload.args)
    plan_s = time.perf_counter() - t0
    compiled, ours, compile_s = _judged(step.lower(*workload.args), cluster, target)
    if not reference:
        ideal_s = ours.flops / cluster.peak_flops  # per device already
    rows.append(_row({**base, "strategy": SHARDSEARCH}, ours, cluster, ideal_s, compile_s, plan_s=plan_s,
                     predicted_s=plan.predicted.total_s, predicted_compute_s=plan.predicted.compute_s,
                     predicted_comm_s=plan.predicted.comm_s, **wall(compiled)))
    say(f"  {config} {base['mesh']}: shardsearch planned in {plan_s:.1f} s, judged {rows[-1].total_s:.4g} s"
        + (f" ({rows[-1].pipeline})" if rows[-1].pipeline else ""))
    across = mshape.size > cluster.devices_per_node
    if rows[-1].pipeline and intra_op:
        rows.append(_intra_op_row(workload, mesh, cluster, base, ideal_s, target))
        say(f"  {config} {base['mesh']}: shardsearch without pipeline judged {rows[-1].total_s:.4g} s")
    if across and megatron_3d:
        try:
            rows.append(_megatron_3d_row(workload, mesh, mshape, cluster, base, ideal_s, target))
            say(f"  {config} {base['mesh']}: {MEGATRON_3D} judged {rows[-1].total_s:.4g} s ({rows[-1].pipeline})")
        except (StageError, MicrobatchError) as err:  # fewer layers than nodes, or a step microbatches change
            say(f"  {config} {base['mesh']}: no {MEGATRON_3D} row: {err}")

    for b in baselines:
        if not applicable(b, mshape) or (b is Baseline.REPLICATED and not reference):
            continue
        if b is Baseline.REPLICATED:
            compiled, priced, compile_s = replicated, judged, replicated_s
        else:
            compiled, priced, compile_s = _judged(lower_baseline(workload, mesh, b), cluster, target)
        rows.append(_row({**base, "strategy": b.value}, priced, cluster, ideal_s, compile_s, **wall(compiled)))
        say(f"  {config} {base['mesh']}: {b.value} judged {rows[-1].total_s:.4g} s")
    return rows


def run_suite(suite: str, configs: Sequence[str], cluster: Cluster | str, meshes: Sequence[Sequence[int]],
              **kw) -> list[Row]:
    cluster = Cluster.load(cluster)
    rows = []
    for config in configs:
        for mesh in meshes:
            rows += run_config(suite, config, cluster, mesh, **kw)
    return rows


def _intra_op_row(workload, mesh, cluster: Cluster, base: dict, ideal_s: float, target: str = "cpu") -> Row:
    """shardsearch's best plan without stages (``pipeline=None``), judged like the others."""
    t0 = time.perf_counter()
    step = ss.auto(workload.train_step, mesh=mesh, cluster=cluster, cache=False, pipeline=None)
    plan = step.plan_for(*workload.args)
    plan_s = time.perf_counter() - t0
    _, judged, compile_s = _judged(step.lower(*workload.args), cluster, target)
    return _row({**base, "strategy": SHARDSEARCH_INTRA}, judged, cluster, ideal_s, compile_s, plan_s=plan_s,
                predicted_s=plan.predicted.total_s)


def _megatron_3d_row(workload, mesh, mshape: MeshShape, cluster: Cluster, base: dict, ideal_s: float,
                     target: str = "cpu") -> Row:
    """The hand 3-D recipe on the pipeline runtime (``benchmarks.megatron3d``)."""
    plan = plan_3d(workload, mshape, cluster)
    _, judged, compile_s = _judged(plan.apply(workload.train_step, mesh=mesh).lower(*workload.args), cluster, target)
    return _row({**base, "strategy": MEGATRON_3D}, judged, cluster, ideal_s, compile_s,
                predicted_s=plan.predicted.total_s)


def _pipelines() -> bool:
    """Whether this shardsearch searches stages (``ss.auto(pipeline=...)``)."""
    return "pipeline" in {f.name for f in dataclasses.fields(ss.SearchConfig)}
