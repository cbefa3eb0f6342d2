"""Dots XLA's GPU compiler runs as a multiply and a reduction, not as a matmul kernel.

XLA's algebraic simplifier drops the size-1 dims of a dot's operands, turns a dot left
with nothing to contract into a multiply, and on GPUs strength-reduces a dot whose
operand is a vector (only batch and contracting dims left) into multiply + reduce when
it is small ((M + N) * K under 10M elements: ``ShouldStrengthReduceDotToReduce`` and
``IsMatrixMultiplicationTooSmallForRewriting`` in xla/service/gpu). What is left fuses
with its neighbours like any elementwise op: no gemm, no launch and tile set-up floor of
the cluster's matmul efficiency curve. Per device, so it depends on the layout: a batch
of 8 split over 8 devices leaves each device's classifier head (batch, width) x (classes,
width) a vector times a matrix (tests/models equinox on h100-8: three such dots, 18 us of
a 251 us step priced as gemms that data parallel's GPU program does not run).
"""

from __future__ import annotations

import math
from typing import Sequence

from cost_model.mesh import MeshShape, Spec, local_shape

# IsMatrixMultiplicationTooSmallForRewriting's threshold in GpuAlgebraicSimplifier
# ((lhs non-contracting + rhs non-contracting) * contracting elements).
SMALL_ELEMENTS = 10_000_000


def strength_reduced(dimension_numbers, shapes: Sequence[Sequence[int]], in_specs: Sequence[Spec],
                     mesh: MeshShape) -> bool:
    """Whether a dot_general (``dimension_numbers`` as its param) of these operand
    ``shapes``, run with operands laid out as ``in_specs``, is no matmul kernel in XLA's
    GPU program (see the module doc)."""
    if len(shapes) != 2 or len(in_specs) != 2:
        return False
    (lc, rc), (lb, rb) = dimension_numbers
    lhs, rhs = (local_shape(s, spec, mesh) for s, spec in zip(shapes, in_specs))
    contracting = [lhs[d] for d in lc]
    if all(n == 1 for n in contracting):
        return True  # an outer product: a multiply of broadcasts
    free_l = [lhs[d] for d in range(len(lhs)) if d not in lc and d not in lb]
    free_r = [rhs[d] for d in range(len(rhs)) if d not in rc and d not in rb]
    m, n = math.prod(free_l), math.prod(free_r)
    if m > 1 and n > 1:
        return False  # a matrix times a matrix: a gemm however small
    return m == n == 1 or (m + n) * math.prod(contracting) < SMALL_ELEMENTS
