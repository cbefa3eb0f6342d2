"""Cost model of shardsearch: hardware description, collective, compute and resharding costs.

A leaf package: numpy only, never imports ``shardsearch``; only ``profile`` (which
measures the devices at hand) imports jax, and only when it is called.
"""

from .cluster import Cluster as Cluster
from .cluster import Link as Link
from .cluster import preset_names as preset_names
from .collectives import Collective as Collective
from .collectives import CollectiveKind as CollectiveKind
from .collectives import collective_cost as collective_cost
from .collectives import collective_time as collective_time
from .collectives import group_collective_time as group_collective_time
from .compute import compute_time as compute_time
from .errors import ClusterError as ClusterError
from .errors import ProfileError as ProfileError
from .errors import ShardsearchError as ShardsearchError
from .mesh import MeshShape as MeshShape
from .mesh import Spec as Spec
from .profile import profile as profile  # binds the function over the submodule's name
from .reshard import reshard_collectives as reshard_collectives
from .reshard import reshard_cost as reshard_cost
from .reshard import reshard_matrix as reshard_matrix

__all__ = [
    "Cluster", "Link", "MeshShape", "Spec", "Collective", "CollectiveKind",
    "collective_time", "group_collective_time", "collective_cost", "compute_time",
    "reshard_cost", "reshard_collectives", "reshard_matrix",
    "preset_names", "profile", "ClusterError", "ProfileError", "ShardsearchError",
]
