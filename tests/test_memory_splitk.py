"""Split-K partial products of GPU-target gemms in the memory model (shardsearch/memory/splitk.py)."""

import jax
import jax.numpy as jnp
import pytest

from cost_model import Cluster, MeshShape
from shardsearch.memory import memory_breakdown
from shardsearch.memory.splitk import SplitK, splitting_gemms
from shardsearch.trace import trace

H100 = SplitK.for_target(Cluster.load("h100-8").gpu_target)
A100 = SplitK.for_target(Cluster.load("2x4-slow").gpu_target)


@pytest.mark.parametrize("rule, bmkn, split", [
    # what XLA's deviceless GPU compiles wrote (jax 0.10.2: f32[split, m, n] partial products)
    (H100, (1, 128, 512, 128), 16), (H100, (1, 128, 128, 512), 4), (H100, (1, 128, 2048, 128), 32),
    (H100, (1, 512, 512, 512), 4), (H100, (1, 512, 128, 512), 1), (H100, (8, 128, 64, 128), 1),
    (H100, (1, 1024, 4096, 256), 8), (H100, (1, 2048, 2048, 2048), 1), (H100, (1, 64, 256, 64), 8),
    (H100, (1, 128, 32, 128), 1), (H100, (1, 128, 128, 32), 8), (H100, (1, 32, 64, 64), 1), (H100, (1, 128, 64, 128), 4),
    (H100, (1, 16, 512, 128), 16), (H100, (1, 64, 64, 128), 4), (H100, (1, 64, 128, 32), 1),
    (A100, (1, 128, 512, 128), 8), (A100, (1, 512, 1024, 512), 2), (A100, (1, 128, 128, 512), 1),
    (A100, (1, 64, 1024, 64), 8), (A100, (1, 1024, 4096, 256), 4),
])
def test_split_of_a_gemm_follows_the_compiled_programs(rule, bmkn, split):
    b, m, k, n = bmkn
    assert rule.split(b, m, n, k) == split
    assert SplitK.for_target(None) is None  # no GPU target (the CPU): nothing is split


def test_partials_replace_the_result_when_loop_kernels_sum_them():
    def f(x, w, v):
        h = x @ w  # [128 x 512] @ [512 x 128]: 16 f32 partial products of 64 KiB on H100
        g = jnp.tanh(h) * h  # a loop kernel with an expensive op reads h: the sum is fused into it
        return (jnp.tanh(g) @ v).sum() + (g @ v).sum() + (h * h).sum()

    args = (jax.ShapeDtypeStruct((128, 512), jnp.float32), jax.ShapeDtypeStruct((512, 128), jnp.float32),
            jax.ShapeDtypeStruct((128, 8), jnp.float32))
    g = trace(f, args)
    mesh = MeshShape(("x",), (1,))
    specs = [((), ())] * 3
    cpu = memory_breakdown(g, specs, {}, mesh)
    with splitting_gemms(H100):
        gpu = memory_breakdown(g, specs, {}, mesh)
    result = 128 * 128 * 4
    # the dot's buffer holds its 16 partial products instead of the summed result
    assert gpu.temp_bytes - cpu.temp_bytes == 15 * result
