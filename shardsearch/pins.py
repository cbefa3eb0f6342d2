"""Pins: argument layouts the user fixes; the search chooses everything else around them.

    ss.auto(step, mesh=mesh, pins={"[0]['embed']['wte']": P("model", None),  # one leaf
                                   r"\\[2\\]\\['tokens'\\]": P("data")})          # a regex

A pin's key names argument leaves by path: exactly the ``jax.tree_util.keystr`` of the
leaf in the argument tuple (``[0]['embed']['wte']``, or the plan's own form
``args[0]['embed']['wte']``), or else a regex that fully matches that keystr. The first
pin that names a leaf decides its layout. A PartitionSpec shorter than the leaf's rank
leaves the trailing dims replicated, as in jax.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from jax.sharding import PartitionSpec

from cost_model import MeshShape, Spec
from cost_model.mesh import spec_str
from shardsearch.errors import PinError
from shardsearch.graph import OpGraph
from shardsearch.strategies import Strategy

Pins = tuple[tuple[str, PartitionSpec], ...]

BAD_PINS = (
    "pins={pins!r} is not a dict {{path: PartitionSpec}} or a list of (path, PartitionSpec) pairs; "
    "write it like pins={{\"[0]['embed']['wte']\": PartitionSpec('model', None)}}"
)
BAD_PIN = (
    "pin {key!r}: {value!r} is not a jax.sharding.PartitionSpec (and the key must be a string); "
    "write it like {{\"[0]['embed']['wte']\": PartitionSpec('model', None)}}"
)
PIN_MATCHES_NOTHING = (
    "pin {key!r} names no argument leaf{why}. Leaf paths look like {examples}; "
    "use one of them exactly, or a regex that fully matches some of them"
)
PIN_UNKNOWN_AXIS = (
    "pin {key!r} on {path}: {spec} names mesh axis {axis!r}, but the mesh has axes {axes}; "
    "use one of those axis names"
)
PIN_AXIS_TWICE = "pin {key!r} on {path}: {spec} uses mesh axis {axis!r} twice; each axis may split one dim only"
PIN_RANK = (
    "pin {key!r} on {path}: {spec} has {n} entries but the leaf has rank {rank} (shape {shape}); "
    "give at most {rank} entries (missing trailing ones stay replicated)"
)
PIN_NOT_DIVISIBLE = (
    "pin {key!r} on {path}: dim {dim} of shape {shape} has size {size}, which mesh axes {axes} "
    "(together {group} devices) do not divide; pin a dim they divide, or fewer/smaller axes"
)
PIN_ENTRY = (
    "pin {key!r} on {path}: entry {entry!r} of {spec} is not a mesh-axis name, a tuple of "
    "them, or None; write PartitionSpec('data', None) or PartitionSpec(('data', 'model'))"
)


def normalize_pins(pins: Any) -> Pins:
    """``pins`` as an ordered, hashable tuple of (key, PartitionSpec); () for None."""
    if pins is None:
        return ()
    if isinstance(pins, Mapping):
        items = list(pins.items())
    elif isinstance(pins, Iterable) and not isinstance(pins, (str, bytes, PartitionSpec)):
        items = list(pins)
        if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in items):
            raise PinError(BAD_PINS.format(pins=pins))
    else:
        raise PinError(BAD_PINS.format(pins=pins))
    for key, value in items:
        if not isinstance(key, str) or not isinstance(value, PartitionSpec):
            raise PinError(BAD_PIN.format(key=key, value=value))
    return tuple((key, value) for key, value in items)


def _matching(key: str, in_paths: tuple[str, ...]) -> tuple[list[int], str]:
    """Indices of the leaves ``key`` names, and why none did (for the message)."""
    leaves = [p[len("args"):] if p.startswith("args") else p for p in in_paths]
    exact = [i for i, (p, leaf) in enumerate(zip(in_paths, leaves)) if key in (p, leaf)]
    if exact:
        return exact, ""
    try:
        pattern = re.compile(key)
    except re.error as err:
        return [], f" (it is no exact path, and not a valid regex either: {err})"
    return [i for i, leaf in enumerate(leaves) if pattern.fullmatch(leaf)], ""


def _spec(key: str, path: str, pspec: PartitionSpec, shape: tuple[int, ...], mesh: MeshShape) -> Spec:
    entries = list(pspec)
    if len(entries) > len(shape):
        raise PinError(PIN_RANK.format(key=key, path=path, spec=pspec, n=len(entries), rank=len(shape), shape=shape))
    dims: list[tuple[str, ...]] = []
    for entry in entries:
        if entry is None:
            dims.append(())
        elif isinstance(entry, str):
            dims.append((entry,))
        elif isinstance(entry, tuple) and all(isinstance(a, str) for a in entry):
            dims.append(tuple(entry))
        else:  # PartitionSpec.UNCONSTRAINED and anything else: not a layout we can fix
            raise PinError(PIN_ENTRY.format(key=key, path=path, entry=entry, spec=pspec))
    dims += [()] * (len(shape) - len(dims))
    seen: set[str] = set()
    for axis in (a for d in dims for a in d):
        if axis not in mesh.axis_names:
            raise PinError(PIN_UNKNOWN_AXIS.format(key=key, path=path, spec=pspec, axis=axis, axes=list(mesh.axis_names)))
        if axis in seen:
            raise PinError(PIN_AXIS_TWICE.format(key=key, path=path, spec=pspec, axis=axis))
        seen.add(axis)
    for d, (size, axes) in enumerate(zip(shape, dims)):
        group = mesh.group_size(axes)
        if size % group:
            raise PinError(PIN_NOT_DIVISIBLE.format(
                key=key, path=path, dim=d, shape=shape, size=size, axes=list(axes), group=group))
    return tuple(dims)


def resolve_pins(pins: Pins, graph: OpGraph, mesh: MeshShape) -> dict[int, Spec]:
    """Flat argument index -> the layout pinned for it; every pin must name a leaf."""
    out: dict[int, Spec] = {}
    for key, pspec in pins:
        hits, why = _matching(key, graph.in_paths)
        if not hits:
            examples = ", ".join(repr(p[len("args"):]) for p in graph.in_paths[:3]) or "(no array arguments)"
            raise PinError(PIN_MATCHES_NOTHING.format(key=key, why=why, examples=examples))
        for i in hits:
            if i not in out:  # the first pin naming a leaf wins
                out[i] = _spec(key, graph.in_paths[i], pspec, graph.input_info(i).shape, mesh)
    return out


def pin_strategies(per_node: list[list[Strategy]], graph: OpGraph, pinned: dict[int, Spec]) -> list[list[Strategy]]:
    """The candidate strategies with each pinned argument's node left one: its pinned layout."""
    out = list(per_node)  # new lists only: the originals may be shared between nodes
    for i, spec in pinned.items():
        out[graph.input_nodes[i]] = [Strategy(name=spec_str(spec), in_specs=(), out_specs=(spec,))]
    return out
