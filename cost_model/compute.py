"""Roofline time of an operator: bound by either its FLOPs or its memory traffic.

    seconds = max(flops / (peak * efficiency), bytes_accessed / hbm_bandwidth)

``peak`` is ``Cluster.peak_flops_for(dtype)`` when the caller names the dtype the
operator computes in (a bf16 matmul on float32 weights computes in bf16), else
``Cluster.peak_flops``. ``efficiency`` is 1 except for a matmul (``matmul=True``),
where it is the cluster's ``matmul_efficiency`` curve at the operator's FLOPs per
device: small matmuls do not fill the machine (too few tiles for the SMs, a fixed
launch cost), so splitting a matmul finer buys less than the FLOPs suggest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cluster import Cluster


def compute_time(cluster: Cluster, flops: float, bytes_accessed: float, dtype: Any = None, *,
                 matmul: bool = False) -> float:
    """Seconds on one device for an operator of ``flops`` and ``bytes_accessed`` (per device)."""
    peak = cluster.peak_flops if dtype is None else cluster.peak_flops_for(dtype)
    if matmul:
        peak *= cluster.matmul_efficiency_at(flops)
    return max(float(flops) / peak, float(bytes_accessed) / cluster.hbm_bandwidth)
