"""Plan -> annotated executable."""

from shardsearch.apply.executable import build_jitted, place_args
from shardsearch.apply.mesh import as_auto_mesh, mesh_shape

__all__ = ["as_auto_mesh", "build_jitted", "mesh_shape", "place_args"]
