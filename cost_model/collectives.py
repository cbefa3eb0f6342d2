"""Alpha-beta costs of collectives over mesh axes.

Byte conventions (per device, see ``Collective.nbytes``):
  ALL_REDUCE      the buffer each device holds (same before and after)
  ALL_GATHER      the gathered result each device ends with
  REDUCE_SCATTER  the full operand each device starts with
  ALL_TO_ALL      the buffer each device holds (same size before and after)
  PERMUTE         the buffer each device sends (and receives)

Times are alpha-beta over a group of n devices (the product of the sizes of
``axes``), at the Link that ``Cluster.link_for`` picks for those axes: ring
bandwidth terms, and one launch latency per collective (NCCL-style pipelined
collectives pay about one fixed latency each for small messages, not one per hop;
this also makes two collectives cost more than one that moves the same bytes):
  ALL_REDUCE                  2(n-1)/n * B/bw + lat
  ALL_GATHER, REDUCE_SCATTER   (n-1)/n * B/bw + lat
  ALL_TO_ALL                   (n-1)/n * B/bw + lat
  PERMUTE                              B/bw + lat
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Sequence

from .mesh import MeshShape

if TYPE_CHECKING:
    from .cluster import Cluster


class CollectiveKind(enum.Enum):
    ALL_REDUCE = "all-reduce"
    ALL_GATHER = "all-gather"
    REDUCE_SCATTER = "reduce-scatter"
    ALL_TO_ALL = "all-to-all"
    PERMUTE = "collective-permute"


@dataclasses.dataclass(frozen=True)
class Collective:
    kind: CollectiveKind
    axes: tuple[str, ...]
    nbytes: float


# kind -> bandwidth factor as a function of the group size n
_RING = {
    CollectiveKind.ALL_REDUCE: lambda n: 2 * (n - 1) / n,
    CollectiveKind.ALL_GATHER: lambda n: (n - 1) / n,
    CollectiveKind.REDUCE_SCATTER: lambda n: (n - 1) / n,
    CollectiveKind.ALL_TO_ALL: lambda n: (n - 1) / n,
    CollectiveKind.PERMUTE: lambda n: 1.0,
}


def group_collective_time(cluster: Cluster, kind: CollectiveKind | str, group_size: int,
                          crosses_nodes: bool, nbytes: float) -> float:
    """Seconds one collective takes over groups of ``group_size`` devices, at the
    inter-node Link if a group spans nodes, else the intra-node one."""
    kind = CollectiveKind(kind)
    if group_size <= 1:
        return 0.0
    link = cluster.inter_node if crosses_nodes else cluster.intra_node
    return _RING[kind](group_size) * float(nbytes) / link.bandwidth + link.latency


def collective_time(cluster: Cluster, mesh: MeshShape, kind: CollectiveKind | str,
                    axes: str | Sequence[str], nbytes: float) -> float:
    """Seconds one collective takes; ``nbytes`` follows the module's byte conventions."""
    kind = CollectiveKind(kind)
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    if not axes:
        return 0.0
    crosses = cluster.crosses_nodes(mesh, axes)  # also checks the axis names
    return group_collective_time(cluster, kind, mesh.group_size(axes), crosses, nbytes)


def collective_cost(cluster: Cluster, mesh: MeshShape, c: Collective) -> float:
    return collective_time(cluster, mesh, c.kind, c.axes, c.nbytes)
