"""Enumerating layouts of a tensor on a mesh, and small helpers the rules share."""

from __future__ import annotations

import functools
import itertools
import math
from typing import Sequence

from cost_model.mesh import MeshShape, Spec, local_bytes, local_shape

from shardsearch.strategies.base import OpView


def split_axes(mesh: MeshShape) -> tuple[str, ...]:
    """Mesh axes worth splitting on: a size-1 axis only duplicates strategies."""
    return tuple(a for a, n in zip(mesh.axis_names, mesh.axis_sizes) if n > 1)


def divides(size: int, axes: Sequence[str], mesh: MeshShape) -> bool:
    """Whether ``axes`` together split a dim of ``size`` evenly (never split empty dims)."""
    return not axes or (size > 0 and size % mesh.group_size(axes) == 0)


@functools.lru_cache(maxsize=8192)
def _specs(sizes: tuple[int, ...], mesh: MeshShape) -> tuple[Spec, ...]:
    axes = split_axes(mesh)
    out = []
    # choice[i] = dim that axis i splits, or -1; (-1, ..., -1) comes first: replicated.
    for choice in itertools.product(range(-1, len(sizes)), repeat=len(axes)):
        groups = [[] for _ in sizes]
        for a, d in zip(axes, choice):
            if d >= 0:
                groups[d].append(a)
        if not all(divides(n, g, mesh) for n, g in zip(sizes, groups)):
            continue
        # Two axes on one dim: both orders are distinct layouts.
        out.extend(itertools.product(*(itertools.permutations(g) for g in groups)))
    return tuple(out)


def enumerate_specs(shape: Sequence[int], mesh: MeshShape) -> list[Spec]:
    """Every layout of a tensor of ``shape`` (replicated first, deterministic order).

    Each mesh axis of size > 1 is used at most once, on a dim divisible by the product
    of the axes placed on it. Also used on the logical dims of an einsum.
    """
    return list(_specs(tuple(int(n) for n in shape), mesh))


def fits(shape: Sequence[int], spec: Spec, mesh: MeshShape) -> bool:
    return len(spec) == len(shape) and all(divides(n, d, mesh) for n, d in zip(shape, spec))


def local_elements(shape: Sequence[int], spec: Spec, mesh: MeshShape) -> float:
    return float(math.prod(local_shape(shape, spec, mesh)))


@functools.lru_cache(maxsize=65536)
def spec_bytes(shape: tuple[int, ...], itemsize: int, spec: Spec, mesh: MeshShape) -> float:
    """``local_bytes``, memoized: the same (shape, spec) pairs recur across strategies."""
    return local_bytes(shape, itemsize, spec, mesh)


def io_bytes(op: OpView, in_specs: Sequence[Spec], out_specs: Sequence[Spec], mesh: MeshShape) -> float:
    """Local bytes of all operands and outputs under the given specs."""
    total = 0.0
    for shapes, dtypes, specs in ((op.in_shapes, op.in_dtypes, in_specs), (op.out_shapes, op.out_dtypes, out_specs)):
        for shape, dtype, spec in zip(shapes, dtypes, specs):
            total += spec_bytes(tuple(shape), dtype.itemsize, spec, mesh)
    return total


def spec_name(spec: Spec) -> str:
    """``S(data)xR``; a dim over two axes is ``S(data,model)``; a scalar is ``()``."""
    if not spec:
        return "()"
    return "x".join("S(" + ",".join(d) + ")" if d else "R" for d in spec)
