"""Alpha-beta costs of collectives over mesh axes, aware of which links their groups cross.

Every collective also reads its operand and writes its result in the device's own
memory (``collective_local_bytes``): time on the device's memory bandwidth, priced
apart from the links (the planner adds it to the device's time, not to communication).

Byte conventions (per device, see ``Collective.nbytes``):
  ALL_REDUCE      the buffer each device holds (same before and after)
  ALL_GATHER      the gathered result each device ends with
  REDUCE_SCATTER  the full operand each device starts with
  ALL_TO_ALL      the buffer each device holds (same size before and after)
  PERMUTE         the buffer each device sends (and receives)

A group of n devices (the product of the sizes of ``axes``) lies on k nodes with
between lo and hi members per node (``topology.NodeSpan``; lo = hi = m when the
axis splits evenly). Links: ``Cluster.collective_link(kind, crosses_nodes)`` gives
the intra-node Link (bandwidth bw_i, latency lat_i) and the inter-node one (bw_e,
lat_e), fitted per collective kind when a profile has them. Each bandwidth is per
device, with every device of a node sending at once (as every group of a mesh-axis
collective runs at the same time).

Inside one node (k = 1), ring bandwidth terms and one launch latency (NCCL-style
pipelined collectives pay about one fixed latency each for small messages, not one
per hop; this also makes two collectives cost more than one that moves the same bytes):
  ALL_REDUCE                  2(n-1)/n * B/bw_i + lat_i
  ALL_GATHER, REDUCE_SCATTER   (n-1)/n * B/bw_i + lat_i
  ALL_TO_ALL                   (n-1)/n * B/bw_i + lat_i
  PERMUTE                              B/bw_i + lat_i

Across nodes (k > 1), the two-level (hierarchical) schedule that NCCL's tree and
hierarchical algorithms approach: the intra-node part moves at bw_i, the inter-node
part at bw_e, each device of a node carrying 1/m of its node's inter-node traffic
(rail-optimized NICs; one latency, the slower link's):
  ALL_REDUCE      reduce-scatter in the node, all-reduce of B/m across the k nodes,
                  all-gather in the node:
                  2(m-1)/m * B/bw_i + 2(k-1)/(k m) * B/bw_e + lat_e
  ALL_GATHER      gather across nodes (B/m per device), then inside the node;
  REDUCE_SCATTER  the reverse:
                   (m-1)/m * B/bw_i +  (k-1)/(k m) * B/bw_e + lat_e
  ALL_TO_ALL      every device sends B/n to each peer; the (k-1)/k of B bound for
                  other nodes cannot be combined, so it all crosses:
                  (m-1)/n * B/bw_i +   (k-1)/k  * B/bw_e + lat_e
  PERMUTE         some pair crosses, and the group waits for it:  B/bw_e + lat_e
With uneven groups, (k-1)/(k m) = (n-m)/(n m) is taken at m = lo (the node with the
fewest members carries the most per device) and the intra terms at m = hi. One member
per node (m = 1) gives the flat ring at bw_e, n = k. No overlap between the levels is
assumed. Where a collective's groups differ (uneven meshes), the slowest group counts.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Sequence

from .mesh import MeshShape
from .topology import NodeSpan

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


# kind -> bandwidth factor of the ring inside one node, as a function of the group size n
_RING = {
    CollectiveKind.ALL_REDUCE: lambda n: 2 * (n - 1) / n,
    CollectiveKind.ALL_GATHER: lambda n: (n - 1) / n,
    CollectiveKind.REDUCE_SCATTER: lambda n: (n - 1) / n,
    CollectiveKind.ALL_TO_ALL: lambda n: (n - 1) / n,
    CollectiveKind.PERMUTE: lambda n: 1.0,
}

# kind -> (intra-node factor, inter-node factor) of a group spanning nodes, from
# (n, lo, hi): the group size and the fewest / most members on one node.
_TWO_LEVEL = {
    CollectiveKind.ALL_REDUCE: lambda n, lo, hi: (2 * (hi - 1) / hi, 2 * (n - lo) / (n * lo)),
    CollectiveKind.ALL_GATHER: lambda n, lo, hi: ((hi - 1) / hi, (n - lo) / (n * lo)),
    CollectiveKind.REDUCE_SCATTER: lambda n, lo, hi: ((hi - 1) / hi, (n - lo) / (n * lo)),
    CollectiveKind.ALL_TO_ALL: lambda n, lo, hi: ((hi - 1) / n, (n - lo) / n),
    CollectiveKind.PERMUTE: lambda n, lo, hi: (0.0, 1.0),
}


def span_collective_time(cluster: Cluster, kind: CollectiveKind | str, span: NodeSpan, nbytes: float) -> float:
    """Seconds one collective takes over groups laid on nodes as ``span`` says."""
    kind = CollectiveKind(kind)
    if span.size <= 1:
        return 0.0
    intra = cluster.collective_link(kind, False)
    if not span.crosses_nodes:
        return _RING[kind](span.size) * float(nbytes) / intra.bandwidth + intra.latency
    inter = cluster.collective_link(kind, True)
    f_intra, f_inter = _TWO_LEVEL[kind](span.size, span.min_per_node, span.max_per_node)
    return float(nbytes) * (f_intra / intra.bandwidth + f_inter / inter.bandwidth) + inter.latency


def group_collective_time(cluster: Cluster, kind: CollectiveKind | str, group_size: int,
                          crosses_nodes: bool, nbytes: float) -> float:
    """Seconds one collective takes over groups of ``group_size`` devices, either all on
    one node or (``crosses_nodes``) each on its own node: the flat ring at the inter-node
    Link. Use ``span_collective_time`` when the groups' layout on nodes is known."""
    span = NodeSpan.across(group_size) if crosses_nodes else NodeSpan.inside(group_size)
    return span_collective_time(cluster, kind, span, nbytes)


def collective_time(cluster: Cluster, mesh: MeshShape, kind: CollectiveKind | str,
                    axes: str | Sequence[str], nbytes: float) -> float:
    """Seconds one collective over ``axes`` takes; ``nbytes`` follows the module's byte
    conventions. The groups' layout on nodes comes from the mesh's device order."""
    kind = CollectiveKind(kind)
    spans = cluster.node_spans(mesh, axes)  # also checks the axis names
    return max(span_collective_time(cluster, kind, s, nbytes) for s in spans)


def collective_cost(cluster: Cluster, mesh: MeshShape, c: Collective) -> float:
    return collective_time(cluster, mesh, c.kind, c.axes, c.nbytes)


# kind -> (operand bytes, result bytes) per device from (nbytes, group size n), in the
# module's byte conventions
_BUFFERS = {
    CollectiveKind.ALL_REDUCE: lambda b, n: (b, b),
    CollectiveKind.ALL_GATHER: lambda b, n: (b / n, b),
    CollectiveKind.REDUCE_SCATTER: lambda b, n: (b, b / n),
    CollectiveKind.ALL_TO_ALL: lambda b, n: (b, b),
    CollectiveKind.PERMUTE: lambda b, n: (b, b),
}


def collective_buffers(mesh: MeshShape, c: Collective) -> tuple[float, float]:
    """(operand, result) bytes per device of one collective (nothing over one device)."""
    n = mesh.group_size(c.axes)
    return (0.0, 0.0) if n <= 1 else _BUFFERS[c.kind](float(c.nbytes), n)


def collective_local_bytes(mesh: MeshShape, c: Collective) -> float:
    """Bytes a collective reads and writes in each device's own memory: its operand and
    its result. The links' time (``collective_cost``) does not include this: a value
    that goes through a collective is written out by its producer and read back by its
    consumer instead of staying in a fusion, which on a device whose memory is slow next
    to its links (or for a small collective on any device) is the larger cost."""
    return float(sum(collective_buffers(mesh, c)))
