"""Roofline time of an operator: bound by either its FLOPs or its memory traffic."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cluster import Cluster


def compute_time(cluster: Cluster, flops: float, bytes_accessed: float) -> float:
    """Seconds on one device: max(flops / peak_flops, bytes_accessed / hbm_bandwidth)."""
    return max(float(flops) / cluster.peak_flops, float(bytes_accessed) / cluster.hbm_bandwidth)
