"""Moving and reshaping values between pipeline stages (jax).

``Mover`` holds small compiled helpers, cached by shape, dtype and shardings:

- ``move(x, sharding)``: ``x`` laid out by ``sharding`` (another submesh, another layout).
  Host data is placed from every process's own copy; a jax.Array whose devices this
  process holds all of goes by ``jax.device_put``; across processes, where device_put
  cannot go on CPU, a jitted ``shard_map`` with ``jax.lax.ppermute`` over the union of the
  two submeshes sends each shard to the device at the same place of the other submesh;
- ``stack(x, dim, M, sharding)``: [..., B, ...] -> [M, ..., B/M, ...] on the submesh of
  ``sharding`` (the layout of one block), so that ``index(stacked, m, sharding)`` takes
  microbatch m without moving data between devices;
- ``concatenate(pieces, dim, sharding)``: the M per-microbatch pieces put back together;
- ``full(shape, dtype, value, sharding)``: a running total's start.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from shardsearch.apply.executable import _place

PIPE = "shardsearch_pipe"  # the union mesh's extra axis: 0 = the sending submesh, 1 = the receiving one


def local_devices(mesh: Mesh) -> list:
    me = jax.process_index()
    return [d for d in mesh.devices.flat if d.process_index == me]


def _fully_local(sharding) -> bool:
    return all(d.process_index == jax.process_index() for d in sharding.device_set)


def _with_dims(spec: PartitionSpec, rank: int) -> tuple:
    return tuple(spec) + (None,) * (rank - len(spec))


class Mover:
    def __init__(self):
        self._jits: dict = {}

    def _jit(self, key, make):
        if key not in self._jits:
            self._jits[key] = make()
        return self._jits[key]

    # ------------------------------------------------------------------ moving
    def move(self, x, sharding: NamedSharding | None):
        if sharding is None:
            return x
        if not isinstance(x, jax.Array):
            return _place(x, sharding)
        if x.sharding == sharding:
            return x
        if jax.process_count() == 1 or (_fully_local(x.sharding) and _fully_local(sharding)):
            return jax.device_put(x, sharding)
        return self._across(x, sharding)

    def _across(self, x: jax.Array, sharding: NamedSharding) -> jax.Array:
        """Send ``x`` to another process's submesh: reshard on the source submesh to the
        target's layout, then one ppermute over the union of both submeshes."""
        src_mesh, dst_mesh = x.sharding.mesh, sharding.mesh
        if src_mesh.devices.shape != dst_mesh.devices.shape or src_mesh.axis_names != dst_mesh.axis_names:
            raise NotImplementedError("a transfer between processes needs two submeshes of one shape; got "
                                      f"{src_mesh.devices.shape} and {dst_mesh.devices.shape}")
        spec = _with_dims(sharding.spec, x.ndim)
        here = NamedSharding(src_mesh, PartitionSpec(*spec))
        if _fully_local(here) or x.is_fully_addressable:
            x = jax.device_put(x, here) if x.sharding != here else x
        union = Mesh(np.stack([src_mesh.devices, dst_mesh.devices]), (PIPE, *src_mesh.axis_names))
        both = NamedSharding(union, PartitionSpec(PIPE, *spec))
        mine = set(d.id for d in local_devices(union))
        # this process's shards of [x; zeros] over the union: the sender's real ones, the receiver's blanks
        shards = []
        for d, index in both.addressable_devices_indices_map((2, *x.shape)).items():
            if d in here.device_set:
                shards.append(x.addressable_data(list(x.sharding.addressable_devices).index(d))
                              if d in x.sharding.addressable_devices else None)
            else:
                local = tuple(slice(None) if s == slice(None) else s for s in index[1:])
                block = np.zeros(np.empty(x.shape, dtype=np.bool_)[local].shape, x.dtype)
                shards.append(jax.device_put(block, d))
        shards = [s[None] if s is not None and s.ndim == x.ndim else s for s in shards]
        glued = jax.make_array_from_single_device_arrays((2, *x.shape), both, [s for s in shards if s is not None])
        send = self._jit(("ppermute", both, x.shape, x.dtype), lambda: jax.jit(jax.shard_map(
            lambda b: jax.lax.ppermute(b, PIPE, [(0, 1)]), mesh=union, in_specs=PartitionSpec(PIPE, *spec),
            out_specs=PartitionSpec(PIPE, *spec))))
        out = send(glued)
        received = [s.data[0] for s in out.addressable_shards if s.device in sharding.device_set and s.device.id in mine]
        return jax.make_array_from_single_device_arrays(x.shape, sharding, received)

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
        fn = self._jit(("stack", shape, x.dtype, dim, m, x.sharding, target), lambda: jax.jit(
            lambda v: jnp.moveaxis(v.reshape(blocks), dim, 0), out_shardings=target))
        return fn(x)

    def index(self, stacked: jax.Array, i: int, sharding: NamedSharding):
        fn = self._jit(("index", stacked.shape, stacked.dtype, stacked.sharding, sharding), lambda: jax.jit(
            lambda v, k: jax.lax.dynamic_index_in_dim(v, k, 0, keepdims=False), out_shardings=sharding))
        return fn(stacked, np.int32(i))

    def concatenate(self, pieces: list, dim: int, sharding: NamedSharding | None):
        first = pieces[0]
        if sharding is not None:
            piece = NamedSharding(sharding.mesh, sharding.spec)
            pieces = [self.move(p, piece) for p in pieces]
        fn = self._jit(("concat", first.shape, first.dtype, len(pieces), dim, sharding), lambda: jax.jit(
            lambda *ps: jnp.concatenate(ps, axis=dim), out_shardings=sharding))
        return fn(*pieces)

    def full(self, shape, dtype, value, sharding: NamedSharding):
        fn = self._jit(("full", tuple(shape), np.dtype(dtype), value, sharding), lambda: jax.jit(
            lambda: jnp.full(shape, value, dtype), out_shardings=sharding))
        return fn()
