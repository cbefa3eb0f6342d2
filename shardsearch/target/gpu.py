"""The cluster's GPUs as a deviceless jax topology: compile for them on any machine.

jax's CUDA plugin compiles for a GPU it is only told about: ``get_topology_desc(
platform="cuda", target_config=<GpuTargetConfig text>, topology="S x H x G")`` (slices x
hosts x GPUs per host) gives devices that ``jax.jit(...).lower(...).compile()`` can target,
on a CPU-only machine (``JAX_PLATFORMS=cpu`` is fine). A cluster's nodes are the
topology's hosts, so device ``i`` sits on host ``i // devices_per_node`` as the cost model
places it. The plugin comes with ``pip install "shardsearch[gpu-aot]"`` (jax's
``cuda12-local`` extra: the plugin alone, no CUDA libraries, no driver).
"""

from __future__ import annotations

import functools
import importlib.util

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from cost_model import Cluster, MeshShape, preset_names
from shardsearch.errors import TargetError

NO_PLUGIN = (
    "compiling for cluster {name!r} ({gpu}) without its GPUs needs jax's CUDA plugin, which is not "
    "installed; pip install \"shardsearch[gpu-aot]\" (jax[cuda12-local]: the plugin only, no CUDA "
    "libraries or driver), or compile for the devices at hand with step.lower(*args)"
)
NO_TARGET = (
    "cluster {name!r} has no 'gpu_target' (the GPU model its compiler targets), so there is no "
    "target to compile for; use a GPU preset ({gpus}) or add a 'gpu_target' to the profile "
    "(cost_model/profiles/README.md), or compile for the devices at hand with step.lower(*args)"
)
PARTIAL_NODES = (
    "mesh {shape} has {n} devices, which do not fill whole nodes of cluster {name!r} "
    "({dpn} GPUs per node); plan for a mesh of at most {dpn} devices or a multiple of {dpn}"
)
TOO_MANY_NODES = (
    "mesh {shape} needs {nodes} nodes of {dpn} GPUs but cluster {name!r} has {have}; "
    "use a smaller mesh or a cluster with more nodes"
)
NOT_LOADED = (
    "jax's CUDA plugin is installed but jax did not load it ({error}): on a machine without a GPU "
    "the plugin loads only when jax is told to run on the CPU; set JAX_PLATFORMS=cpu in the "
    "environment (or jax.config.update('jax_platforms', 'cpu') before jax runs anything)"
)
REFUSED = (
    "jax's CUDA plugin refused topology {topology!r} for cluster {name!r} ({gpu}): {error}; "
    "check that jax-cuda12-plugin matches jaxlib {jaxlib} (pip install \"jax[cuda12-local]=={jaxlib}\")"
)


def gpu_presets() -> list[str]:
    """Presets that carry a GPU target description."""
    return [n for n in preset_names() if Cluster.load(n).gpu_target is not None]


def plugin_installed() -> bool:
    # find_spec of a submodule raises when its parent package is absent
    return importlib.util.find_spec("jax_plugins") is not None and \
        importlib.util.find_spec("jax_plugins.xla_cuda12") is not None


def topology_name(cluster: Cluster, num_devices: int, shape: tuple = ()) -> str:
    """``1 x nodes x GPUs per node`` for a mesh of ``num_devices`` (one partial node allowed)."""
    dpn = cluster.devices_per_node
    if num_devices <= dpn:
        return f"1x1x{num_devices}"
    if num_devices % dpn:
        raise TargetError(PARTIAL_NODES.format(shape=shape or num_devices, n=num_devices, name=cluster.name, dpn=dpn))
    nodes = num_devices // dpn
    if cluster.num_nodes is not None and nodes > cluster.num_nodes:
        raise TargetError(TOO_MANY_NODES.format(shape=shape or num_devices, nodes=nodes, dpn=dpn,
                                                name=cluster.name, have=cluster.num_nodes))
    return f"1x{nodes}x{dpn}"


def _check(cluster: Cluster) -> None:
    if cluster.gpu_target is None:
        raise TargetError(NO_TARGET.format(name=cluster.name, gpus=", ".join(gpu_presets())))
    if not plugin_installed():
        raise TargetError(NO_PLUGIN.format(name=cluster.name, gpu=cluster.gpu_target.name))


@functools.lru_cache(maxsize=16)
def _topology(config: str, topology: str):
    from jax.experimental import topologies

    return topologies.get_topology_desc(platform="cuda", target_config=config, topology=topology)


def target_devices(cluster: Cluster, num_devices: int, shape: tuple = ()) -> list:
    """The devices of a deviceless topology of ``cluster``'s GPUs, device ``i`` on node
    ``i // devices_per_node``."""
    _check(cluster)
    topology = topology_name(cluster, num_devices, shape)
    try:
        devices = _topology(cluster.gpu_target.to_textproto(), topology).devices
    except Exception as e:  # the plugin's own errors are XlaRuntimeError/RuntimeError/ValueError
        if "not implemented" in str(e):
            raise TargetError(NOT_LOADED.format(error=e)) from e
        raise TargetError(REFUSED.format(topology=topology, name=cluster.name, gpu=cluster.gpu_target.name,
                                         error=e, jaxlib=jax.__version__)) from e
    return sorted(devices, key=lambda d: d.id)


def target_mesh(cluster: Cluster | str, mesh) -> Mesh:
    """A Mesh of ``mesh``'s axis names and sizes (a MeshShape, a Mesh, or a shape tuple such
    as ``(2, 8)``) over the cluster's GPUs, in row-major device order (the order the cost
    model prices), every axis Auto. ``shardsearch.auto(fn, mesh=target_mesh(...))`` plans
    and compiles for those GPUs; such a step lowers and compiles but cannot run here."""
    from shardsearch.apply.mesh import mesh_shape

    cluster, mesh = Cluster.load(cluster), mesh_shape(mesh)
    n = mesh.size
    devices = target_devices(cluster, n, tuple(mesh.axis_sizes))
    grid = np.array(devices, dtype=object).reshape(tuple(mesh.axis_sizes))
    return Mesh(grid, tuple(mesh.axis_names), axis_types=(AxisType.Auto,) * len(mesh.axis_names))
