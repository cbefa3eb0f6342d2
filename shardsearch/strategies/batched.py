"""Linear algebra and FFTs: a batch of independent problems over the leading dims.

Each of these works on the trailing dims of its operands (a matrix, a vector of pivots,
the transformed axes) and maps the leading batch dims one to one: every operand and
output shares the batch dims, which may split as one layout; the trailing dims of each
tensor stay whole (a factorization or transform needs all of its matrix or signal).
"""

from __future__ import annotations

from cost_model.mesh import MeshShape

from shardsearch.strategies.base import OpView, Strategy, register
from shardsearch.strategies.specs import enumerate_specs, io_bytes, local_elements, spec_name

# Trailing (per-problem) dims of the first operand; the dims before them are the batch.
CORE_RANK = {
    "cholesky": 2, "cholesky_update": 2, "eig": 2, "eigh": 2, "geqp3": 2, "geqrf": 2, "hessenberg": 2,
    "householder_product": 2, "lu": 2, "ormqr": 2, "qr": 2, "schur": 2, "svd": 2, "symmetric_product": 2,
    "triangular_solve": 2, "tridiagonal": 2, "tridiagonal_solve": 1, "lu_pivots_to_permutation": 1,
}


def leading_batch(op: OpView, mesh: MeshShape, batch_rank: int, work: float) -> list[Strategy]:
    """One layout of the first ``batch_rank`` dims shared by every array; the rest whole.

    ``work`` is the whole op's work, divided by the devices the batch is split over.
    """
    arrays = [s for s in op.in_shapes + op.out_shapes if s]
    if batch_rank <= 0 or not arrays:
        return []
    batch = tuple(arrays[0][:batch_rank])
    if any(len(s) < batch_rank or tuple(s[:batch_rank]) != batch for s in arrays):
        return []
    result = []
    for spec in enumerate_specs(batch, mesh):
        ins = tuple(spec + ((),) * (len(s) - batch_rank) if s else () for s in op.in_shapes)
        outs = tuple(spec + ((),) * (len(s) - batch_rank) if s else () for s in op.out_shapes)
        share = local_elements(batch, spec, mesh) / max(local_elements(batch, ((),) * batch_rank, mesh), 1.0)
        result.append(Strategy(f"{op.primitive} {spec_name(spec)}", ins, outs, (), work * share,
                               io_bytes(op, ins, outs, mesh)))
    return result


def _cubic_work(op: OpView) -> float:
    """~n^3 per problem for an n x n factorization (flops only rank strategies of one op)."""
    shape = op.in_shapes[0]
    core = shape[-2:] if len(shape) >= 2 else shape[-1:]
    batch = 1
    for n in shape[:len(shape) - len(core)]:
        batch *= n
    n = max(core) if core else 1
    return float(batch * n ** 3)


@register(*sorted(CORE_RANK))
def linalg_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    return leading_batch(op, mesh, len(op.in_shapes[0]) - CORE_RANK[op.primitive], _cubic_work(op))


@register("fft")
def fft_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    """The last len(fft_lengths) dims are transformed; rfft / irfft change the last one's extent."""
    shape = op.in_shapes[0]
    batch_rank = len(shape) - len(op.params["fft_lengths"])
    n = 1
    for m in shape:
        n *= m
    return leading_batch(op, mesh, batch_rank, 5.0 * n * max(1, len(op.params["fft_lengths"])))
