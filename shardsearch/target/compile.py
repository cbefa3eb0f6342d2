"""A plan lowered for the cluster's own GPUs (deviceless): ``step.lower_for_cluster(*args)``.

The same jitted program the plan runs on the devices at hand (``apply.build_jitted``:
in/out shardings and every planned constraint), built over the cluster's GPU topology
instead, so XLA's GPU compiler partitions, fuses and schedules it as it would on the
cluster: cuBLAS/Triton gemms, bf16 collectives, asynchronous start/done pairs placed by
its latency-hiding scheduler. ``.compile()`` gives that executable; its
``memory_analysis()`` is the GPU's (``cost_analysis()`` is ``None`` without a device).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import jax

from cost_model import Cluster
from shardsearch.apply.executable import build_jitted
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
    return jitted.lower(*abstract_args(args))
