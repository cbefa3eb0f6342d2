"""A dot that is a vector on each device is priced as XLA's GPU compiler runs it: a
multiply and a reduction, no matmul kernel (shardsearch/costs/dot_strength.py)."""

import jax
import jax.numpy as jnp

import shardsearch as ss
from cost_model import MeshShape
from shardsearch.costs import build, dot_strength

MESH = MeshShape(("data",), (8,))
ROWS = (((1,), (1,)), ((), ()))  # x (rows, k) . w (n, k) -> (rows, n), as a vmapped Linear
DATA = (("data",), ())


def test_a_vector_on_each_device_is_strength_reduced_and_a_matrix_is_not():
    head = ((8, 32), (8, 32))
    assert dot_strength.strength_reduced(ROWS, head, (DATA, ((), ())), MESH)  # one row per device
    assert not dot_strength.strength_reduced(ROWS, head, (((), ()), ((), ())), MESH)  # 8 x 8: a gemm
    assert not dot_strength.strength_reduced(ROWS, ((64, 32), (8, 32)), (DATA, ((), ())), MESH)  # 8 rows each
    # its weight gradient contracts the batch: one row each is an outer product
    grad = (((0,), (0,)), ((), ()))
    assert dot_strength.strength_reduced(grad, ((8, 8), (8, 32)), (DATA, DATA), MESH)
    # a vector times a big matrix stays a gemm ((M + N) * K over XLA's threshold)
    assert not dot_strength.strength_reduced(ROWS, ((8, 4096), (4096, 4096)), (DATA, ((), ())), MESH)


def classifier_head(w, x):
    return jax.grad(lambda w: jnp.tanh(x @ w.T).sum())(w)


def test_data_parallel_head_pays_no_matmul_floor(monkeypatch):
    args = (jax.ShapeDtypeStruct((8, 32), jnp.float32), jax.ShapeDtypeStruct((8, 32), jnp.float32))
    pins = (("[1]", jax.sharding.PartitionSpec("data")),)
    reduced = ss.plan(classifier_head, *args, mesh=(8,), cluster="h100-8", cache=False, pins=pins)
    monkeypatch.setattr(build, "strength_reduced", lambda *a: False)
    gemms = ss.plan(classifier_head, *args, mesh=(8,), cluster="h100-8", cache=False, pins=pins)
    # two dots at the efficiency curve's floor (6 us for float32 on h100-8) become elementwise
    assert gemms.predicted.compute_s - reduced.predicted.compute_s >= 2 * 5e-6
