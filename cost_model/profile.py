"""Measure the devices at hand and fit a cluster profile that ``cluster=`` accepts.

``profile(mesh)`` runs, on every device of the mesh at once:

  matmul       one (n, n) @ (n, n) per device, over sizes and dtypes  -> peak FLOP/s per dtype
  memory       one elementwise pass per device, over sizes            -> HBM bandwidth
  collectives  all-reduce, all-gather, reduce-scatter, all-to-all and permute over each mesh
               axis (``shard_map`` collectives), over message sizes   -> latency and bandwidth

and fits ``seconds = intercept + amount / rate`` to each by least squares (numpy). For
collectives ``amount`` is the bytes the cost model's own formula charges (ring factor times
message bytes, see ``collectives.py``), so the fitted Link reproduces the timings through the
same formula the planner prices with. The raw timings go into the profile's ``measured``
section; ``fit_profile`` turns them into a Cluster again, without jax.

This is the only cost_model module that uses jax, and it imports it inside functions so that
``import cost_model`` stays jax-free.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Sequence

import numpy as np

from .cluster import Cluster, Link
from .collectives import CollectiveKind, group_collective_time
from .errors import ProfileError

BAD_MESH = ("profile(mesh=...) needs a jax.sharding.Mesh or a tuple of positive axis sizes such as "
            "(2, 4), got {mesh!r}; pass one of those")
TOO_FEW_DEVICES = ("mesh shape {shape} needs {need} devices but only {have} {platform} device(s) exist; "
                   "profile a smaller mesh, or on CPU set XLA_FLAGS=--xla_force_host_platform_device_count={need} "
                   "before jax is imported")
FLAT_TIMES = ("{what}: the time did not grow with the {amount} over the sweep ({points}), so no {rate} can be "
              "fitted; the measurements are dominated by overhead or noise. Profile again on a quieter "
              "machine, or with larger sizes (without quick=True)")
TOO_FEW_POINTS = ("{what}: {count} measurement(s) at {distinct} distinct size(s); a fit needs at least two "
                  "sizes. Use a sweep with more sizes")
UNKNOWN_MEMORY = ("the devices report no memory limit and the host memory could not be read; pass "
                  "memory_bytes=<bytes per device> to profile()")
BAD_DTYPE = "profile dtypes must be names from {allowed}, got {dtype!r}; fix the dtypes argument"
NOT_A_PROFILE = ("the 'measured' section of a profile needs lists 'matmul', 'memory' and 'collectives' "
                 "as profile() writes them; got keys {keys}. Profile again with `shardsearch profile`")

KINDS = tuple(CollectiveKind)
CHAIN = 4  # collectives per timed program, each feeding the next: dispatch cost is shared


@dataclasses.dataclass(frozen=True)
class Sweep:
    """What to time. Sizes grow by 4x (matmul by 2x) so the fitted slope is well defined."""

    matmul_sizes: tuple[int, ...]
    memory_bytes: tuple[int, ...]  # per device: the buffer one elementwise pass reads and rewrites
    message_bytes: tuple[int, ...]  # per device, in collectives.py's byte conventions
    dtypes: tuple[str, ...] = ("float32", "bfloat16")
    repeats: int = 5


def default_sweep(platform: str, quick: bool = False) -> Sweep:
    """Sizes that fit in seconds on a laptop CPU and reach the bandwidth regime on accelerators."""
    cpu = platform == "cpu"
    if quick:
        return Sweep(matmul_sizes=(128, 256, 512) if cpu else (1024, 2048, 4096),
                     memory_bytes=(1 << 18, 1 << 20, 1 << 22) if cpu else (1 << 24, 1 << 26, 1 << 28),
                     message_bytes=(1 << 14, 1 << 17, 1 << 20) if cpu else (1 << 16, 1 << 20, 1 << 24),
                     repeats=3)
    return Sweep(matmul_sizes=(128, 256, 512, 1024) if cpu else (1024, 2048, 4096, 8192),
                 memory_bytes=tuple(1 << k for k in (range(18, 26, 2) if cpu else range(22, 31, 2))),
                 message_bytes=tuple(1 << k for k in (range(12, 24, 2) if cpu else range(12, 29, 2))),
                 dtypes=("float32", "bfloat16") if cpu else ("float32", "bfloat16", "float16"))


# ---- fitting (numpy only) ---------------------------------------------------------------

def fit_line(amounts: Sequence[float], seconds: Sequence[float], *, what: str = "fit",
             amount: str = "size", rate: str = "rate") -> tuple[float, float]:
    """``(intercept, slope)`` of ``seconds ~ intercept + slope * amount``.

    Least squares on relative error (each residual divided by its time), so the small sizes
    set the intercept and the large ones the slope. The intercept is kept non-negative.
    """
    x, t = np.asarray(amounts, float), np.asarray(seconds, float)
    if len(np.unique(x)) < 2:
        raise ProfileError(TOO_FEW_POINTS.format(what=what, count=len(x), distinct=len(np.unique(x))))
    (intercept, slope), *_ = np.linalg.lstsq(np.stack([1 / t, x / t], axis=1), np.ones_like(t), rcond=None)
    if intercept < 0:  # overhead below resolution: a line through the origin
        intercept, slope = 0.0, float(np.sum(x / t) / np.sum((x / t) ** 2))
    if not slope > 0:
        points = ", ".join(f"{a:.3g} in {s * 1e6:.1f} us" for a, s in zip(x, t))
        raise ProfileError(FLAT_TIMES.format(what=what, amount=amount, points=points, rate=rate))
    return float(intercept), float(slope)


def fit_link(charged_bytes: Sequence[float], seconds: Sequence[float], what: str) -> Link:
    """A Link whose ``latency + bytes / bandwidth`` best matches the timings."""
    latency, slope = fit_line(charged_bytes, seconds, what=what, amount="message size", rate="bandwidth")
    return Link(bandwidth=1.0 / slope, latency=latency)


def charged_bytes(kind: str, group_size: int, nbytes: float) -> float:
    """Bytes the cost model charges at the link bandwidth: its formula on a 1 byte/s, 0 s link."""
    unit = Cluster(name="unit", devices_per_node=1, peak_flops=1.0, memory_bytes=1.0,
                   intra_node=Link(1.0, 0.0), inter_node=Link(1.0, 0.0))
    return group_collective_time(unit, kind, group_size, False, nbytes)


def fit_profile(measured: dict, *, devices_per_node: int, memory_bytes: float, name: str = "profiled",
                description: str = "", num_nodes: int | None = None) -> Cluster:
    """The Cluster that the raw timings of ``profile`` describe (no jax needed)."""
    if not all(isinstance(measured.get(k), list) for k in ("matmul", "memory", "collectives")):
        raise ProfileError(NOT_A_PROFILE.format(keys=sorted(measured)))
    peaks = {}
    for dtype in dict.fromkeys(m["dtype"] for m in measured["matmul"]):
        rows = [m for m in measured["matmul"] if m["dtype"] == dtype]
        _, slope = fit_line([m["flops"] for m in rows], [m["seconds"] for m in rows],
                            what=f"matmul {dtype}", amount="FLOPs", rate="peak FLOP/s")
        peaks[dtype] = 1.0 / slope
    _, slope = fit_line([m["nbytes"] for m in measured["memory"]], [m["seconds"] for m in measured["memory"]],
                        what="memory pass", amount="bytes", rate="memory bandwidth")
    links, per_kind, unfitted = {}, {}, []
    for scope, crosses in (("intra_node", False), ("inter_node", True)):
        rows = [c for c in measured["collectives"] if c["crosses_nodes"] == crosses]
        if not rows:
            continue
        links[scope] = _link_of(rows, f"collectives ({scope})")
        for kind in dict.fromkeys(c["kind"] for c in rows):
            try:
                link = _link_of([c for c in rows if c["kind"] == kind], f"{kind} ({scope})")
            except ProfileError:  # one kind's few points can be noise; the pooled Link stands
                unfitted.append(f"{kind} ({scope})")
                continue
            per_kind.setdefault(kind, {})[scope] = link
    if unfitted:
        description += f" No Link of its own for {', '.join(unfitted)}: times did not grow with size."
    if not links:
        raise ProfileError(NOT_A_PROFILE.format(keys=sorted(measured)))
    # A single-host profile measures no cross-node link (and vice versa): reuse the other.
    intra = links.get("intra_node", links.get("inter_node"))
    inter = links.get("inter_node", intra)
    return Cluster(
        name=name, devices_per_node=devices_per_node, num_nodes=num_nodes,
        peak_flops=max(peaks.values()), peak_flops_by_dtype=peaks, memory_bytes=memory_bytes,
        hbm_bandwidth=1.0 / slope, intra_node=intra, inter_node=inter, collectives=per_kind,
        description=description, measured=measured,
    )


def _link_of(rows: list[dict], what: str) -> Link:
    return fit_link([charged_bytes(c["kind"], c["group_size"], c["nbytes"]) for c in rows],
                    [c["seconds"] for c in rows], what)


# ---- measuring (jax) -------------------------------------------------------------------

def profile(mesh: Any = None, path: str | os.PathLike | None = None, *, quick: bool = False,
            sweep: Sweep | None = None, name: str | None = None, memory_bytes: float | None = None,
            show_progress: bool = True) -> Cluster:
    """Time the devices of ``mesh`` (a jax Mesh, or a shape such as ``(2, 4)``; default: all
    devices in one axis), fit a Cluster, and write it as JSON to ``path`` if given.

    ``quick`` uses a short sweep (about 10 s on 8 CPU devices; for tests); the default one
    takes 10-30 s there. Devices of one process count as one node (``devices_per_node``);
    collectives over an axis whose groups span processes are fitted as the inter-node link.
    In a multi-process run every process must call this; process 0 writes the file.
    """
    import jax

    mesh = _as_mesh(mesh)
    devices = mesh.devices.reshape(-1)
    platform = devices[0].platform
    sweep = sweep or default_sweep(platform, quick)
    for dtype in sweep.dtypes:
        if dtype not in _DTYPES:
            raise ProfileError(BAD_DTYPE.format(allowed=", ".join(_DTYPES), dtype=dtype))
    processes = sorted({d.process_index for d in devices})
    jobs = _jobs(mesh, sweep)
    measured: dict = {
        "platform": platform, "device_kind": devices[0].device_kind, "jax_version": jax.__version__,
        "mesh": {"axis_names": list(mesh.axis_names), "axis_sizes": [int(s) for s in mesh.devices.shape]},
        "repeats": sweep.repeats, "matmul": [], "memory": [], "collectives": [],
    }
    from rich.progress import Progress

    with Progress(disable=not show_progress, transient=False) as bar:
        task = bar.add_task("profiling", total=len(jobs))
        for section, label, run in jobs:
            bar.update(task, description=f"{section}: {label}")
            measured[section].append(run())
            bar.advance(task)
    if len(processes) > 1:
        _keep_slowest_across_processes(measured)
    local = [d for d in devices if d.process_index == jax.process_index()]
    cluster = fit_profile(
        measured, devices_per_node=len(devices) // len(processes), num_nodes=len(processes),
        memory_bytes=memory_bytes or _memory_per_device(local), name=name or f"profiled-{platform}",
        description=_describe(measured, len(devices)),
    )
    if path is not None and jax.process_index() == 0:
        write_profile(cluster, path)
    return cluster


def _keep_slowest_across_processes(measured: dict) -> None:
    """Every process keeps the slowest process's timings, so all fit the same profile (and
    plan alike with it)."""
    from jax.experimental import multihost_utils

    rows = [r for section in ("matmul", "memory", "collectives") for r in measured[section]]
    seconds = multihost_utils.process_allgather(np.array([r["seconds"] for r in rows], np.float32))
    for row, slowest in zip(rows, np.max(np.asarray(seconds), axis=0)):
        row["seconds"] = float(slowest)


def _describe(measured: dict, num_devices: int) -> str:
    mesh = dict(zip(measured["mesh"]["axis_names"], measured["mesh"]["axis_sizes"]))
    text = (f"Measured by `shardsearch profile` on {num_devices} x {measured['device_kind']} "
            f"({measured['platform']}), mesh {mesh}, jax {measured['jax_version']}.")
    scopes = {c["crosses_nodes"] for c in measured["collectives"]}
    if len(scopes) == 1:
        seen, other = ("inter_node", "intra_node") if True in scopes else ("intra_node", "inter_node")
        text += f" Only the {seen} link was measured; {other} repeats its fit."
    return text


def write_profile(cluster: Cluster, path: str | os.PathLike) -> None:
    with open(path, "w") as f:
        json.dump(cluster.to_dict(), f, indent=1)
        f.write("\n")


_DTYPES = ("float32", "bfloat16", "float16")  # float64 needs jax_enable_x64


def _as_mesh(mesh):
    import jax
    from jax.sharding import AxisType, Mesh

    if isinstance(mesh, Mesh):
        return mesh
    devices = jax.devices()
    if mesh is None:
        mesh = (len(devices),)
    if not isinstance(mesh, (tuple, list)) or not mesh or \
            not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in mesh):
        raise ProfileError(BAD_MESH.format(mesh=mesh))
    need = math.prod(mesh)
    if need > len(devices):
        raise ProfileError(TOO_FEW_DEVICES.format(shape=tuple(mesh), need=need, have=len(devices),
                                                  platform=devices[0].platform))
    names = {1: ("data",), 2: ("data", "model")}.get(len(mesh), tuple(f"axis{i}" for i in range(len(mesh))))
    grid = np.array(devices[:need]).reshape(tuple(mesh))
    return Mesh(grid, names, axis_types=(AxisType.Auto,) * len(names))


def _jobs(mesh, sweep: Sweep) -> list[tuple[str, str, Any]]:
    """(section, label, thunk) for every measurement, in the order they run."""
    jobs = []
    for dtype in sweep.dtypes:
        for n in sweep.matmul_sizes:
            jobs.append(("matmul", f"{dtype} {n}x{n}", _bind(_time_matmul, mesh, dtype, n, sweep.repeats)))
    for nbytes in sweep.memory_bytes:
        jobs.append(("memory", _size(nbytes), _bind(_time_memory, mesh, nbytes, sweep.repeats)))
    for axis in mesh.axis_names:
        if mesh.shape[axis] < 2:
            continue
        for kind in KINDS:
            for nbytes in sweep.message_bytes:
                jobs.append(("collectives", f"{kind.value} over {axis!r}, {_size(nbytes)}",
                             _bind(_time_collective, mesh, kind, axis, nbytes, sweep.repeats)))
    return jobs


def _bind(fn, *args):
    return lambda: fn(*args)


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:g} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:g} KiB"


def _per_device(mesh, fn, local_shapes, dtype, repeats):
    """Seconds of ``fn`` run by every device on its own zero-filled blocks: the fastest of
    ``repeats`` runs, since other work on the machine only ever adds time."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    every = P(tuple(mesh.axis_names))
    sharding = NamedSharding(mesh, every)
    args = [jax.device_put(jnp.zeros((mesh.devices.size * s[0], *s[1:]), dtype), sharding) for s in local_shapes]
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=(every,) * len(args), out_specs=every, check_vma=False)
    compiled = jax.jit(mapped).lower(*args).compile()
    compiled(*args).block_until_ready()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        compiled(*args).block_until_ready()
        times.append(time.perf_counter() - start)
    return min(times)


def _time_matmul(mesh, dtype: str, n: int, repeats: int) -> dict:
    seconds = _per_device(mesh, lambda a, b: a @ b, [(n, n), (n, n)], dtype, repeats)
    return {"dtype": dtype, "n": n, "flops": 2.0 * n**3, "seconds": seconds}


def _time_memory(mesh, nbytes: int, repeats: int) -> dict:
    elems = max(1, nbytes // 4)
    seconds = _per_device(mesh, lambda x: x * 2.0 + 1.0, [(elems,)], "float32", repeats)
    return {"nbytes": 2.0 * elems * 4, "seconds": seconds}  # read once, written once


def _time_collective(mesh, kind: CollectiveKind, axis: str, nbytes: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    n = int(mesh.shape[axis])
    elems = max(n, nbytes // 4 // n * n)  # the collective's buffer, divisible by the group
    step = {
        CollectiveKind.ALL_REDUCE: lambda y: jax.lax.psum(y, axis),
        # gather, then keep a block of the input's size so the next one sees the same shape
        CollectiveKind.ALL_GATHER: lambda y: jax.lax.all_gather(y, axis, tiled=True)[: y.shape[0]],
        CollectiveKind.REDUCE_SCATTER: lambda y: jnp.tile(jax.lax.psum_scatter(y, axis, tiled=True), n),
        CollectiveKind.ALL_TO_ALL: lambda y: jax.lax.all_to_all(y, axis, 0, 0, tiled=True),
        CollectiveKind.PERMUTE: lambda y: jax.lax.ppermute(y, axis, [(i, (i + 1) % n) for i in range(n)]),
    }[kind]

    def chain(y):
        for _ in range(CHAIN):
            y = step(y)
        return y

    local = elems // n if kind is CollectiveKind.ALL_GATHER else elems  # all-gather bytes = its result
    seconds = _per_device(mesh, chain, [(local,)], "float32", repeats) / CHAIN
    return {"kind": kind.value, "axes": [axis], "group_size": n, "crosses_nodes": _crosses(mesh, axis),
            "nbytes": float(elems * 4), "seconds": seconds}


def _crosses(mesh, axis: str) -> bool:
    """Whether some group of a collective over ``axis`` spans devices of several processes."""
    procs = np.vectorize(lambda d: d.process_index)(mesh.devices)
    groups = np.moveaxis(procs, mesh.axis_names.index(axis), -1).reshape(-1, mesh.shape[axis])
    return bool((groups != groups[:, :1]).any())


def _memory_per_device(local_devices) -> float:
    stats = local_devices[0].memory_stats() or {}
    if stats.get("bytes_limit"):
        return float(stats["bytes_limit"])
    try:
        host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError) as e:
        raise ProfileError(UNKNOWN_MEMORY) from e
    return float(host) / len(local_devices)
