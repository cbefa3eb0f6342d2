"""Hand-written shardings of the same train step, as a careful engineer would write them.

Each baseline maps the workload's *logical* axis names to mesh axes, then the step
is compiled with ``jax.jit(in_shardings=..., out_shardings=...)`` and XLA propagates
the rest. Megatron splits heads (Q/K/V/O kernels are separate [embed, heads,
head_dim] arrays, so a split never cuts across a concatenation), the MLP inner
dim, the vocabulary and the experts.
"""

from __future__ import annotations

import enum
from typing import Sequence

import jax
from jax.sharding import NamedSharding

from benchmarks.models.base import Workload
from cost_model import MeshShape, Spec
from shardsearch.plan import to_partition_spec

# Logical axes that tensor parallelism splits (Megatron).
TENSOR_AXES = ("heads", "mlp", "vocab", "experts")


class Baseline(enum.Enum):
    REPLICATED = "replicated"
    DATA_PARALLEL = "data parallel"
    FSDP = "FSDP (ZeRO-3)"
    MEGATRON = "Megatron TP"
    MEGATRON_SP = "Megatron TP + seq. parallel"
    DP_X_TP = "2-D data x tensor"
    FSDP_X_TP = "FSDP x tensor"


def _fits(size: int, axes: Sequence[str], mesh: MeshShape) -> bool:
    return bool(axes) and size % mesh.group_size(axes) == 0


def _place(shape, names, wanted: dict[str, tuple[str, ...]], mesh: MeshShape) -> list[tuple[str, ...]]:
    """Give each dim the mesh axes its logical name maps to, if it divides and they are unused."""
    spec: list[tuple[str, ...]] = [() for _ in shape]
    used: set[str] = set()
    for i, (n, name) in enumerate(zip(shape, names)):
        axes = tuple(a for a in wanted.get(name, ()) if a not in used and mesh.axis_size(a) > 1)
        if _fits(n, axes, mesh):
            spec[i] = axes
            used.update(axes)
    return spec


def _fsdp(shape, spec: list[tuple[str, ...]], axes: tuple[str, ...], mesh: MeshShape) -> list[tuple[str, ...]]:
    """ZeRO-3: also split the largest still-unsplit dim over ``axes`` (if it divides)."""
    free = tuple(a for a in axes if a not in {x for d in spec for x in d} and mesh.axis_size(a) > 1)
    order = sorted(range(len(shape)), key=lambda i: -shape[i])
    for i in order:
        if not spec[i] and _fits(shape[i], free, mesh):
            spec[i] = free
            break
    return spec


def _roles(mesh: MeshShape) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(data-parallel axes, tensor-parallel axes) for 2-D meshes: first / second axis."""
    names = tuple(a for a in mesh.axis_names if mesh.axis_size(a) > 1)
    if len(mesh.axis_names) >= 2:
        return (mesh.axis_names[0],), (mesh.axis_names[1],)
    return names, names


def applicable(baseline: Baseline, mesh: MeshShape) -> bool:
    real = [a for a in mesh.axis_names if mesh.axis_size(a) > 1]
    if baseline in (Baseline.DP_X_TP, Baseline.FSDP_X_TP):
        return len(real) >= 2
    return True


def baseline_specs(workload: Workload, mesh: MeshShape, baseline: Baseline) -> list[Spec]:
    """One spec per flat leaf of ``workload.args``."""
    leaves, treedef = jax.tree_util.tree_flatten(workload.args)
    names = treedef.flatten_up_to(workload.logical_axes)
    every = tuple(a for a in mesh.axis_names if mesh.axis_size(a) > 1)
    dp, tp = _roles(mesh)
    wanted: dict[str, tuple[str, ...]] = {}
    fsdp_axes: tuple[str, ...] = ()
    if baseline in (Baseline.DATA_PARALLEL, Baseline.FSDP):
        wanted = {"batch": every}
        fsdp_axes = every if baseline is Baseline.FSDP else ()
    elif baseline in (Baseline.MEGATRON, Baseline.MEGATRON_SP):
        wanted = {n: every for n in TENSOR_AXES}
        if baseline is Baseline.MEGATRON_SP:
            wanted["seq"] = every  # the batch's sequence dim; XLA propagates it to activations
    elif baseline in (Baseline.DP_X_TP, Baseline.FSDP_X_TP):
        wanted = {"batch": dp, **{n: tp for n in TENSOR_AXES}}
        fsdp_axes = dp if baseline is Baseline.FSDP_X_TP else ()
    specs = []
    for leaf, leaf_names in zip(leaves, names):
        shape = tuple(leaf.shape)
        leaf_names = tuple(leaf_names) if leaf_names else (None,) * len(shape)
        spec = _place(shape, leaf_names, wanted, mesh)
        if fsdp_axes and "batch" not in leaf_names:
            spec = _fsdp(shape, spec, fsdp_axes, mesh)
        specs.append(tuple(spec))
    return specs


def compile_baseline(workload: Workload, jax_mesh, baseline: Baseline):
    """``jax.jit`` of the step with the baseline's shardings, compiled from abstract args."""
    return lower_baseline(workload, jax_mesh, baseline).compile()


def lower_baseline(workload: Workload, jax_mesh, baseline: Baseline) -> jax.stages.Lowered:
    """``jax.jit`` of the step with the baseline's shardings, lowered from abstract args
    (for the mesh's devices: fake CPU ones, or a GPU target's, ``shardsearch.target``)."""
    mshape = MeshShape(tuple(jax_mesh.axis_names), tuple(jax_mesh.devices.shape))
    specs = baseline_specs(workload, mshape, baseline)
    shardings = [NamedSharding(jax_mesh, to_partition_spec(s)) for s in specs]
    treedef = jax.tree_util.tree_structure(workload.args)
    in_sh = jax.tree_util.tree_unflatten(treedef, shardings)
    out_sh = (in_sh[0], in_sh[1], NamedSharding(jax_mesh, to_partition_spec(())))
    jitted = jax.jit(workload.train_step, in_shardings=in_sh, out_shardings=out_sh)
    return jitted.lower(*workload.args)
