"""The hardware a plan is optimized for: compute, memory and the two kinds of link.

A ``Cluster`` is plain data. It comes from a dict (``Cluster.from_dict``), a preset
name (``cost_model/profiles/<name>.json``), or a profile JSON file (``Cluster.load``).
Device ``i`` of a mesh (flat, row-major order) sits on node ``i // devices_per_node``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import math
import numbers
import os
from typing import Any, Sequence

from .errors import ClusterError, ShardsearchError
from .mesh import MeshShape

DEFAULT_PRESET = "h100-8"

# What each key means, with an example; every error message quotes this.
_HINTS = {
    "name": "a short string naming the cluster, e.g. 'my-h100-pod'",
    "description": "free text describing the hardware",
    "sources": "a list of strings: where the figures come from",
    "devices_per_node": "devices that share one node's fast interconnect, e.g. 8",
    "peak_flops": "per-device FLOP/s, e.g. 9.89e14 for H100 bf16",
    "memory_bytes": "per-device memory in bytes, e.g. 8e10 for an 80 GB GPU",
    "hbm_bandwidth": "per-device memory bandwidth in bytes/s, e.g. 3.35e12 for H100",
    "intra_node": '{"bandwidth": bytes/s per device, "latency": s}, e.g. '
    '{"bandwidth": 4.5e11, "latency": 5e-6} for NVLink4',
    "inter_node": '{"bandwidth": bytes/s per device, "latency": s}, e.g. '
    '{"bandwidth": 5e10, "latency": 1e-5} for 400 Gb/s InfiniBand',
    "bandwidth": "bytes/s per device, e.g. 4.5e11",
    "latency": "seconds per message step, e.g. 5e-6",
}
_REQUIRED = ("devices_per_node", "peak_flops", "memory_bytes", "intra_node", "inter_node")
_OPTIONAL = ("name", "hbm_bandwidth", "description", "sources")
_LINK_KEYS = ("bandwidth", "latency")


def _number(where: str, key: str, value: Any, *, allow_zero: bool = False) -> float:
    """A finite positive (or, for latency, non-negative) real number, or ClusterError."""
    hint = _HINTS[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ClusterError(
            f"{where} must be a number ({hint}), got {value!r} ({type(value).__name__}); "
            "write it as a JSON/Python number, not a string")
    bad = not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero)
    if bad:
        need = "non-negative" if allow_zero else "positive"
        raise ClusterError(f"{where} must be a finite {need} number ({hint}), got {value!r}; fix the value")
    return float(value)


@dataclasses.dataclass(frozen=True)
class Link:
    """One kind of interconnect, seen from a single device."""

    bandwidth: float  # bytes/s per device
    latency: float  # s per message step

    def __post_init__(self):
        object.__setattr__(self, "bandwidth", _number("Link.bandwidth", "bandwidth", self.bandwidth))
        object.__setattr__(self, "latency", _number("Link.latency", "latency", self.latency, allow_zero=True))

    @classmethod
    def from_dict(cls, d: Any, where: str = "link") -> Link:
        if not isinstance(d, dict):
            raise ClusterError(f"{where} must be a dict {_HINTS['intra_node']}, got {d!r}; write it as such a dict")
        for k in d:
            if k not in _LINK_KEYS:
                raise ClusterError(f"{where} has unknown key {k!r} (value {d[k]!r}); allowed keys: "
                                   f"{', '.join(_LINK_KEYS)}; remove or rename it")
        for k in _LINK_KEYS:
            if k not in d:
                raise ClusterError(f"{where} is missing {k!r} ({_HINTS[k]}); add it")
        bw = _number(f"{where}.bandwidth", "bandwidth", d["bandwidth"])
        lat = _number(f"{where}.latency", "latency", d["latency"], allow_zero=True)
        return cls(bw, lat)

    def to_dict(self) -> dict:
        return {"bandwidth": self.bandwidth, "latency": self.latency}


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Per-device figures of the target hardware. Hashable (used as a cache key)."""

    name: str
    devices_per_node: int
    peak_flops: float  # per device FLOP/s
    memory_bytes: float  # per device
    intra_node: Link
    inter_node: Link
    hbm_bandwidth: float | None = None  # bytes/s per device; None -> peak_flops / 100
    # Documentation only: two clusters with the same figures compare equal.
    description: str = dataclasses.field(default="", compare=False, repr=False)
    sources: tuple[str, ...] = dataclasses.field(default=(), compare=False, repr=False)

    def __post_init__(self):
        dpn = self.devices_per_node
        if isinstance(dpn, bool) or not isinstance(dpn, numbers.Integral) or dpn < 1:
            raise ClusterError(f"cluster 'devices_per_node' must be a positive integer "
                               f"({_HINTS['devices_per_node']}), got {dpn!r}; fix the value")
        object.__setattr__(self, "devices_per_node", int(dpn))
        for key in ("peak_flops", "memory_bytes"):
            object.__setattr__(self, key, _number(f"cluster {key!r}", key, getattr(self, key)))
        for key in ("intra_node", "inter_node"):
            if not isinstance(getattr(self, key), Link):
                raise ClusterError(f"cluster {key!r} must be a Link, got {getattr(self, key)!r}; "
                                   f"pass Link(bandwidth, latency) or use Cluster.from_dict")
        hbm = self.peak_flops / 100 if self.hbm_bandwidth is None else self.hbm_bandwidth
        object.__setattr__(self, "hbm_bandwidth", _number("cluster 'hbm_bandwidth'", "hbm_bandwidth", hbm))
        object.__setattr__(self, "sources", tuple(self.sources))

    # ---- dicts -----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: Any) -> Cluster:
        """Strictly validated: every problem raises ClusterError naming the key and the fix."""
        if not isinstance(d, dict):
            raise ClusterError(f"a cluster description must be a dict with keys {', '.join(_REQUIRED)}, "
                               f"got {type(d).__name__}; pass a dict")
        for k in d:
            if k not in _REQUIRED + _OPTIONAL:
                raise ClusterError(f"cluster dict has unknown key {k!r} (value {d[k]!r}); allowed keys: "
                                   f"{', '.join(_REQUIRED + _OPTIONAL)}; remove or rename it")
        for k in _REQUIRED:
            if k not in d:
                raise ClusterError(f"cluster dict is missing {k!r} ({_HINTS[k]}); add it")
        name = d.get("name", "custom")
        description = d.get("description", "")
        for key, val in (("name", name), ("description", description)):
            if not isinstance(val, str):
                raise ClusterError(f"cluster {key!r} must be a string ({_HINTS[key]}), got {val!r}; quote it")
        sources = d.get("sources", [])
        if isinstance(sources, str) or not isinstance(sources, (list, tuple)) or \
                not all(isinstance(s, str) for s in sources):
            raise ClusterError(f"cluster 'sources' must be {_HINTS['sources']}, got {sources!r}; "
                               "write it as a list of strings")
        dpn = d["devices_per_node"]
        if isinstance(dpn, float) and dpn.is_integer():
            dpn = int(dpn)  # JSON writers sometimes emit 8.0
        hbm = d.get("hbm_bandwidth")
        return cls(
            name=name,
            devices_per_node=dpn,
            peak_flops=_number("cluster 'peak_flops'", "peak_flops", d["peak_flops"]),
            memory_bytes=_number("cluster 'memory_bytes'", "memory_bytes", d["memory_bytes"]),
            intra_node=Link.from_dict(d["intra_node"], "cluster 'intra_node'"),
            inter_node=Link.from_dict(d["inter_node"], "cluster 'inter_node'"),
            hbm_bandwidth=None if hbm is None else _number("cluster 'hbm_bandwidth'", "hbm_bandwidth", hbm),
            description=description,
            sources=tuple(sources),
        )

    def to_dict(self) -> dict:
        d = {
            "name": self.name,
            "devices_per_node": self.devices_per_node,
            "peak_flops": self.peak_flops,
            "memory_bytes": self.memory_bytes,
            "hbm_bandwidth": self.hbm_bandwidth,
            "intra_node": self.intra_node.to_dict(),
            "inter_node": self.inter_node.to_dict(),
        }
        if self.description:
            d["description"] = self.description
        if self.sources:
            d["sources"] = list(self.sources)
        return d

    # ---- loading ---------------------------------------------------------------------

    @classmethod
    def load(cls, x: Cluster | str | os.PathLike | dict | None = None) -> Cluster:
        """A Cluster, None (the default preset), a preset name, a JSON path, or a dict."""
        if x is None:
            x = DEFAULT_PRESET
        if isinstance(x, Cluster):
            return x
        if isinstance(x, dict):
            return cls.from_dict(x)
        if isinstance(x, str) and x in preset_names():
            return _load_preset(x)
        if isinstance(x, (str, os.PathLike)):
            path = os.fspath(x)
            if os.path.exists(path) or path.endswith(".json"):
                return _load_path(path)
            raise ClusterError(f"unknown cluster {path!r}: not a preset and no such file; "
                               f"use one of {', '.join(preset_names())} or a path to a profile JSON")
        raise ClusterError(f"cluster must be a Cluster, a preset name, a JSON path or None, "
                           f"got {type(x).__name__}; presets: {', '.join(preset_names())}")

    # ---- topology --------------------------------------------------------------------

    def crosses_nodes(self, mesh: MeshShape, axes: str | Sequence[str]) -> bool:
        """Whether some group of a collective over ``axes`` spans more than one node."""
        return _crosses(self.devices_per_node, mesh, _axes_tuple(mesh, axes))

    def link_for(self, mesh: MeshShape, axes: str | Sequence[str]) -> Link:
        return self.inter_node if self.crosses_nodes(mesh, axes) else self.intra_node


def _axes_tuple(mesh: MeshShape, axes: str | Sequence[str]) -> tuple[str, ...]:
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    for a in axes:
        if a not in mesh.axis_names:
            raise ShardsearchError(f"mesh axis {a!r} is not in the mesh {mesh.axis_names}; "
                                   "use one of the mesh's axis names")
    return axes


@functools.lru_cache(maxsize=4096)
def _crosses(devices_per_node: int, mesh: MeshShape, axes: tuple[str, ...]) -> bool:
    if not axes:
        return False
    nodes = mesh.device_groups(axes) // devices_per_node
    return bool((nodes != nodes[:, :1]).any())


# ---- presets ---------------------------------------------------------------------------

def _profiles():
    return importlib.resources.files("cost_model.profiles")


def preset_names() -> list[str]:
    """Names of the bundled cluster presets (file stems in cost_model/profiles)."""
    return sorted(p.name[:-5] for p in _profiles().iterdir() if p.name.endswith(".json"))


@functools.lru_cache(maxsize=None)
def _load_preset(name: str) -> Cluster:
    d = json.loads(_profiles().joinpath(f"{name}.json").read_text())
    return Cluster.from_dict({**d, "name": name})


def _load_path(path: str) -> Cluster:
    try:
        with open(path) as f:
            d = json.load(f)
    except OSError as e:
        raise ClusterError(f"cannot read cluster profile {path!r} ({e.strerror}); "
                           f"check the path, or use a preset: {', '.join(preset_names())}") from e
    except json.JSONDecodeError as e:
        raise ClusterError(f"cluster profile {path!r} is not valid JSON ({e}); fix the file") from e
    if isinstance(d, dict) and "name" not in d:
        d["name"] = os.path.splitext(os.path.basename(path))[0]
    try:
        return Cluster.from_dict(d)
    except ClusterError as e:
        raise ClusterError(f"in cluster profile {path!r}: {e}") from e
