"""Which links a collective crosses: how its device groups sit on nodes.

Device ``i`` of a mesh (flat, row-major order) sits on node ``i // devices_per_node``.
A collective over some mesh axes runs one group per combination of the other axes'
indices; a ``NodeSpan`` summarizes the groups: their size, how many nodes one group
touches, and how many of its members share a node. An axis can lie inside a node
(one node per group), across nodes (one member per node), or partly both (an axis of
8 on nodes of 4: two nodes of four members each).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable, Sequence

import numpy as np

from .mesh import MeshShape


@dataclasses.dataclass(frozen=True)
class NodeSpan:
    """How the groups of one collective sit on nodes (the worst group where they differ).

    ``size``: devices per group; ``nodes``: nodes one group touches; ``min_per_node`` /
    ``max_per_node``: fewest / most members of a group on one of its nodes.
    """

    size: int
    nodes: int
    min_per_node: int
    max_per_node: int

    @property
    def crosses_nodes(self) -> bool:
        return self.nodes > 1

    @classmethod
    def inside(cls, size: int) -> NodeSpan:
        """A group of ``size`` devices on one node."""
        return cls(size, 1, size, size)

    @classmethod
    def across(cls, size: int) -> NodeSpan:
        """A group of ``size`` devices, each on its own node (the flat inter-node case)."""
        return cls(size, size, 1, 1) if size > 1 else cls.inside(size)


def spans_of_groups(groups: Iterable[Sequence[int]], devices_per_node: int) -> tuple[NodeSpan, ...]:
    """The distinct spans of explicit device groups (as XLA prints them), sorted."""
    out = set()
    for g in groups:
        members = sorted(set(int(d) for d in g))
        if not members:
            continue
        _, counts = np.unique(np.array(members) // devices_per_node, return_counts=True)
        out.add(NodeSpan(len(members), len(counts), int(counts.min()), int(counts.max())))
    return tuple(sorted(out, key=dataclasses.astuple)) or (NodeSpan.inside(1),)


@functools.lru_cache(maxsize=4096)
def mesh_spans(devices_per_node: int, mesh: MeshShape, axes: tuple[str, ...]) -> tuple[NodeSpan, ...]:
    """The distinct spans of the groups of a collective over ``axes`` (names checked by the caller)."""
    if not axes:
        return (NodeSpan.inside(1),)
    return spans_of_groups(mesh.device_groups(axes).tolist(), devices_per_node)
