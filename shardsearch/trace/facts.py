"""Facts about an equation that a strategy rule needs but cannot look up (rules never
import jax): added to the node's params as plain data, never to the equation re-run.

- ``random_bits``: whether jax draws the bits partitionably (strategies/prng.py).
- ``sharding_constraint`` / ``reshard`` / ``device_put``: the layout the user asked for,
  per operand a spec (per dim a tuple of mesh axes, None where unconstrained) or None
  where the op does not constrain it, and the mesh it names (strategies/passthrough.py).
- ``shard_map``: its declared in_specs / out_specs and mesh.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

PARTITIONABLE_BITS = "shardsearch_partitionable_bits"
SPECS, IN_SPECS, OUT_SPECS, MESH = "shardsearch_specs", "shardsearch_in_specs", "shardsearch_out_specs", "shardsearch_mesh"


def _mesh_axes(mesh) -> tuple[tuple[str, int], ...]:
    return tuple((str(name), int(size)) for name, size in mesh.shape.items())


def _dims(spec: PartitionSpec, rank: int, unconstrained=frozenset()):
    """A PartitionSpec as plain data: per dim a tuple of axis names, None where unconstrained."""
    out = []
    for d in range(rank):
        entry = spec[d] if d < len(spec) else None
        if d in unconstrained or entry is PartitionSpec.UNCONSTRAINED:
            out.append(None)
        elif entry is None:
            out.append(())
        else:
            out.append((entry,) if isinstance(entry, str) else tuple(entry))
    return tuple(out)


def _named(sharding, rank: int, unconstrained=frozenset(), mesh=None):
    """(spec, mesh axes) of a sharding the user wrote, or None if it is not a named layout."""
    if isinstance(sharding, NamedSharding):
        return _dims(sharding.spec, rank, unconstrained), _mesh_axes(sharding.mesh)
    if isinstance(sharding, PartitionSpec) and mesh is not None and getattr(mesh, "shape", None):
        return _dims(sharding, rank, unconstrained), _mesh_axes(mesh)
    return None


def _fixed_layouts(eqn, shardings, **kw) -> dict[str, Any]:
    """Per-operand user layouts; the op's mesh is the one they all name."""
    specs, meshes = [], set()
    for sharding, var in zip(shardings, eqn.invars):
        named = None if sharding is None else _named(sharding, len(var.aval.shape), **kw)
        if sharding is not None and named is None:
            specs.append(((),) * len(var.aval.shape))  # a device or unknown sharding: whole
            continue
        specs.append(None if named is None else named[0])
        if named is not None:
            meshes.add(named[1])
    if len(meshes) > 1:
        return {SPECS: tuple(((),) * len(v.aval.shape) for v in eqn.invars)}
    return {SPECS: tuple(specs), MESH: meshes.pop() if meshes else None}


def _shard_map(eqn) -> dict[str, Any]:
    p = eqn.params
    ranks_in = [len(v.aval.shape) for v in eqn.invars]
    ranks_out = [len(v.aval.shape) for v in eqn.outvars]
    ins = tuple(_dims(s, r) for s, r in zip(p["in_specs"], ranks_in))
    outs = tuple(_dims(s, r) for s, r in zip(p["out_specs"], ranks_out))
    if any(d is None for spec in ins + outs for d in spec):
        return {}
    return {IN_SPECS: ins, OUT_SPECS: outs, MESH: _mesh_axes(p["mesh"])}


def facts(eqn) -> dict[str, Any]:
    name, p = eqn.primitive.name, eqn.params
    try:
        if name == "random_bits":
            # Partitionable threefry draws each element from the key and the element's own
            # index (an iota), so any block of the bits can be drawn on its own device.
            impl = getattr(getattr(eqn.invars[0].aval.dtype, "_impl", None), "name", None)
            return {PARTITIONABLE_BITS: bool(jax.config.jax_threefry_partitionable) and impl == "threefry2x32"}
        if name == "sharding_constraint":
            return _fixed_layouts(eqn, (p["sharding"],), unconstrained=frozenset(p.get("unconstrained_dims", ())),
                                  mesh=p.get("context_mesh"))
        if name == "reshard":
            return _fixed_layouts(eqn, (p["dst_sharding"],))
        if name == "device_put":
            return _fixed_layouts(eqn, p["devices"])
        if name == "shard_map":
            return _shard_map(eqn)
    except (AttributeError, KeyError, TypeError):  # params of another jax version: no facts
        return {}
    return {}
