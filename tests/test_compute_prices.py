"""The planner prices compute per dtype and with the cluster's matmul efficiency curve.

``cost_model.compute_time`` knows both (tests/test_topology.py); these tests check that
the planner's node costs use them: the dtype an operator computes in, ``matmul=True``
for dots and convolutions, and that this moves predictions and plans as it should.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import shardsearch as ss
from cost_model import Cluster, MeshShape
from cost_model.compute import compute_time
from shardsearch.graph import NodeKind
from shardsearch.costs.build import compute_dtype, node_costs
from shardsearch.strategies.per_node import graph_strategies
from shardsearch.trace import trace

MESH = MeshShape(("data", "model"), (2, 4))
H100 = Cluster.load("h100-8")


def sds(shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(shape, dtype)


def traced(fn, *args):
    graph = trace(fn, args)
    strategies = graph_strategies(graph, MESH).per_node
    return graph, strategies


def only(graph, primitive):
    (node,) = [n for n in graph.nodes if n.kind is NodeKind.OP and n.primitive == primitive]
    return node


# ---- the dtype an operator computes in ---------------------------------------------------------

def test_compute_dtype_is_the_operands_not_the_accumulator():
    def f(x, w):  # bf16 tensor-core dot that accumulates in f32
        return jnp.dot(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), preferred_element_type=jnp.float32)

    graph, _ = traced(f, sds((64, 64)), sds((64, 64)))
    dot = only(graph, "dot_general")
    assert dot.outputs[0].dtype == np.float32
    assert compute_dtype(graph, dot) == "bfloat16"


def test_compute_dtype_of_a_mixed_dot_is_the_wider_operand():
    graph, _ = traced(lambda x, w: x @ w, sds((64, 64), jnp.bfloat16), sds((64, 64)))
    assert compute_dtype(graph, only(graph, "dot_general")) == "float32"  # XLA converts to f32


def test_compute_dtype_ignores_integer_indices():
    graph, _ = traced(lambda x, i: x[i], sds((64, 8), jnp.bfloat16), sds((16,), jnp.int32))
    (gather,) = [n for n in graph.nodes if n.kind is NodeKind.OP and n.primitive == "gather"]
    assert compute_dtype(graph, gather) == "bfloat16"


# ---- per-dtype peak ---------------------------------------------------------------------------

def _matmul_step(dtype):
    def step(x, w):  # forward and both gradients: three big matmuls
        def loss(w):
            return jnp.sum((x @ w).astype(jnp.float32) ** 2)
        return w - 1e-3 * jax.grad(loss)(w).astype(w.dtype)
    n = 16384
    return step, (sds((n, n), dtype), sds((n, n), dtype))


def test_bf16_step_is_predicted_faster_by_the_peak_ratio():
    """Big square matmuls on h100-8 are compute bound at the curve's plateau: bf16 runs
    at 989 TFLOP/s, f32 (TF32) at 494.7, so the bf16 step's compute is about half."""
    mesh = (2, 4)
    f32_step, f32_args = _matmul_step(jnp.float32)
    bf16_step, bf16_args = _matmul_step(jnp.bfloat16)
    f32 = ss.plan(f32_step, *f32_args, mesh=mesh, cluster="h100-8").predicted
    bf16 = ss.plan(bf16_step, *bf16_args, mesh=mesh, cluster="h100-8").predicted
    peaks = dict(H100.peak_flops_by_dtype)
    ratio = peaks["bfloat16"] / peaks["float32"]
    assert f32.compute_s / bf16.compute_s == pytest.approx(ratio, rel=0.1)
    assert f32.total_s / bf16.total_s > 0.9 * ratio


def test_node_cost_of_a_dot_uses_its_dtype_peak():
    f32_graph, f32_strats = traced(lambda x, w: x @ w, sds((4096, 4096)), sds((4096, 4096)))
    bf_graph, bf_strats = traced(lambda x, w: x @ w, sds((4096, 4096), jnp.bfloat16), sds((4096, 4096), jnp.bfloat16))
    f32_costs = node_costs(f32_graph, f32_strats, H100, MESH, 1.0)
    bf_costs = node_costs(bf_graph, bf_strats, H100, MESH, 1.0)
    i, j = only(f32_graph, "dot_general").id, only(bf_graph, "dot_general").id
    replicated = [k for k, s in enumerate(f32_strats[i]) if s.flops == max(t.flops for t in f32_strats[i])][0]
    # 1.4e11 FLOPs: the same efficiency for both, only the peak differs
    assert f32_costs.compute[i][replicated] / bf_costs.compute[j][replicated] == pytest.approx(989 / 494.7, rel=1e-6)


# ---- matmul efficiency ------------------------------------------------------------------------

def test_splitting_a_small_matmul_eight_ways_gains_less_than_eight():
    # 2 * 512 * 1024 * 1024 = 1.07e9 FLOPs: 24% of peak on the curve, an eighth at 4%
    graph, strategies = traced(lambda x, w: x @ w, sds((512, 1024), jnp.bfloat16), sds((1024, 1024), jnp.bfloat16))
    dot = only(graph, "dot_general")
    costs = node_costs(graph, strategies, H100, MESH, 1.0).compute[dot.id]
    flops = np.array([s.flops for s in strategies[dot.id]])
    whole = costs[flops == flops.max()].min()
    eighth = costs[flops == flops.max() / 8].min()
    assert 1.0 < whole / eighth < 2.0  # the FLOPs alone would say 8
    # a big matmul keeps nearly all of it
    graph, strategies = traced(lambda x, w: x @ w, sds((8192, 8192), jnp.bfloat16), sds((8192, 8192), jnp.bfloat16))
    dot = only(graph, "dot_general")
    costs = node_costs(graph, strategies, H100, MESH, 1.0).compute[dot.id]
    flops = np.array([s.flops for s in strategies[dot.id]])
    assert costs[flops == flops.max()].min() / costs[flops == flops.max() / 8].min() > 6.5


def test_convolution_is_priced_as_a_matmul():
    def conv(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    graph, strategies = traced(conv, sds((8, 32, 32, 64), jnp.bfloat16), sds((3, 3, 64, 64), jnp.bfloat16))
    node = only(graph, "conv_general_dilated")
    costs = node_costs(graph, strategies, H100, MESH, 1.0).compute[node.id]
    s = max(strategies[node.id], key=lambda t: t.flops)
    at_peak = s.flops / H100.peak_flops_for("bfloat16")
    t = costs[strategies[node.id].index(s)]
    assert t == pytest.approx(at_peak / H100.matmul_efficiency_at(s.flops)) and t > 2 * at_peak


# A cluster whose matmul units a matmul of up to 2^30 FLOPs does not fill (too few tiles
# for its cores): such a matmul takes as long as one of 2^30. Splitting one of 2^30 FLOPs
# 8 ways saves 0.94 ms at peak and nothing on the curve; the scalar all-reduce a split
# needs costs its 0.1 ms latency either way.
SLOW_LINKS = {
    "name": "slow-links", "devices_per_node": 8, "peak_flops": 1e12, "memory_bytes": 1e10,
    "hbm_bandwidth": 1e14, "intra_node": {"bandwidth": 1e11, "latency": 1e-4},
    "inter_node": {"bandwidth": 1e11, "latency": 1e-4},
}
CURVE = {"flops": [2.0**27, 2.0**28, 2.0**29, 2.0**30], "efficiency": [0.125, 0.25, 0.5, 1.0]}


def test_the_curve_makes_a_small_matmul_not_worth_splitting():
    def f(x, w):
        return jnp.sum(jnp.tanh(x @ w))

    args = (sds((512, 1024)), sds((1024, 1024)))  # 2 * 512 * 1024 * 1024 = 2^30 FLOPs
    flat = ss.plan(f, *args, mesh=(2, 4), cluster=Cluster.from_dict(SLOW_LINKS))
    curved = ss.plan(f, *args, mesh=(2, 4), cluster=Cluster.from_dict({**SLOW_LINKS, "matmul_efficiency": CURVE}))
    assert any(any(d) for d in flat.flat_in_specs), flat.flat_in_specs  # at peak: split and all-reduce
    assert not any(any(d) for d in curved.flat_in_specs), curved.flat_in_specs  # on the curve: keep it whole
    assert curved.predicted.comm_s == 0.0 and flat.predicted.comm_s > 0.0


def test_a_matmul_below_the_curves_smallest_size_takes_as_long_as_that_one():
    smallest = H100.matmul_efficiency[0][0]
    at = compute_time(H100, smallest, 0.0, "bfloat16", matmul=True)
    assert at > 0
    for flops in (smallest / 8, smallest / 1000):  # an 8-way split of the smallest, and tinier
        assert compute_time(H100, flops, 0.0, "bfloat16", matmul=True) == pytest.approx(at)
    assert compute_time(H100, 0.0, 0.0, "bfloat16", matmul=True) == 0.0
