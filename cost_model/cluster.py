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

import numpy as np

from .collectives import CollectiveKind
from .errors import ClusterError, ShardsearchError
from .gpu_target import GpuTarget
from .mesh import MeshShape
from .topology import NodeSpan, mesh_spans

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
    "peak_flops_by_dtype": 'per-device FLOP/s per dtype, e.g. {"bfloat16": 9.89e14, "float32": 6.7e13}',
    "num_nodes": "how many nodes the cluster has, e.g. 2; a mesh should use at most "
    "num_nodes * devices_per_node devices",
    "collectives": 'fitted Links per collective, e.g. {"all-reduce": {"intra_node": '
    '{"bandwidth": 4e11, "latency": 8e-6}}}, as `shardsearch profile` writes them',
    "measured": "a dict of the raw timings a profile was fitted to (kept as written)",
    "price_per_device_hour": "what one device costs per hour (any currency, e.g. USD), e.g. 12.29 for an "
    "on-demand H100 in a p5.48xlarge; the advisor's cost columns use it",
    "matmul_efficiency": 'the fraction of peak a matmul of a given size reaches, e.g. '
    '{"flops": [1e8, 1e10, 1e12], "efficiency": [0.03, 0.6, 0.8]} (FLOPs per device of one '
    'matmul, increasing; efficiency in (0, 1]; interpolated in log FLOPs, flat past the ends)',
    "collective_overlap": 'collectives run asynchronously under independent compute, which they slow '
    'down: {"contention": 0.15} (kernels 15% slower while one is in flight); absent: no overlap (a CPU)',
    "gpu_target": 'the GPU as XLA\'s compiler sees it, for compiling without one (shardsearch.target), e.g. '
    '{"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "core_count": 132, ...}: '
    'see cost_model/gpu_target.py',
}
_REQUIRED = ("devices_per_node", "peak_flops", "memory_bytes", "intra_node", "inter_node")
_OPTIONAL = ("name", "hbm_bandwidth", "description", "sources",
             "peak_flops_by_dtype", "num_nodes", "collectives", "measured", "matmul_efficiency",
             "gpu_target", "price_per_device_hour", "collective_overlap")
_LINK_KEYS = ("bandwidth", "latency")
_SCOPES = ("intra_node", "inter_node")
# dtypes a per-dtype peak may be given for (numpy/jax names).
DTYPE_NAMES = ("float64", "float32", "bfloat16", "float16", "float8_e4m3fn", "float8_e5m2", "int8", "int4")

NOT_A_DICT = "cluster {key!r} must be a dict ({hint}), got {value!r}; write it as such a dict"
UNKNOWN_DTYPE = ("cluster 'peak_flops_by_dtype' has unknown dtype {dtype!r}; "
                 "use dtype names from: {allowed}")
UNKNOWN_COLLECTIVE = ("cluster 'collectives' has unknown collective {kind!r}; "
                      "use names from: {allowed}")
UNKNOWN_SCOPE = ("cluster 'collectives.{kind}' has unknown key {scope!r}; "
                 "use intra_node and/or inter_node")
BAD_NUM_NODES = "cluster 'num_nodes' must be a positive integer ({hint}), got {value!r}; fix the value"
BAD_EFFICIENCY = ("cluster 'matmul_efficiency' {problem} ({hint}), got {value!r}; "
                  "fix the lists")
NOT_JSON = "cluster 'measured' must hold only JSON data ({hint}): {error}; write plain numbers, strings, lists, dicts"


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
    # Sorted (dtype, FLOP/s) pairs; a dict is accepted and normalized.
    peak_flops_by_dtype: tuple[tuple[str, float], ...] = ()
    num_nodes: int | None = None
    # Sorted (collective kind, "intra_node" | "inter_node", fitted Link) triples, from a
    # profile; a dict {kind: {scope: Link or link dict}} is accepted and normalized.
    collectives: tuple[tuple[str, str, Link], ...] = dataclasses.field(default=(), repr=False)
    measured: dict | None = dataclasses.field(default=None, compare=False, repr=False)
    # Sorted (FLOPs, fraction of peak) points of a matmul's efficiency against its size;
    # empty: every matmul runs at peak. A dict {"flops": [...], "efficiency": [...]} is
    # accepted and normalized.
    matmul_efficiency: tuple[tuple[float, float], ...] = ()
    # The GPU model, for compiling for this cluster without its devices (not priced:
    # two clusters that differ only here compare equal). A dict is accepted.
    gpu_target: GpuTarget | None = dataclasses.field(default=None, compare=False, repr=False)
    # What a device costs per hour (shardsearch.advise's cost columns); not a figure the
    # planner prices with, so two clusters that differ only in price plan alike.
    price_per_device_hour: float | None = dataclasses.field(default=None, compare=False)
    # The slowdown of compute while an asynchronous collective runs under it; None: the
    # devices never overlap collectives with compute (priced: cost_model.overlap).
    overlap_contention: float | None = None

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
        object.__setattr__(self, "peak_flops_by_dtype", _dtype_peaks(self.peak_flops_by_dtype))
        object.__setattr__(self, "num_nodes", _num_nodes(self.num_nodes))
        object.__setattr__(self, "collectives", _collective_links(self.collectives))
        object.__setattr__(self, "measured", _json_copy(self.measured))
        object.__setattr__(self, "matmul_efficiency", _efficiency_points(self.matmul_efficiency))
        if self.overlap_contention is not None:
            object.__setattr__(self, "overlap_contention", _number(
                "cluster 'collective_overlap.contention'", "collective_overlap", self.overlap_contention, allow_zero=True))
        if self.gpu_target is not None and not isinstance(self.gpu_target, GpuTarget):
            object.__setattr__(self, "gpu_target", GpuTarget.from_dict(self.gpu_target))
        if self.price_per_device_hour is not None:
            object.__setattr__(self, "price_per_device_hour", _number(
                "cluster 'price_per_device_hour'", "price_per_device_hour", self.price_per_device_hour,
                allow_zero=True))

    @property
    def capacity(self) -> int | None:
        """Devices the cluster holds (``num_nodes * devices_per_node``); None when the
        profile does not say how many nodes it has."""
        return None if self.num_nodes is None else self.num_nodes * self.devices_per_node

    def peak_flops_for(self, dtype) -> float:
        """Peak FLOP/s for a dtype (name or numpy/jax dtype); ``peak_flops`` if not listed."""
        name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
        return dict(self.peak_flops_by_dtype).get(name, self.peak_flops)

    def collective_link(self, kind: str, crosses_nodes: bool) -> Link:
        """The Link fitted for one collective kind (e.g. 'all-to-all') if the profile has
        one, else the shared intra- or inter-node Link the cost model prices with."""
        scope = "inter_node" if crosses_nodes else "intra_node"
        fitted = {(k, sc): link for k, sc, link in self.collectives}
        return fitted.get((getattr(kind, "value", kind), scope), getattr(self, scope))

    def matmul_efficiency_at(self, flops: float) -> float:
        """The fraction of peak a matmul of ``flops`` (per device) reaches: the curve
        interpolated linearly in log FLOPs, flat past its largest size; 1.0 without a curve.
        Below its smallest size a matmul takes as long as that one (launch and tile set-up
        dominate), so splitting a tiny matmul further buys nothing."""
        if not self.matmul_efficiency:
            return 1.0
        xs, ys = zip(*self.matmul_efficiency)
        f = float(flops)
        if f < xs[0]:
            return ys[0] * max(f, 1.0) / xs[0]
        return float(np.interp(np.log(f), np.log(xs), ys))

    def with_latency_share(self, share: float) -> Cluster:
        """The cluster with every launch latency (both Links and every fitted per-kind
        Link) scaled by ``share``: collectives that the compiler merges share one launch."""
        def scaled(link: Link) -> Link:
            return Link(link.bandwidth, link.latency * share)
        return dataclasses.replace(
            self, intra_node=scaled(self.intra_node), inter_node=scaled(self.inter_node),
            collectives=tuple((kind, scope, scaled(link)) for kind, scope, link in self.collectives))

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
        num_nodes = d.get("num_nodes")
        if isinstance(num_nodes, float) and num_nodes.is_integer():
            num_nodes = int(num_nodes)
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
            peak_flops_by_dtype=d.get("peak_flops_by_dtype", {}),
            num_nodes=num_nodes,
            collectives=d.get("collectives", {}),
            measured=d.get("measured"),
            matmul_efficiency=d.get("matmul_efficiency", ()),
            gpu_target=d.get("gpu_target"),
            price_per_device_hour=d.get("price_per_device_hour"),
            overlap_contention=_contention(d.get("collective_overlap")),
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
        if self.peak_flops_by_dtype:
            d["peak_flops_by_dtype"] = dict(self.peak_flops_by_dtype)
        if self.num_nodes is not None:
            d["num_nodes"] = self.num_nodes
        if self.collectives:
            d["collectives"] = {}
            for kind, scope, link in self.collectives:
                d["collectives"].setdefault(kind, {})[scope] = link.to_dict()
        if self.matmul_efficiency:
            xs, ys = zip(*self.matmul_efficiency)
            d["matmul_efficiency"] = {"flops": list(xs), "efficiency": list(ys)}
        if self.price_per_device_hour is not None:
            d["price_per_device_hour"] = self.price_per_device_hour
        if self.measured is not None:
            d["measured"] = _json_copy(self.measured)
        if self.gpu_target is not None:
            d["gpu_target"] = self.gpu_target.to_dict()
        if self.overlap_contention is not None:
            d["collective_overlap"] = {"contention": self.overlap_contention}
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

    def node_spans(self, mesh: MeshShape, axes: str | Sequence[str]) -> tuple[NodeSpan, ...]:
        """How the groups of a collective over ``axes`` sit on this cluster's nodes (the
        distinct layouts; one for every even mesh): see ``cost_model.topology``."""
        return mesh_spans(self.devices_per_node, mesh, _axes_tuple(mesh, axes))

    def crosses_nodes(self, mesh: MeshShape, axes: str | Sequence[str]) -> bool:
        """Whether some group of a collective over ``axes`` spans more than one node."""
        return any(s.crosses_nodes for s in self.node_spans(mesh, axes))

    def link_for(self, mesh: MeshShape, axes: str | Sequence[str]) -> Link:
        """The slower Link a collective over ``axes`` uses (``collectives`` prices the
        intra- and inter-node parts of a group that spans nodes each on its own Link)."""
        return self.inter_node if self.crosses_nodes(mesh, axes) else self.intra_node


# ---- optional fields ---------------------------------------------------------------------

def _dtype_peaks(table) -> tuple[tuple[str, float], ...]:
    if isinstance(table, tuple):  # already normalized (dataclasses.replace, hashing)
        table = dict(table)
    if not isinstance(table, dict):
        raise ClusterError(NOT_A_DICT.format(key="peak_flops_by_dtype", hint=_HINTS["peak_flops_by_dtype"],
                                             value=table))
    for dtype in table:
        if dtype not in DTYPE_NAMES:
            raise ClusterError(UNKNOWN_DTYPE.format(dtype=dtype, allowed=", ".join(DTYPE_NAMES)))
    return tuple(sorted(
        (dtype, _number(f"cluster 'peak_flops_by_dtype.{dtype}'", "peak_flops", flops))
        for dtype, flops in table.items()))


def _num_nodes(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ClusterError(BAD_NUM_NODES.format(hint=_HINTS["num_nodes"], value=value))
    return int(value)


def _collective_links(table) -> tuple[tuple[str, str, Link], ...]:
    if isinstance(table, tuple):
        return tuple(sorted(table, key=lambda t: t[:2]))
    if not isinstance(table, dict):
        raise ClusterError(NOT_A_DICT.format(key="collectives", hint=_HINTS["collectives"], value=table))
    kinds = [k.value for k in CollectiveKind]
    out = []
    for kind, scopes in table.items():
        if kind not in kinds:
            raise ClusterError(UNKNOWN_COLLECTIVE.format(kind=kind, allowed=", ".join(kinds)))
        if not isinstance(scopes, dict):
            raise ClusterError(NOT_A_DICT.format(key=f"collectives.{kind}", hint=_HINTS["collectives"],
                                                 value=scopes))
        for scope, link in scopes.items():
            if scope not in _SCOPES:
                raise ClusterError(UNKNOWN_SCOPE.format(kind=kind, scope=scope))
            if not isinstance(link, Link):
                link = Link.from_dict(link, f"cluster 'collectives.{kind}.{scope}'")
            out.append((kind, scope, link))
    return tuple(sorted(out, key=lambda t: t[:2]))


def _efficiency_points(table) -> tuple[tuple[float, float], ...]:
    if isinstance(table, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in table):
        # the normalized form (dataclasses.replace, hashing): checked like the dict
        table = {"flops": [x for x, _ in table], "efficiency": [y for _, y in table]} if table else {}
        if not table:
            return ()
    hint = _HINTS["matmul_efficiency"]

    def bad(problem):
        return ClusterError(BAD_EFFICIENCY.format(problem=problem, hint=hint, value=table))

    if not isinstance(table, dict) or set(table) != {"flops", "efficiency"}:
        raise bad('must be a dict with exactly the keys "flops" and "efficiency"')
    xs, ys = table["flops"], table["efficiency"]
    if not isinstance(xs, (list, tuple)) or not isinstance(ys, (list, tuple)) or len(xs) != len(ys) or not xs:
        raise bad("needs two non-empty lists of the same length")
    xs = [_number("cluster 'matmul_efficiency.flops'", "matmul_efficiency", x) for x in xs]
    ys = [_number("cluster 'matmul_efficiency.efficiency'", "matmul_efficiency", y) for y in ys]
    if any(b <= a for a, b in zip(xs, xs[1:])):
        raise bad("needs strictly increasing flops")
    if any(y > 1 for y in ys):
        raise bad("needs every efficiency in (0, 1]: a fraction of peak_flops")
    return tuple(zip(xs, ys))


def _contention(value) -> float | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"contention"}:
        raise ClusterError(NOT_A_DICT.format(key="collective_overlap", hint=_HINTS["collective_overlap"], value=value))
    return _number("cluster 'collective_overlap.contention'", "collective_overlap", value["contention"], allow_zero=True)


def _json_copy(value):
    """A deep copy that is plain JSON data (so the profile can be written back), or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ClusterError(NOT_A_DICT.format(key="measured", hint=_HINTS["measured"], value=type(value).__name__))
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ClusterError(NOT_JSON.format(hint=_HINTS["measured"], error=e)) from e


def _axes_tuple(mesh: MeshShape, axes: str | Sequence[str]) -> tuple[str, ...]:
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    for a in axes:
        if a not in mesh.axis_names:
            raise ShardsearchError(f"mesh axis {a!r} is not in the mesh {mesh.axis_names}; "
                                   "use one of the mesh's axis names")
    return axes


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
