"""What XLA's GPU compiler needs to know about a device it will never see.

A GPU preset carries a ``gpu_target``: the device's figures that XLA's GPU compiler
reads from a live device when there is one (compute capability, SM count, shared
memory, L2, clock, memory size and bandwidth). ``GpuTarget.to_textproto()`` writes
them as XLA's ``GpuTargetConfigProto`` text, the ``target_config`` that
``jax.experimental.topologies.get_topology_desc(platform="cuda", ...)`` takes to
compile for that GPU on a machine without one (``shardsearch.target``).

The preset names only what differs between GPUs; the limits every CUDA GPU since
Volta shares (1024 threads a block, warps of 32, 48 KiB static shared memory a block,
2048 threads and 64 Ki registers an SM, grid limits) are filled in here. The same
figures are in the CUDA programming guide (compute capabilities table) and in XLA's
own ``xla/tools/hlo_opt/gpu_specs``.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

from .errors import ClusterError

_HINTS = {
    "name": "the device name CUDA reports, e.g. 'NVIDIA H100 80GB HBM3'",
    "compute_capability": "major.minor as a string, e.g. '9.0' for H100, '8.0' for A100",
    "core_count": "streaming multiprocessors, e.g. 132 for H100 SXM",
    "fpus_per_core": "FP32 lanes per SM, e.g. 128 for H100, 64 for A100",
    "memory_bandwidth": "HBM bytes/s, e.g. 3.35e12 for H100 SXM",
    "l2_cache_size": "L2 bytes, e.g. 52428800 (50 MiB) for H100",
    "clock_rate_ghz": "boost clock in GHz, e.g. 1.98 for H100 SXM",
    "device_memory_size": "bytes of device memory CUDA reports, e.g. 84978434048 for an 80 GB H100",
    "shared_memory_per_core": "shared memory bytes per SM, e.g. 233472 (228 KiB) for H100",
    "shared_memory_per_block_optin": "opt-in shared memory bytes per block, e.g. 232448 (227 KiB) for H100",
    "dnn_version": "the cuDNN version the cluster runs, 'major.minor', e.g. '9.8'",
}
_REQUIRED = ("name", "compute_capability", "core_count", "fpus_per_core", "memory_bandwidth",
             "l2_cache_size", "clock_rate_ghz", "device_memory_size", "shared_memory_per_core",
             "shared_memory_per_block_optin")
# Shared by every CUDA GPU since compute capability 7.0.
_COMMON = {
    "threads_per_block_limit": 1024,
    "threads_per_warp": 32,
    "shared_memory_per_block": 49152,
    "threads_per_core_limit": 2048,
    "block_dim_limit_x": 2147483647,
    "block_dim_limit_y": 65535,
    "block_dim_limit_z": 65535,
    "registers_per_core_limit": 65536,
    "registers_per_block_limit": 65536,
}


def _version(where: str, key: str, value: Any) -> tuple[int, int]:
    parts = value.split(".") if isinstance(value, str) else []
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ClusterError(f"{where} must be {_HINTS[key]}, got {value!r}; write it as a string like '9.0'")
    return int(parts[0]), int(parts[1])


def _positive(where: str, key: str, value: Any, integer: bool) -> float | int:
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, float) and integer and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        need = "a positive integer" if integer else "a positive number"
        raise ClusterError(f"{where} must be {need} ({_HINTS[key]}), got {value!r}; fix the value")
    return int(value) if integer else float(value)


@dataclasses.dataclass(frozen=True)
class GpuTarget:
    """One GPU model as XLA's compiler sees it (see the module doc)."""

    name: str
    compute_capability: tuple[int, int]
    core_count: int
    fpus_per_core: int
    memory_bandwidth: float
    l2_cache_size: int
    clock_rate_ghz: float
    device_memory_size: int
    shared_memory_per_core: int
    shared_memory_per_block_optin: int
    dnn_version: tuple[int, int] = (9, 8)

    @classmethod
    def from_dict(cls, d: Any, where: str = "cluster 'gpu_target'") -> GpuTarget:
        """Strictly validated, like ``Cluster.from_dict``: each problem names its key."""
        if not isinstance(d, dict):
            raise ClusterError(f"{where} must be a dict with keys {', '.join(_REQUIRED)}, got {d!r}; "
                               "write it as such a dict (see cost_model/profiles/h100-8.json)")
        allowed = _REQUIRED + ("dnn_version",)
        for k in d:
            if k not in allowed:
                raise ClusterError(f"{where} has unknown key {k!r} (value {d[k]!r}); allowed keys: "
                                   f"{', '.join(allowed)}; remove or rename it")
        for k in _REQUIRED:
            if k not in d:
                raise ClusterError(f"{where} is missing {k!r} ({_HINTS[k]}); add it")
        if not isinstance(d["name"], str) or not d["name"]:
            raise ClusterError(f"{where}.name must be {_HINTS['name']}, got {d['name']!r}; quote it")
        floats = ("memory_bandwidth", "clock_rate_ghz")
        figures = {k: _positive(f"{where}.{k}", k, d[k], integer=k not in floats)
                   for k in _REQUIRED if k not in ("name", "compute_capability")}
        return cls(
            name=d["name"],
            compute_capability=_version(f"{where}.compute_capability", "compute_capability", d["compute_capability"]),
            dnn_version=_version(f"{where}.dnn_version", "dnn_version", d.get("dnn_version", "9.8")),
            **figures,
        )

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["compute_capability"] = "%d.%d" % self.compute_capability
        d["dnn_version"] = "%d.%d" % self.dnn_version
        return d

    def to_textproto(self) -> str:
        """XLA's ``GpuTargetConfigProto`` in text form (jax's ``target_config``)."""
        info = dict(_COMMON)
        for k in ("core_count", "fpus_per_core", "l2_cache_size", "device_memory_size",
                  "shared_memory_per_core", "shared_memory_per_block_optin"):
            info[k] = getattr(self, k)
        info["memory_bandwidth"] = int(self.memory_bandwidth)
        info["clock_rate_ghz"] = self.clock_rate_ghz
        lines = [f"  {k}: {v}" for k, v in info.items()]
        major, minor = self.compute_capability
        lines.append(f"  cuda_compute_capability {{ major: {major} minor: {minor} }}")
        return "\n".join([
            "gpu_device_info {", *lines, "}",
            'platform_name: "CUDA"',
            "dnn_version_info {{ major: {} minor: {} }}".format(*self.dnn_version),
            f'device_description_str: "{self.name}"',
            "",
        ])
