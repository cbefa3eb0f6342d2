"""Which configurations a sweep plans: device counts the cluster can hold, and the mesh
shapes of each count that line up with the cluster's nodes.

A configuration is a device count, a 2-D mesh ``(data, model)`` and a number of
pipeline stages (1: the mesh as one stage; more: ``stages.py``, one more row of the same
table). Shapes that plan alike are swept once:

* ``(1, n)`` and ``(n, 1)`` are the same 1-D mesh (axis names are labels: the planner
  chooses what each axis splits), kept as ``(n, 1)``;
* inside one node every link is the same, so ``(a, b)`` and ``(b, a)`` cost the same
  and only ``a >= b`` is kept.

Across nodes the inner (``model``) axis of a mesh must either fit in a node
(``devices_per_node % model == 0``) or span whole nodes (``model % devices_per_node ==
0``); otherwise its groups straddle node boundaries unevenly.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Iterable, Sequence

from cost_model import Cluster
from shardsearch.errors import AdviseError

NOT_A_COUNT = "devices={value!r} is not a positive whole number of devices; pass e.g. devices=[1, 2, 4, 8]"
OVER_CAPACITY = (
    "devices={count} is more than cluster {name!r} holds ({nodes} node(s) x {per_node} devices = {capacity}); "
    "use at most {capacity} devices, or a cluster with more nodes ({bigger})"
)
PARTIAL_NODE = (
    "devices={count} spans {nodes:.3g} nodes of {per_node} on cluster {name!r}; a job larger than one node "
    "takes whole nodes: use {lower} or {upper} devices"
)
NO_COUNTS = "no device counts to sweep: pass devices=[...] or max_devices >= 1 (cluster {name!r} holds {capacity})"


@dataclasses.dataclass(frozen=True, order=True)
class Config:
    """One row of a sweep: ``devices`` devices as a ``mesh_shape`` mesh, in ``stages``
    pipeline stages (each stage a ``mesh_shape`` submesh when ``stages > 1``)."""

    devices: int
    mesh_shape: tuple[int, ...]
    stages: int = 1

    @property
    def label(self) -> str:
        mesh = "x".join(map(str, self.mesh_shape))
        return mesh if self.stages == 1 else f"{mesh} in {self.stages} stages"


def check_counts(cluster: Cluster, devices: Iterable[int]) -> tuple[int, ...]:
    """The distinct counts, ascending; AdviseError for one the cluster cannot hold."""
    out = set()
    for n in devices:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise AdviseError(NOT_A_COUNT.format(value=n))
        n, per_node = int(n), cluster.devices_per_node
        if cluster.capacity is not None and n > cluster.capacity:
            raise AdviseError(OVER_CAPACITY.format(
                count=n, name=cluster.name, nodes=cluster.num_nodes, per_node=per_node, capacity=cluster.capacity,
                bigger="a preset such as h100-8x8-ib, or num_nodes in your profile"))
        if n > per_node and n % per_node:
            lower = n // per_node * per_node
            raise AdviseError(PARTIAL_NODE.format(count=n, nodes=n / per_node, per_node=per_node, name=cluster.name,
                                                  lower=lower, upper=lower + per_node))
        out.add(n)
    if not out:
        raise AdviseError(NO_COUNTS.format(name=cluster.name, capacity=cluster.capacity))
    return tuple(sorted(out))


def default_counts(cluster: Cluster, max_devices: int | None = None) -> tuple[int, ...]:
    """The divisors of a node's device count, then whole nodes doubling: 1, 2, 4, 8, 16,
    32, 64 on nodes of 8, up to ``max_devices`` (default: what the cluster holds)."""
    per_node = cluster.devices_per_node
    top = max_devices if max_devices is not None else (cluster.capacity or per_node)
    counts = [d for d in range(1, per_node + 1) if per_node % d == 0 and _chain(d, per_node)]
    n = per_node * 2
    while n <= top:
        counts.append(n)
        n *= 2
    return check_counts(cluster, [c for c in counts if c <= top] or [1])


def _chain(d: int, per_node: int) -> bool:
    """Sizes that nest (each divides the next), so jobs of these sizes pack a node exactly:
    powers of two and the node itself."""
    return d == per_node or d & (d - 1) == 0


def mesh_shapes(n: int, cluster: Cluster) -> list[tuple[int, int]]:
    """The distinct 2-D meshes of ``n`` devices that line up with the nodes: ``(n, 1)``
    first, then ``(data, model)`` by growing ``model``."""
    per_node = cluster.devices_per_node
    shapes = [(n, 1)]
    for model in range(2, n):
        if n % model:
            continue
        data = n // model
        aligned = per_node % model == 0 or model % per_node == 0
        if not aligned or (n <= per_node and data < model):
            continue
        shapes.append((data, model))
    return shapes


def configs_for(counts: Sequence[int], cluster: Cluster) -> list[Config]:
    return [Config(n, shape) for n in counts for shape in mesh_shapes(n, cluster)]
