"""Cost of moving a tensor from one sharding (spec) to another.

Per mesh axis ``a`` (after dropping axes of size 1, which split nothing):
  * stays   same tensor dim in src and dst, same axes before it in that dim: free
  * added   absent in src, present in dst: free (each device slices what it holds)
  * moved   present in both but not staying: one all-to-all over ``a``, when the
            move is one XLA does in place (``a`` is the minor-most split of its
            source dim and lands as the minor-most split of its target dim on top
            of the target's other splits); otherwise it is gathered and re-sliced,
            which is what XLA's partitioner falls back to ("full rematerialization")
  * removed present in src, absent in dst: gathered
All-to-alls run first (while the tensor is still split, so buffers are small), then
one all-gather over all removed axes together. Every pair of valid specs gets a
finite cost: there is always this path.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .collectives import Collective, CollectiveKind, collective_cost
from .errors import ShardsearchError
from .mesh import MeshShape, Spec, local_bytes, spec_str, used_axes

if TYPE_CHECKING:
    from .cluster import Cluster


def _norm(spec: Sequence[Sequence[str] | str | None]) -> Spec:
    """Accept PartitionSpec-like entries (None, "axis") as well as the normalized form."""
    return tuple(() if d is None else (d,) if isinstance(d, str) else tuple(d) for d in spec)


def _check(mesh: MeshShape, shape: tuple[int, ...], spec: Spec, what: str) -> None:
    if len(spec) != len(shape):
        raise ShardsearchError(f"{what} spec {spec_str(spec)} has {len(spec)} entries for a tensor of "
                               f"shape {shape}; give one entry per dimension")
    axes = used_axes(spec)
    for a in axes:
        if a not in mesh.axis_names:
            raise ShardsearchError(f"{what} spec {spec_str(spec)} uses mesh axis {a!r}, not in the mesh "
                                   f"{mesh.axis_names}; use the mesh's axis names")
    if len(set(axes)) != len(axes):
        raise ShardsearchError(f"{what} spec {spec_str(spec)} uses a mesh axis twice; "
                               "each axis may split at most one dimension once")


def _drop_trivial(mesh: MeshShape, spec: Spec) -> Spec:
    return tuple(tuple(a for a in d if mesh.axis_size(a) > 1) for d in spec)


def _places(spec: Spec) -> dict[str, tuple[int, tuple[str, ...]]]:
    """axis -> (tensor dim, axes before it in that dim)."""
    return {a: (i, d[:k]) for i, d in enumerate(spec) for k, a in enumerate(d)}


@functools.lru_cache(maxsize=1 << 16)
def _collectives(mesh: MeshShape, shape: tuple[int, ...], itemsize: int,
                 src: Spec, dst: Spec) -> tuple[Collective, ...]:
    _check(mesh, shape, src, "source")
    _check(mesh, shape, dst, "destination")
    src, dst = _drop_trivial(mesh, src), _drop_trivial(mesh, dst)
    if src == dst:
        return ()
    sp, dp = _places(src), _places(dst)
    moved = [a for a in used_axes(src) if a in dp and sp[a] != dp[a]]
    removed = [a for a in used_axes(src) if a not in dp]
    cur = [list(d) for d in src]  # the intermediate layout
    out: list[Collective] = []

    def try_moves(axes: list[str]) -> list[str]:
        """All-to-all the axes whose move is clean now; return the others."""
        left = []
        for a in axes:
            s_dim, (d_dim, d_before) = sp[a][0], dp[a]
            if cur[s_dim][-1:] != [a] or cur[d_dim] != list(d_before):
                left.append(a)
                continue
            nbytes = local_bytes(shape, itemsize, tuple(map(tuple, cur)), mesh)
            out.append(Collective(CollectiveKind.ALL_TO_ALL, (a,), nbytes))
            cur[s_dim].remove(a)
            cur[d_dim].append(a)
        return left

    def gather(axes: list[str]) -> None:
        if not axes:
            return
        for a in axes:
            cur[sp[a][0]].remove(a)
        nbytes = local_bytes(shape, itemsize, tuple(map(tuple, cur)), mesh)
        ordered = tuple(a for a in mesh.axis_names if a in axes)  # mesh order: deterministic
        out.append(Collective(CollectiveKind.ALL_GATHER, ordered, nbytes))

    # A dim's whole split of several axes moving, in order, onto a dim split by nothing:
    # XLA views those axes as one and moves the tensor with one all-to-all over them.
    for s_dim, axes in enumerate(src):
        d_dim = next((i for i, d in enumerate(dst) if d == axes and i != s_dim), None)
        if len(axes) > 1 and d_dim is not None and not cur[d_dim] and cur[s_dim] == list(axes):
            nbytes = local_bytes(shape, itemsize, tuple(map(tuple, cur)), mesh)
            out.append(Collective(CollectiveKind.ALL_TO_ALL, tuple(a for a in mesh.axis_names if a in axes), nbytes))
            cur[s_dim], cur[d_dim] = [], list(axes)
            moved = [a for a in moved if a not in axes]

    # Moves while the tensor is most split (small buffers), then the gathers, which
    # may unblock more moves; a move that is still not clean is gathered and re-sliced.
    stuck = try_moves(moved)
    gather(removed)
    gather(try_moves(stuck))
    return tuple(out)


def reshard_collectives(mesh: MeshShape, shape: Sequence[int], itemsize: int,
                        src: Spec, dst: Spec) -> list[Collective]:
    """The collectives that turn a tensor laid out as ``src`` into ``dst``, in order."""
    shape = tuple(int(n) for n in shape)
    return list(_collectives(mesh, shape, int(itemsize), _norm(src), _norm(dst)))


@functools.lru_cache(maxsize=1 << 16)
def _cost(cluster: Cluster, mesh: MeshShape, shape: tuple[int, ...], itemsize: int,
          src: Spec, dst: Spec) -> float:
    return float(sum(collective_cost(cluster, mesh, c) for c in _collectives(mesh, shape, itemsize, src, dst)))


def reshard_cost(cluster: Cluster, mesh: MeshShape, shape: Sequence[int], itemsize: int,
                 src: Spec, dst: Spec) -> float:
    """Seconds to reshard ``src`` -> ``dst`` on ``cluster`` (0.0 when dst only adds splits)."""
    shape = tuple(int(n) for n in shape)
    return _cost(cluster, mesh, shape, int(itemsize), _norm(src), _norm(dst))


@functools.lru_cache(maxsize=4096)
def _matrix(cluster: Cluster, mesh: MeshShape, shape: tuple[int, ...], itemsize: int,
            srcs: tuple[Spec, ...], dsts: tuple[Spec, ...]) -> np.ndarray:
    m = np.array([[_cost(cluster, mesh, shape, itemsize, s, d) for d in dsts] for s in srcs],
                 dtype=np.float64).reshape(len(srcs), len(dsts))
    m.flags.writeable = False  # shared by every caller with the same arguments
    return m


def reshard_matrix(cluster: Cluster, mesh: MeshShape, shape: Sequence[int], itemsize: int,
                   srcs: Sequence[Spec], dsts: Sequence[Spec]) -> np.ndarray:
    """Costs of every (src, dst) pair, shape (len(srcs), len(dsts)); a fresh writable copy."""
    shape = tuple(int(n) for n in shape)
    srcs = tuple(_norm(s) for s in srcs)
    dsts = tuple(_norm(d) for d in dsts)
    return _matrix(cluster, mesh, shape, int(itemsize), srcs, dsts).copy()
