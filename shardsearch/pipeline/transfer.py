"""Moving and reshaping values between pipeline stages (jax).

``Mover`` holds small compiled helpers, cached by shape, dtype and shardings:

- ``move(x, sharding)``: ``x`` laid out by ``sharding`` (another submesh, another layout).
  The user's values (host data, arrays not on a stage's submesh) are placed from every
  process's own copy; a value the pipeline made, whose devices this process holds all
  of, goes by ``jax.device_put``; across processes, where device_put
  cannot go on CPU, a jitted ``shard_map`` with ``jax.lax.ppermute`` over the union of the
  two submeshes sends each shard to the device at the same place of the other submesh;
- ``stack(x, dim, M, sharding)``: [..., B, ...] -> [M, ..., B/M, ...] on the submesh of
  ``sharding`` (the layout of one block), so that ``index(stacked, m, sharding)`` takes
  microbatch m without moving data between devices;
- ``concatenate(pieces, dim, sharding)``: the M per-microbatch pieces put back together;
- ``full(shape, dtype, value, sharding)``: a running total's start;
- ``join_layers(parts, dim)``: the stages' parts of a layer-stacked value (a scan's
  stacked parameters) as one array over the union of their submeshes (mesh axis
  ``STAGES`` first), made of the parts' own buffers; ``layers_of(x, dim, a, b, sharding)``:
  one stage's layers of such an array as an array on its submesh, again without a copy
  (or, for the user's own value, its layers ``[a, b)`` placed there). With parts of
  unequal sizes or submeshes of other shapes, the layers are copied onto one submesh;
- ``join_copies(copies)``: the equal copies of a value kept on several stages (a tied
  embedding) as one array over the union of their submeshes, replicated over the mesh
  axis ``STAGES``, made of the copies' own buffers; ``copy_of(x, sharding)``: one stage's
  copy of such an array, as an array on its submesh, without a copy (the user's value:
  placed there).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from shardsearch.apply.executable import _place

PIPE = "shardsearch_pipe"  # the union mesh's extra axis: 0 = the sending submesh, 1 = the receiving one
STAGES = "shardsearch_stages"  # a layer-stacked value's mesh: the stages' submeshes, in layer order


def local_devices(mesh: Mesh) -> list:
    me = jax.process_index()
    return [d for d in mesh.devices.flat if d.process_index == me]


def owns(sharding) -> bool:
    """Whether this process holds any device of ``sharding`` (and so takes part in what runs there)."""
    return any(d.process_index == jax.process_index() for d in sharding.device_set)


def _fully_local(sharding) -> bool:
    return all(d.process_index == jax.process_index() for d in sharding.device_set)


def _with_dims(spec: PartitionSpec, rank: int) -> tuple:
    return tuple(spec) + (None,) * (rank - len(spec))


def placeholder(shape, dtype, sharding) -> jax.Array:
    """A global array of which this process holds no piece: what it keeps for a value
    made on other processes' devices (its shape, dtype and layout are known everywhere)."""
    return jax.make_array_from_single_device_arrays(tuple(shape), sharding, [], dtype=dtype)


class Mover:
    """``meshes``: the stages' submeshes; an array laid out on one of them was made by the
    pipeline (each process holds its own pieces of it), any other is the user's (every
    process passes the same whole value)."""

    def __init__(self, meshes=()):
        self._jits: dict = {}
        self.meshes = tuple(meshes)

    def _jit(self, key, make):
        if key not in self._jits:
            self._jits[key] = make()
        return self._jits[key]

    # ------------------------------------------------------------------ moving
    def move(self, x, sharding: NamedSharding | None):
        if sharding is None:
            return x
        if x.sharding == sharding if isinstance(x, jax.Array) else False:
            return x
        if not isinstance(x, jax.Array) or getattr(x.sharding, "mesh", None) not in self.meshes:
            if not owns(sharding):
                return placeholder(np.shape(x), x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype, sharding)
            return _place(x, sharding)  # the user's value: every process has all of it
        if jax.process_count() == 1 or (_fully_local(x.sharding) and _fully_local(sharding)):
            return jax.device_put(x, sharding)
        if not owns(x.sharding) and not owns(sharding):
            return placeholder(x.shape, x.dtype, sharding)  # moves between two other processes
        return self._across(x, sharding)

    def _reshard(self, x: jax.Array, sharding: NamedSharding) -> jax.Array:
        """``x`` in another layout on the devices it is on (every process that holds some runs it)."""
        if x.sharding == sharding:
            return x
        fn = self._jit(("reshard", x.shape, x.dtype, x.sharding, sharding),
                       lambda: jax.jit(lambda v: v, out_shardings=sharding))
        return fn(x) if owns(sharding) else placeholder(x.shape, x.dtype, sharding)

    def _across(self, x: jax.Array, sharding: NamedSharding) -> jax.Array:
        """Send ``x`` to a submesh held by other processes: reshard it on its own submesh to
        the target's layout, then one ppermute over the union of both submeshes sends each
        shard to the device at the same place of the other submesh."""
        src_mesh, dst_mesh = x.sharding.mesh, sharding.mesh
        if src_mesh.devices.shape != dst_mesh.devices.shape:
            raise NotImplementedError("a transfer between processes needs two submeshes of one shape; got "
                                      f"{src_mesh.devices.shape} and {dst_mesh.devices.shape}")
        spec = _with_dims(sharding.spec, x.ndim)
        x = self._reshard(x, NamedSharding(src_mesh, PartitionSpec(*spec)))
        union = Mesh(np.stack([src_mesh.devices, dst_mesh.devices]), (PIPE, *src_mesh.axis_names))
        both = NamedSharding(union, PartitionSpec(PIPE, *spec))
        block = sharding.shard_shape(x.shape)
        mine = {s.device: s.data for s in x.addressable_shards}
        pieces = []  # this process's pieces of [x; blanks]: the sender's shards, the receiver's blanks
        for d in both.addressable_devices:
            data = mine.get(d)
            if data is None:
                data = jax.device_put(np.zeros(block, x.dtype), d)
            pieces.append(data.reshape((1, *block)))
        glued = jax.make_array_from_single_device_arrays((2, *x.shape), both, pieces)
        send = self._jit(("ppermute", both, x.shape, x.dtype), lambda: jax.jit(jax.shard_map(
            lambda b: jax.lax.ppermute(b, PIPE, [(0, 1)]), mesh=union, in_specs=PartitionSpec(PIPE, *spec),
            out_specs=PartitionSpec(PIPE, *spec))))
        out = send(glued)
        received = [s.data.reshape(block) for s in out.addressable_shards if s.device in sharding.device_set]
        return jax.make_array_from_single_device_arrays(x.shape, sharding, received, dtype=x.dtype)

    # ------------------------------------------------------------------ microbatch blocks
    def stack(self, x, dim: int, m: int, sharding: NamedSharding):
        """[..., B, ...] -> [M, ..., B/M, ...] laid out as one block's ``sharding`` with the M dim whole."""
        shape = tuple(x.shape)
        blocks = shape[:dim] + (m, shape[dim] // m) + shape[dim + 1:]
        rank = len(shape)
        target = NamedSharding(sharding.mesh, PartitionSpec(None, *_with_dims(sharding.spec, rank)))
        if not isinstance(x, jax.Array):  # host data: cut it on the host
            return _place(np.moveaxis(np.asarray(x).reshape(blocks), dim, 0), target)
        x = self.move(x, NamedSharding(sharding.mesh, sharding.spec))
        if not owns(target):
            return placeholder((m,) + blocks[:dim] + blocks[dim + 1:], x.dtype, target)
        fn = self._jit(("stack", shape, x.dtype, dim, m, x.sharding, target), lambda: jax.jit(
            lambda v: jnp.moveaxis(v.reshape(blocks), dim, 0), out_shardings=target))
        return fn(x)

    def index(self, stacked: jax.Array, i: int, sharding: NamedSharding):
        if not owns(sharding):
            return placeholder(stacked.shape[1:], stacked.dtype, sharding)
        fn = self._jit(("index", stacked.shape, stacked.dtype, stacked.sharding, sharding), lambda: jax.jit(
            lambda v, k: jax.lax.dynamic_index_in_dim(v, k, 0, keepdims=False), out_shardings=sharding))
        return fn(stacked, np.int32(i))

    def concatenate(self, pieces: list, dim: int, sharding: NamedSharding | None):
        first = pieces[0]
        if sharding is not None:
            piece = NamedSharding(sharding.mesh, sharding.spec)
            pieces = [self.move(p, piece) for p in pieces]
            if not owns(sharding):
                shape = list(first.shape)
                shape[dim] *= len(pieces)
                return placeholder(shape, first.dtype, sharding)
        fn = self._jit(("concat", first.shape, first.dtype, len(pieces), dim, sharding), lambda: jax.jit(
            lambda *ps: jnp.concatenate(ps, axis=dim), out_shardings=sharding))
        return fn(*pieces)

    def full(self, shape, dtype, value, sharding: NamedSharding):
        if not owns(sharding):
            return placeholder(shape, dtype, sharding)
        fn = self._jit(("full", tuple(shape), np.dtype(dtype), value, sharding), lambda: jax.jit(
            lambda: jnp.full(shape, value, dtype), out_shardings=sharding))
        return fn()

    # ------------------------------------------------------------------ layer-stacked values
    def join_layers(self, parts: list, dim: int):
        first = parts[0]
        shape = list(first.shape)
        shape[dim] = sum(p.shape[dim] for p in parts)
        target = _union_sharding([p.sharding for p in parts], dim, first.ndim) \
            if len({p.shape[dim] for p in parts}) == 1 else None
        if target is not None:
            shards = [s.data for p in parts for s in p.addressable_shards]
            return jax.make_array_from_single_device_arrays(tuple(shape), target, shards, dtype=first.dtype)
        whole = NamedSharding(first.sharding.mesh, PartitionSpec())
        return self.concatenate([self.move(p, whole) for p in parts], dim, whole)

    # ------------------------------------------------------------------ values kept on several stages
    def join_copies(self, copies: list):
        """One array of the stages' equal copies (each stays on its own devices); where
        their submeshes or layouts differ, the first copy (the owner's)."""
        first = copies[0]
        meshes = [c.sharding.mesh for c in copies]
        if len({m.devices.shape for m in meshes}) != 1 or len({tuple(c.sharding.spec) for c in copies}) != 1:
            return first
        union = Mesh(np.stack([m.devices for m in meshes]), (STAGES, *meshes[0].axis_names))
        target = NamedSharding(union, first.sharding.spec)
        shards = [s.data for c in copies for s in c.addressable_shards]
        return jax.make_array_from_single_device_arrays(first.shape, target, shards, dtype=first.dtype)

    def copy_of(self, x, sharding: NamedSharding):
        """The copy on ``sharding``'s submesh of a value ``join_copies`` made, in ``sharding``."""
        mesh = getattr(getattr(x, "sharding", None), "mesh", None)
        if mesh is not None and mesh.axis_names[0] == STAGES and sharding.mesh in self.meshes \
                and set(sharding.mesh.devices.flat) <= set(mesh.devices.flat):
            mine = set(sharding.mesh.devices.flat)
            view = jax.make_array_from_single_device_arrays(
                x.shape, NamedSharding(sharding.mesh, x.sharding.spec),
                [s.data for s in x.addressable_shards if s.device in mine], dtype=x.dtype)
            return self.move(view, sharding)
        return self.move(x, sharding)

    def layers_of(self, x, dim: int, a: int, b: int, sharding: NamedSharding):
        mesh = getattr(getattr(x, "sharding", None), "mesh", None)
        if mesh is not None and mesh.axis_names[0] == STAGES and sharding.mesh in self.meshes:
            mine = set(sharding.mesh.devices.flat)
            spec = list(_with_dims(x.sharding.spec, x.ndim))
            rest = tuple(e for e in (spec[dim] if isinstance(spec[dim], tuple) else (spec[dim],)) if e != STAGES)
            spec[dim] = None if not rest else rest[0] if len(rest) == 1 else rest
            shape = list(x.shape)
            shape[dim] = b - a
            view = jax.make_array_from_single_device_arrays(
                tuple(shape), NamedSharding(sharding.mesh, PartitionSpec(*spec)),
                [s.data for s in x.addressable_shards if s.device in mine], dtype=x.dtype)
            return self.move(view, sharding)
        if isinstance(x, jax.Array):
            return self.move(jax.lax.slice_in_dim(x, a, b, axis=dim), sharding)
        return self.move(np.take(np.asarray(x), np.arange(a, b), axis=dim), sharding)


def _union_sharding(shardings: list, dim: int, rank: int) -> NamedSharding | None:
    """One layout over the stages' submeshes for parts laid out alike on submeshes of one shape."""
    meshes = [s.mesh for s in shardings]
    if len({m.devices.shape for m in meshes}) != 1 or len({tuple(s.spec) for s in shardings}) != 1:
        return None
    union = Mesh(np.stack([m.devices for m in meshes]), (STAGES, *meshes[0].axis_names))
    spec = list(_with_dims(shardings[0].spec, rank))
    inner = spec[dim] if isinstance(spec[dim], tuple) else (() if spec[dim] is None else (spec[dim],))
    spec[dim] = (STAGES, *inner)
    return NamedSharding(union, PartitionSpec(*spec))
