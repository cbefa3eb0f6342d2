"""Compile for the cluster's own hardware without it: deviceless GPU topologies."""

from shardsearch.target.compile import lower_for_cluster
from shardsearch.target.gpu import gpu_presets, plugin_installed, target_devices, target_mesh, topology_name

__all__ = ["gpu_presets", "lower_for_cluster", "plugin_installed", "target_devices", "target_mesh", "topology_name"]
