"""What a fused reduction reads (shardsearch/costs/fusion.py): a value several ops read is
written once, so a chain of adds (a residual stream) is not fused into every reduction."""

import jax
import jax.numpy as jnp
import numpy as np

from cost_model import Cluster, MeshShape
from shardsearch.costs import build
from shardsearch.graph import NodeKind
from shardsearch.strategies.per_node import graph_strategies
from shardsearch.trace import trace


def residual_step(x, ws):
    for w in ws:  # pre-norm: the stream is read by a reduction, the norm and the next add, never a matmul
        centered = x - jnp.mean(x, axis=-1, keepdims=True)
        x = x + (centered * 0.5) @ w
    return jnp.sum(jnp.mean(x, axis=-1))


def last_reduction_s(layers: int) -> float:
    args = (jax.ShapeDtypeStruct((4096, 1024), jnp.float32), [jax.ShapeDtypeStruct((1024, 1024), jnp.float32)] * layers)
    graph = trace(residual_step, args)
    mesh = MeshShape(("data",), (2,))
    costs = build.node_costs(graph, graph_strategies(graph, mesh).per_node, Cluster.load("h100-8"), mesh, 1.0)
    means = [n.id for n in graph.nodes if n.kind is NodeKind.OP and n.primitive == "reduce_sum"]
    return float(np.min(costs.compute[means[layers - 1]]))  # the last layer's mean


def test_a_reduction_reads_the_residual_stream_not_every_layer_before_it():
    two, eight = last_reduction_s(2), last_reduction_s(8)
    assert abs(eight / two - 1) < 0.01  # was 4x: every earlier layer's matmul output
    # it reads what its own layer's add reads: the stream and the matmul output, 16 MB each per device
    assert two <= 1.5 * 2 * 2048 * 1024 * 4 / Cluster.load("h100-8").hbm_bandwidth


def conv_input_grad(x, k):
    """The gradient of a convolution by its input: a convolution with the flipped kernel."""
    conv = lambda x: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x))))(x)


def test_a_kernel_flip_is_folded_into_the_gpu_convolution():
    args = (jax.ShapeDtypeStruct((8, 16, 16, 64), jnp.float32), jax.ShapeDtypeStruct((3, 3, 64, 64), jnp.float32))
    graph = trace(conv_input_grad, args)
    mesh = MeshShape(("data",), (2,))
    (rev,) = [n.id for n in graph.nodes if n.primitive == "rev"]
    per_node = graph_strategies(graph, mesh).per_node
    gpu = build.node_costs(graph, per_node, Cluster.load("h100-8"), mesh, 1.0).compute[rev]
    other = build.node_costs(graph, per_node, Cluster.load("tpu-v5e-256"), mesh, 1.0).compute[rev]
    assert not gpu.any() and other.all()  # cuDNN's backward-input call reads the kernel unflipped
