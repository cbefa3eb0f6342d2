"""Cost of moving a tensor from one sharding (spec) to another, as XLA's partitioner does it.

Per mesh axis ``a`` (after dropping axes of size 1, which split nothing):
  * stays   same tensor dim in src and dst, same axes before it in that dim: free
  * added   absent in src, present in dst: free (each device slices what it holds)
  * moved   present in both but not staying: one all-to-all over ``a``, when the
            move is one XLA does in place (``a`` is the minor-most split of its
            source dim and lands as the minor-most split of its target dim on top
            of the target's other splits)
  * removed present in src, absent in dst: gathered
All-to-alls run while the tensor is most split (an added axis that must sit before
a moved one in its target dim is sliced first, as XLA does: it is free and shrinks the
buffer); then one all-gather over all removed axes together; the other added axes are
sliced last. Two more paths that XLA
takes (checked against its output on a 2x4 mesh, tests/test_topology.py):
  * refinement: every dim of dst is split into a multiple of the pieces src splits it
    into, so each device's new piece lies inside some device's old one: one
    collective-permute of the new piece (a reorder of the axes of one dim included);
    the reverse (src refines dst, in another axis order): a permute of the old pieces,
    then an all-gather over the axes dst no longer uses. XLA takes each piece from the
    first device holding it, so a permute is priced over the axes src replicates over too;
  * moves that are not in place, with no fewer pieces in dst than the tensor has now:
    an all-to-all that reshapes the tile grid, then a collective-permute that puts each
    piece on its device.
Otherwise a move that is still not in place is gathered and re-sliced (XLA's "full
rematerialization"). Every pair of valid specs gets a finite cost: there is always
this path.

Each step also reads and writes the device's own memory (``Step.local_bytes``, priced at
``Cluster.hbm_bandwidth`` and kept apart from the links' time), as XLA's program does on
a 2x4 mesh (tests/test_reshard_local.py):
  * every collective reads its operand and writes its result (``collective_local_bytes``);
  * an all-to-all is packed into one buffer per peer before and unpacked into the new
    layout after (slice fusions and a copy): two more copies of its buffer, 6x in all;
  * an all-gather along a dim with more than one element before it on the device (a
    channel-minor NHWC tensor gathered on C, a feature-split activation gathered on its
    last dim), or along several dims, is transposed so the gathered dim comes first and
    back: a copy of its operand and one of its result, 3x its buffers in all; along the
    leading dim, the gathered pieces are whole buffers: no copy;
  * a slice (an added split) is free: XLA fuses the dynamic-slice into the producer or
    the consumer, which then touches only the piece.
When the neighbours of a collective are elementwise, XLA fuses the packing and
transposes into them instead; the value then goes through memory before and after the
collective instead of staying in one fusion, which costs about the same bytes, so the
charge does not depend on the neighbours.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .collectives import Collective, CollectiveKind, collective_cost, collective_local_bytes
from .errors import ShardsearchError
from .mesh import MeshShape, Spec, local_bytes, local_shape, shard_count, spec_str, used_axes

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


def _refines(mesh: MeshShape, src: Spec, dst: Spec) -> bool:
    """Every dim of ``dst`` cut into a multiple of the pieces ``src`` cuts it into."""
    return all(mesh.group_size(d) % mesh.group_size(s) == 0 for s, d in zip(src, dst))


def _mesh_order(mesh: MeshShape, axes) -> tuple[str, ...]:
    return tuple(a for a in mesh.axis_names if a in set(axes))  # deterministic


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of a transition: a collective, and the bytes each device reads and
    writes in its own memory for it (the collective's buffers and the layout copies XLA
    puts around it; see the module docstring)."""

    collective: Collective
    local_bytes: float
    # The layout after this step, where it is one a spec names (the step-by-step path:
    # all-to-alls, gathers and slices); None after a permute of pieces.
    after: Spec | None = None


def _major(shape: tuple[int, ...], mesh: MeshShape, layout: Spec, dims: Sequence[int]) -> bool:
    """Whether gathering ``dims`` of a tensor laid out as ``layout`` concatenates whole
    contiguous buffers: one dim, with only dims of one element before it on the device."""
    if len(dims) != 1:
        return False
    return all(n == 1 for n in local_shape(shape[:dims[0]], layout[:dims[0]], mesh))


@functools.lru_cache(maxsize=1 << 16)
def _steps(mesh: MeshShape, shape: tuple[int, ...], itemsize: int, src: Spec, dst: Spec) -> tuple[Step, ...]:
    _check(mesh, shape, src, "source")
    _check(mesh, shape, dst, "destination")
    src, dst = _drop_trivial(mesh, src), _drop_trivial(mesh, dst)
    if all(d[:len(s)] == s for s, d in zip(src, dst)):
        return ()  # only adds splits (or nothing changes): each device slices what it holds

    def plain(c: Collective) -> Step:  # a collective with no layout copy around it
        return Step(c, collective_local_bytes(mesh, c))

    def gathered(c: Collective, before: Spec, dims: Sequence[int]) -> Step:
        # its operand is the piece held ``before`` (after a permute, no piece of c.axes)
        buffers = local_bytes(shape, itemsize, before, mesh) + c.nbytes
        if _major(shape, mesh, before, dims):
            return Step(c, buffers)
        # XLA transposes the gathered dim to the front and the result back: a copy of each
        return Step(c, 3 * buffers)

    def all_to_all(c: Collective) -> Step:
        # packed into one buffer per peer before, unpacked into the new layout after
        return Step(c, 3 * collective_local_bytes(mesh, c))

    # A permute's pairs: XLA takes each piece from the first device that holds it, which
    # may sit anywhere along the axes src replicates over: price it over those too.
    replicated = [a for a in mesh.axis_names if mesh.axis_size(a) > 1 and a not in used_axes(src)]
    changed = [a for s, d in zip(src, dst) if d[:len(s)] != s for a in s]
    permute_axes = _mesh_order(mesh, changed + replicated)
    if _refines(mesh, src, dst):
        return (plain(Collective(CollectiveKind.PERMUTE, permute_axes, local_bytes(shape, itemsize, dst, mesh))),)
    if _refines(mesh, dst, src) and any(s[:len(d)] != d for s, d in zip(src, dst)):
        # src's pieces tile dst's, in another order: XLA permutes them so each group of
        # devices that must end up with one piece of dst holds its parts, then gathers.
        gone = _mesh_order(mesh, [a for a in used_axes(src) if a not in used_axes(dst)])
        dims = [i for i, d in enumerate(src) if any(a in gone for a in d)]
        return (plain(Collective(CollectiveKind.PERMUTE, permute_axes, local_bytes(shape, itemsize, src, mesh))),
                gathered(Collective(CollectiveKind.ALL_GATHER, gone, local_bytes(shape, itemsize, dst, mesh)),
                         src, dims))
    sp, dp = _places(src), _places(dst)
    cur = [list(d) for d in src]  # the intermediate layout
    out: list[Step] = []

    def layout() -> Spec:
        return tuple(map(tuple, cur))

    def nbytes() -> float:
        return local_bytes(shape, itemsize, layout(), mesh)

    def held(a: str) -> bool:
        return any(a in d for d in cur)

    def in_place(a: str) -> bool:
        d_dim, before = dp[a]
        return cur[d_dim][:len(before) + 1] == [*before, a]

    def slice_added(only_for_moves: bool) -> bool:
        """Slice each dst axis not held whose splits before it are in place (free);
        ``only_for_moves``: only those a pending all-to-all needs in place first."""
        needed = {b for a in used_axes(src) if a in dp and held(a) and not in_place(a) for b in dp[a][1]}
        progress = False
        for j, d in enumerate(dst):
            for k, a in enumerate(d):
                if not held(a) and cur[j] == list(d[:k]) and (a in needed or not only_for_moves):
                    cur[j].append(a)
                    progress = True
        return progress

    def move_in_place() -> bool:
        """All-to-all each axis whose move is clean now."""
        progress = False
        for a in used_axes(src):
            if a not in dp or not held(a) or in_place(a):
                continue
            s_dim = next(i for i, d in enumerate(cur) if a in d)
            d_dim, before = dp[a]
            if s_dim != d_dim and cur[s_dim][-1] == a and cur[d_dim] == list(before):
                step = all_to_all(Collective(CollectiveKind.ALL_TO_ALL, (a,), nbytes()))
                cur[s_dim].remove(a)
                cur[d_dim].append(a)
                out.append(dataclasses.replace(step, after=layout()))
                progress = True
        return progress

    def settle(only_for_moves: bool = True) -> None:
        while slice_added(only_for_moves) | move_in_place():
            pass

    def gather(axes: list[str]) -> None:
        if axes:
            before = layout()
            for d in cur:
                d[:] = [a for a in d if a not in axes]
            dims = [i for i, d in enumerate(before) if any(a in axes for a in d)]
            step = gathered(Collective(CollectiveKind.ALL_GATHER, _mesh_order(mesh, axes), nbytes()), before, dims)
            out.append(dataclasses.replace(step, after=layout()))

    # A dim's whole split of several axes moving, in order, onto a dim split by nothing:
    # XLA views those axes as one and moves the tensor with one all-to-all over them.
    for s_dim, axes in enumerate(src):
        d_dim = next((i for i, d in enumerate(dst) if d == axes and i != s_dim), None)
        if len(axes) > 1 and d_dim is not None and not cur[d_dim] and cur[s_dim] == list(axes):
            step = all_to_all(Collective(CollectiveKind.ALL_TO_ALL, _mesh_order(mesh, axes), nbytes()))
            cur[s_dim], cur[d_dim] = [], list(axes)
            out.append(dataclasses.replace(step, after=layout()))

    settle()
    gather([a for a in used_axes(src) if a not in dp])
    settle()
    stuck = [a for a in used_axes(src) if held(a) and not in_place(a)]
    if stuck and shard_count(dst, mesh) >= shard_count(layout(), mesh):
        axes = _mesh_order(mesh, stuck)
        out.append(all_to_all(Collective(CollectiveKind.ALL_TO_ALL, axes, nbytes())))
        out.append(plain(Collective(CollectiveKind.PERMUTE, axes, local_bytes(shape, itemsize, dst, mesh))))
        return tuple(out)
    gather(stuck)
    settle(only_for_moves=False)
    return tuple(out)


def reshard_path(mesh: MeshShape, shape: Sequence[int], itemsize: int, src: Spec, dst: Spec) -> tuple[Spec, ...]:
    """The layouts a tensor passes through between ``src`` and ``dst`` when the move takes
    several steps of all-to-alls and gathers (slices in between are free): constraining
    it to each in turn makes XLA take these steps, where asked for the whole move at once
    its partitioner may not find them and replicate the tensor instead ("involuntary full
    rematerialization"). Empty for a move of one step, or one through a permute."""
    steps = reshard_steps(mesh, shape, itemsize, src, dst)
    if len(steps) < 2 or any(s.after is None for s in steps):
        return ()
    return tuple(s.after for s in steps[:-1])


def reshard_collectives(mesh: MeshShape, shape: Sequence[int], itemsize: int,
                        src: Spec, dst: Spec) -> list[Collective]:
    """The collectives that turn a tensor laid out as ``src`` into ``dst``, in order."""
    return [s.collective for s in reshard_steps(mesh, shape, itemsize, src, dst)]


def reshard_steps(mesh: MeshShape, shape: Sequence[int], itemsize: int, src: Spec, dst: Spec) -> list[Step]:
    """The steps (collective, local bytes) that turn ``src`` into ``dst``, in order."""
    shape = tuple(int(n) for n in shape)
    return list(_steps(mesh, shape, int(itemsize), _norm(src), _norm(dst)))


def reshard_local_bytes(mesh: MeshShape, shape: Sequence[int], itemsize: int, src: Spec, dst: Spec) -> float:
    """Bytes each device reads and writes in its own memory to reshard ``src`` -> ``dst``."""
    return float(sum(s.local_bytes for s in reshard_steps(mesh, shape, itemsize, src, dst)))


@functools.lru_cache(maxsize=1 << 16)
def _cost(cluster: Cluster, mesh: MeshShape, shape: tuple[int, ...], itemsize: int,
          src: Spec, dst: Spec) -> tuple[float, float]:
    """(seconds on the links, seconds on the device's memory)."""
    steps = _steps(mesh, shape, itemsize, src, dst)
    return (float(sum(collective_cost(cluster, mesh, s.collective) for s in steps)),
            float(sum(s.local_bytes for s in steps)) / cluster.hbm_bandwidth)


def reshard_cost(cluster: Cluster, mesh: MeshShape, shape: Sequence[int], itemsize: int,
                 src: Spec, dst: Spec) -> float:
    """Seconds the collectives of ``src`` -> ``dst`` take on the links of ``cluster``
    (0.0 when dst only adds splits); ``reshard_local_time`` is the memory traffic on top."""
    shape = tuple(int(n) for n in shape)
    return _cost(cluster, mesh, shape, int(itemsize), _norm(src), _norm(dst))[0]


def reshard_local_time(cluster: Cluster, mesh: MeshShape, shape: Sequence[int], itemsize: int,
                       src: Spec, dst: Spec) -> float:
    """Seconds ``src`` -> ``dst`` spends reading and writing each device's own memory."""
    shape = tuple(int(n) for n in shape)
    return _cost(cluster, mesh, shape, int(itemsize), _norm(src), _norm(dst))[1]


@functools.lru_cache(maxsize=4096)
def _matrices(cluster: Cluster, mesh: MeshShape, shape: tuple[int, ...], itemsize: int,
              srcs: tuple[Spec, ...], dsts: tuple[Spec, ...]) -> tuple[np.ndarray, np.ndarray]:
    parts = np.array([[_cost(cluster, mesh, shape, itemsize, s, d) for d in dsts] for s in srcs],
                     dtype=np.float64).reshape(len(srcs), len(dsts), 2)
    links, local = np.ascontiguousarray(parts[:, :, 0]), np.ascontiguousarray(parts[:, :, 1])
    for m in (links, local):
        m.flags.writeable = False  # shared by every caller with the same arguments
    return links, local


def reshard_matrices(cluster: Cluster, mesh: MeshShape, shape: Sequence[int], itemsize: int,
                     srcs: Sequence[Spec], dsts: Sequence[Spec]) -> tuple[np.ndarray, np.ndarray]:
    """(``reshard_cost``, ``reshard_local_time``) of every (src, dst) pair, each of shape
    (len(srcs), len(dsts)); read-only arrays shared between callers."""
    shape = tuple(int(n) for n in shape)
    srcs = tuple(_norm(s) for s in srcs)
    dsts = tuple(_norm(d) for d in dsts)
    return _matrices(cluster, mesh, shape, int(itemsize), srcs, dsts)


def reshard_matrix(cluster: Cluster, mesh: MeshShape, shape: Sequence[int], itemsize: int,
                   srcs: Sequence[Spec], dsts: Sequence[Spec]) -> np.ndarray:
    """``reshard_cost`` of every (src, dst) pair, shape (len(srcs), len(dsts)); a fresh writable copy."""
    return reshard_matrices(cluster, mesh, shape, itemsize, srcs, dsts)[0].copy()
