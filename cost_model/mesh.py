"""Mesh shapes and sharding specs as plain data (no jax).

A *spec* describes how one tensor is laid out on a mesh: a tuple with one entry
per tensor dimension, each entry a tuple of mesh-axis names (major first) that
split that dimension. ``((), ("data",), ("model", "data"))`` is the normalized
form of ``PartitionSpec(None, "data", ("model", "data"))``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

Spec = tuple[tuple[str, ...], ...]


@dataclasses.dataclass(frozen=True)
class MeshShape:
    """Axis names and sizes of a device mesh, in mesh order (row-major devices).

    Device ``i`` in the flattened mesh order sits on node ``i // devices_per_node``.
    """

    axis_names: tuple[str, ...]
    axis_sizes: tuple[int, ...]

    def __post_init__(self):
        if len(self.axis_names) != len(self.axis_sizes):
            raise ValueError(f"MeshShape: {len(self.axis_names)} names for {len(self.axis_sizes)} sizes")

    @property
    def size(self) -> int:
        return int(math.prod(self.axis_sizes))

    def axis_size(self, name: str) -> int:
        return self.axis_sizes[self.axis_names.index(name)]

    def group_size(self, axes: Sequence[str]) -> int:
        return int(math.prod(self.axis_size(a) for a in axes))

    def device_groups(self, axes: Sequence[str]) -> np.ndarray:
        """Flat device positions of every group that a collective over ``axes`` spans.

        Returns an int array of shape (num_groups, group_size).
        """
        ids = np.arange(self.size).reshape(self.axis_sizes)
        idx = [self.axis_names.index(a) for a in axes]
        rest = [i for i in range(len(self.axis_names)) if i not in idx]
        moved = np.transpose(ids, rest + idx)
        return moved.reshape(-1, self.group_size(axes))


def replicated(rank: int) -> Spec:
    return ((),) * rank


def shard_count(spec: Spec, mesh: MeshShape) -> int:
    """How many distinct pieces the tensor is cut into."""
    return int(math.prod(mesh.group_size(d) for d in spec))


def local_shape(shape: Sequence[int], spec: Spec, mesh: MeshShape) -> tuple[int, ...]:
    return tuple(-(-int(n) // mesh.group_size(d)) for n, d in zip(shape, spec))


def local_bytes(shape: Sequence[int], itemsize: int, spec: Spec, mesh: MeshShape) -> float:
    return float(math.prod(local_shape(shape, spec, mesh))) * itemsize


def used_axes(spec: Spec) -> tuple[str, ...]:
    return tuple(a for d in spec for a in d)


def spec_str(spec: Spec) -> str:
    """Compact readable form: ``[data, -, model+data]``."""
    parts = ["+".join(d) if d else "-" for d in spec]
    return "[" + ", ".join(parts) + "]"
