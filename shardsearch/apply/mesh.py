"""Turn what the user passed as ``mesh`` into a jax Mesh with Auto axes."""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, PartitionSpec

from cost_model import MeshShape, Spec
from shardsearch.errors import MeshError

TOO_MANY_DEVICES = (
    "mesh shape {shape} needs {need} devices but only {have} {platform} device(s) exist. "
    "Use a smaller mesh, or on CPU set XLA_FLAGS=--xla_force_host_platform_device_count={need} "
    "before importing jax."
)
BAD_MESH = "mesh must be a jax.sharding.Mesh or a tuple of positive axis sizes such as (2, 4); got {mesh!r}"


def default_axis_names(ndim: int) -> tuple[str, ...]:
    if ndim == 1:
        return ("data",)
    if ndim == 2:
        return ("data", "model")
    return tuple(f"axis{i}" for i in range(ndim))


def as_auto_mesh(mesh) -> Mesh:
    """A Mesh whose axes are all ``AxisType.Auto`` (``with_sharding_constraint`` needs that).

    ``jax.make_mesh`` gives Explicit axes by default; the devices and names are kept.
    """
    if isinstance(mesh, Mesh):
        return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))
    if not isinstance(mesh, (tuple, list)) or not mesh or not all(isinstance(n, int) and n > 0 for n in mesh):
        raise MeshError(BAD_MESH.format(mesh=mesh))
    devices = jax.devices()
    need = math.prod(mesh)
    if need > len(devices):
        raise MeshError(
            TOO_MANY_DEVICES.format(shape=tuple(mesh), need=need, have=len(devices), platform=devices[0].platform)
        )
    grid = np.array(devices[:need]).reshape(tuple(mesh))
    names = default_axis_names(len(mesh))
    return Mesh(grid, names, axis_types=(AxisType.Auto,) * len(names))


def mesh_shape(mesh) -> MeshShape:
    """Axis names and sizes of a Mesh, an AbstractMesh or a shape tuple (no devices needed)."""
    if isinstance(mesh, (tuple, list)):
        if not mesh or not all(isinstance(n, int) and n > 0 for n in mesh):
            raise MeshError(BAD_MESH.format(mesh=mesh))
        return MeshShape(default_axis_names(len(mesh)), tuple(mesh))
    if hasattr(mesh, "axis_names") and hasattr(mesh, "axis_sizes"):  # AbstractMesh
        return MeshShape(tuple(mesh.axis_names), tuple(int(s) for s in mesh.axis_sizes))
    if isinstance(mesh, Mesh):
        return MeshShape(tuple(mesh.axis_names), tuple(int(s) for s in mesh.devices.shape))
    raise MeshError(BAD_MESH.format(mesh=mesh))


def device_mesh(shape: MeshShape) -> Mesh:
    """A Mesh of ``shape`` (its axis names kept) over the first devices of ``jax.devices()``."""
    grid = as_auto_mesh(tuple(shape.axis_sizes)).devices  # a clear error when too few devices
    return Mesh(grid, shape.axis_names, axis_types=(AxisType.Auto,) * len(shape.axis_names))


def to_partition_spec(spec: Spec) -> PartitionSpec:
    """A cost_model Spec (a tuple of mesh-axis tuples per dimension) as a jax PartitionSpec."""
    entries = [None if not d else (d[0] if len(d) == 1 else tuple(d)) for d in spec]
    while entries and entries[-1] is None:  # P('data', None) == P('data') to XLA
        entries.pop()
    return PartitionSpec(*entries)
