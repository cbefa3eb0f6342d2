"""A plan lowered for the cluster's own GPUs (deviceless): ``step.lower_for_cluster(*args)``.

The same jitted program the plan runs on the devices at hand (``apply.build_jitted``:
in/out shardings and every planned constraint), built over the cluster's GPU topology
instead, so XLA's GPU compiler partitions, fuses and schedules it as it would on the
cluster: cuBLAS/Triton gemms, bf16 collectives, asynchronous start/done pairs placed by
its latency-hiding scheduler. ``.compile()`` gives that executable; its
``memory_analysis()`` is the GPU's (``cost_analysis()`` is ``None`` without a device).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Sequence

import jax

from cost_model import Cluster
from shardsearch.apply.executable import build_jitted
from shardsearch.errors import TargetError
from shardsearch.target.gpu import target_mesh
from shardsearch.trace import abstract_args

if TYPE_CHECKING:  # plan.apply(fn) reaches this module: no import back
    from shardsearch.graph import OpGraph
    from shardsearch.plan import Plan


def lower_for_cluster(graph: OpGraph, plan: Plan, cluster: Cluster, args: Sequence[Any], *,
                      donate_argnums: Sequence[int] = (), constrain: bool = True) -> jax.stages.Lowered:
    """``plan`` applied to ``graph`` and lowered for ``cluster``'s GPUs (see the module doc)."""
    mesh = target_mesh(cluster, plan.mesh)
    jitted = build_jitted(graph, plan, mesh, donate_argnums=donate_argnums, constrain=constrain)
    lowered = jitted.lower(*abstract_args(args))
    lowered.__class__ = _lowered_for(cluster.gpu_target.name)  # still a jax.stages.Lowered
    return lowered


NO_PTXAS = (
    "the CUDA assembler on this machine ({ptxas}) cannot compile for {gpu}: {error}. Deviceless "
    "compilation assembles the kernels with the ptxas found on PATH; a CUDA toolkit that still "
    "targets this GPU (CUDA 12 for Volta, sm_70) must come first on PATH, or plan for a cluster "
    "with a newer GPU"
)


class TargetLowered(jax.stages.Lowered):
    """A ``jax.stages.Lowered`` for a deviceless GPU target whose ``compile`` says what to
    do when the machine's CUDA tools cannot build for that GPU (a raw XLA error otherwise)."""

    __slots__ = ()
    gpu = "this GPU"

    def compile(self, compiler_options=None, **kwargs) -> jax.stages.Compiled:
        try:
            return super().compile(compiler_options, **kwargs)
        except jax.errors.JaxRuntimeError as e:
            message = str(e)
            if "ptxas" not in message:
                raise
            ptxas = next((w for w in message.split() if w.endswith("ptxas")), "ptxas")
            raise TargetError(NO_PTXAS.format(ptxas=ptxas, gpu=self.gpu, error=message.strip())) from e


@functools.lru_cache(maxsize=None)
def _lowered_for(gpu: str) -> type:
    return type("TargetLowered", (TargetLowered,), {"__slots__": (), "gpu": gpu})
