"""Matmuls read from optimized HLO, and the judge pricing each at its dtype's peak and size's
efficiency: hand-written HLO with closed-form counts, then real compiles on a (2, 4) mesh."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from benchmarks.judge import hlo_compute, judge, judge_text, parse_matmuls
from cost_model import Cluster, compute_time
from tests.helpers import abstract_mlp_args, make_train_step

H100 = Cluster.load("h100-8")
# h100-8 without its dtype table and efficiency curve: every FLOP at the bf16 peak
PLAIN = dataclasses.replace(H100, peak_flops_by_dtype=(), matmul_efficiency=())
S = jax.ShapeDtypeStruct


def _mesh():
    return Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)


def _compile(f, *args, shardings=None):
    return jax.jit(f, in_shardings=shardings).lower(*args).compile()


# ---- hand-written HLO ------------------------------------------------------------------

FUSED_BF16 = """HloModule m, num_partitions=8

%fused_dot (param_0: f32[4,16,32], param_1: f32[4,32,48]) -> f32[4,16,48] {
  %param_0 = f32[4,16,32]{2,1,0} parameter(0)
  %param_1 = f32[4,32,48]{2,1,0} parameter(1)
  ROOT %dot.1 = f32[4,16,48]{2,1,0} dot(%param_0, %param_1), lhs_batch_dims={0}, lhs_contracting_dims={2}, rhs_batch_dims={0}, rhs_contracting_dims={1}, metadata={op_name="body=%nothing calls=%x"}
}

%wrapped_convert (param_0.1: bf16[4,16,32]) -> f32[4,16,32] {
  %param_0.1 = bf16[4,16,32]{2,1,0} parameter(0)
  ROOT %convert.3 = f32[4,16,32]{2,1,0} convert(%param_0.1)
}

ENTRY %main (a: bf16[4,16,32], b: f32[4,32,48]) -> f32[4,16,48] {
  %a = bf16[4,16,32]{2,1,0} parameter(0)
  %b = bf16[4,32,48]{2,1,0} parameter(1)
  %up = f32[4,16,32]{2,1,0} fusion(%a), kind=kLoop, calls=%wrapped_convert
  %up.1 = f32[4,32,48]{2,1,0} convert(%b)
  ROOT %mm = f32[4,16,48]{2,1,0} fusion(%up, %up.1), kind=kCustom, calls=%fused_dot
}
"""


def test_batched_dot_in_a_fusion_keeps_its_bf16_operands():
    (m,) = parse_matmuls(FUSED_BF16)
    # XLA CPU computes it in f32 between converts; on an accelerator it is a bf16 matmul
    assert (m.kind, m.dtype, m.trips) == ("dot", "bfloat16", 1)
    assert m.flops == 2 * 4 * 16 * 48 * 32


def test_a_deliberate_upcast_of_one_operand_makes_an_f32_matmul():
    text = FUSED_BF16.replace("%b = bf16[4,32,48]{2,1,0} parameter(1)", "%b = f32[4,32,48]{2,1,0} parameter(1)")
    assert parse_matmuls(text)[0].dtype == "float32"


LOOP = """HloModule m

%body (t: (s32[], f32[8,16])) -> (s32[], f32[8,16]) {
  %t = (s32[], f32[8,16]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %x = f32[8,16]{1,0} get-tuple-element(%t), index=1
  %w = f32[16,16]{1,0} constant({...})
  %y = f32[8,16]{1,0} dot(%x, %w), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %r = (s32[], f32[8,16]{1,0}) tuple(%i, %y)
}

%cond (t.1: (s32[], f32[8,16])) -> pred[] {
  %t.1 = (s32[], f32[8,16]{1,0}) parameter(0)
  ROOT %lt = pred[] constant(true)
}

%small (p: f32[8,16]) -> f32[8,16] {
  %p = f32[8,16]{1,0} parameter(0)
  %w.1 = f32[16,16]{1,0} constant({...})
  ROOT %d = f32[8,16]{1,0} dot(%p, %w.1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%big (p.1: f32[8,16]) -> f32[8,16] {
  %p.1 = f32[8,16]{1,0} parameter(0)
  %w.2 = f32[16,16]{1,0} constant({...})
  %d.1 = f32[8,16]{1,0} dot(%p.1, %w.2), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %d.2 = f32[8,16]{1,0} dot(%d.1, %w.2), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main (x0: f32[8,16], k: s32[]) -> f32[8,16] {
  %x0 = f32[8,16]{1,0} parameter(0)
  %k = s32[] parameter(1)
  %init = (s32[], f32[8,16]{1,0}) tuple(%k, %x0)
  %loop = (s32[], f32[8,16]{1,0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"6"}}
  %out = f32[8,16]{1,0} get-tuple-element(%loop), index=1
  ROOT %c = f32[8,16]{1,0} conditional(%k, %out, %out), branch_computations={%small, %big}
}
"""


def test_loop_trips_and_the_costliest_branch():
    compute = hlo_compute(LOOP)
    one = 2 * 8 * 16 * 16
    assert sorted((m.name, m.trips) for m in compute.matmuls) == [("d.1", 1), ("d.2", 1), ("y", 6)]
    assert compute.matmul_flops == 6 * one + 2 * one
    assert compute.uncounted_loop_flops == 5 * one  # cost analysis counts the body once
    # the judge adds the iterations cost analysis left out
    j = judge_text(LOOP, PLAIN, num_devices=1, flops=3 * one)
    assert j.flops == 8 * one and j.loop_flops == 5 * one and j.matmul_flops == 8 * one


CONV = """ENTRY %main {
  %x = f32[2,10,10,6]{3,2,1,0} parameter(0)
  %k = f32[3,3,3,8]{3,2,1,0} parameter(1)
  ROOT %y = f32[2,5,5,8]{3,2,1,0} convolution(%x, %k), window={size=3x3 stride=2x2 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, feature_group_count=2
}
"""


def test_conv_counts_the_taps_that_read_input():
    (m,) = parse_matmuls(CONV)
    # per spatial dim: outputs o=0..4 read input 2o-1+k for k=0..2; o=0,k=0 falls in padding
    taps = 5 * 3 - 1
    assert m.flops == 2 * 2 * 8 * (6 // 2) * taps * taps


GPU_GEMM = """ENTRY %main {
  %a = bf16[16,32]{1,0} parameter(0)
  %b = bf16[48,32]{1,0} parameter(1)
  %gemm = (bf16[16,48]{1,0}, s8[1024]{0}) custom-call(%a, %b), custom_call_target="__cublas$gemm", backend_config={"operation_queue_id":"0","gemm_backend_config":{"alpha_real":1,"beta":0,"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],"rhs_contracting_dimensions":["1"],"lhs_batch_dimensions":[],"rhs_batch_dimensions":[]},"epilogue":"DEFAULT"}}
  ROOT %out = bf16[16,48]{1,0} get-tuple-element(%gemm), index=0
}
"""


def test_cublas_custom_call_is_a_dot():
    (m,) = parse_matmuls(GPU_GEMM)
    assert (m.kind, m.dtype, m.flops) == ("dot", "bfloat16", 2 * 16 * 48 * 32)
    other = GPU_GEMM.replace("__cublas$gemm", "__my$kernel")  # an unknown custom-call is no matmul
    assert parse_matmuls(other) == []


def test_no_entry_means_no_matmuls():
    assert parse_matmuls("%ar = f32[25]{0} all-reduce(%p), to_apply=%add") == []


# ---- the judge's formula on hand-written HLO ----------------------------------------------

def test_each_matmul_at_its_dtype_peak_and_size_efficiency():
    one = 2 * 4 * 16 * 48 * 32
    j = judge_text(FUSED_BF16, H100, num_devices=8, flops=one + 1e6, bytes_accessed=1.0)
    assert j.matmul_flops == one and j.other_dtype == "float32"
    assert j.matmul_s == pytest.approx(one / (H100.peak_flops_for("bfloat16") * H100.matmul_efficiency_at(one)))
    assert j.other_s == pytest.approx(1e6 / H100.peak_flops_for("float32"))
    assert j.compute_s == pytest.approx(j.matmul_s + j.other_s) and j.flops_s == j.compute_s
    # memory-bound: the byte side wins
    j = judge_text(FUSED_BF16, H100, num_devices=8, flops=one, bytes_accessed=1e9)
    assert j.compute_s == pytest.approx(1e9 / H100.hbm_bandwidth) == j.bytes_s


# ---- real compiles on a (2, 4) mesh ------------------------------------------------------

def test_sharded_dot_matches_analytic_and_cost_analysis():
    mesh = _mesh()
    c = _compile(lambda x, w: x @ w, S((64, 128), jnp.float32), S((128, 256), jnp.float32),
                 shardings=(NamedSharding(mesh, P("data", None)), NamedSharding(mesh, P(None, "model"))))
    (m,) = parse_matmuls(c.as_text())
    assert m.flops == 2 * (64 // 2) * (256 // 4) * 128 and m.dtype == "float32"
    assert m.flops == pytest.approx(c.cost_analysis()["flops"], rel=0.02)


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_sharded_conv_matches_analytic_and_cost_analysis(padding):
    mesh = _mesh()
    conv = lambda a, b: jax.lax.conv_general_dilated(  # noqa: E731
        a, b, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    c = _compile(conv, S((8, 16, 16, 32), jnp.float32), S((3, 3, 32, 64), jnp.float32),
                 shardings=(NamedSharding(mesh, P("data")), NamedSharding(mesh, P(None, None, None, "model"))))
    (m,) = parse_matmuls(c.as_text())
    assert m.kind == "convolution"
    out_hw = 14 if padding == "VALID" else 16
    if padding == "VALID":  # 2 * prod(result) * prod(kernel spatial) * in-features
        assert m.flops == 2 * (8 // 2) * out_hw * out_hw * (64 // 4) * 3 * 3 * 32
    assert m.flops == pytest.approx(c.cost_analysis()["flops"], rel=1e-6)  # padding taps skipped, as XLA does


def test_conv_gradients_match_cost_analysis():
    """The backward convs carry base/window dilation, negative padding and reversal."""
    fwd = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
        x, k, (2, 2), "SAME", rhs_dilation=(1, 2), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    x, k = S((4, 17, 17, 8), jnp.float32), S((3, 3, 8, 16), jnp.float32)
    y = jax.eval_shape(fwd, x, k)
    c = _compile(lambda x, k, ct: jax.vjp(fwd, x, k)[1](ct), x, k, y)
    found = parse_matmuls(c.as_text())
    assert len(found) == 2 and {m.kind for m in found} == {"convolution"}
    assert sum(m.flops for m in found) == pytest.approx(c.cost_analysis()["flops"], rel=1e-6)


def test_sharded_batched_einsum_bf16():
    mesh = _mesh()
    c = _compile(lambda a, b: jnp.einsum("bij,bjk->bik", a, b),
                 S((8, 16, 32), jnp.bfloat16), S((8, 32, 48), jnp.bfloat16),
                 shardings=(NamedSharding(mesh, P("data")), NamedSharding(mesh, P("data"))))
    (m,) = parse_matmuls(c.as_text())
    assert m.flops == 2 * (8 // 2) * 16 * 48 * 32 and m.dtype == "bfloat16"
    # cost analysis adds one FLOP per element the CPU backend converts around its f32 dot
    converted = 4 * 16 * 32 + 4 * 32 * 48 + 4 * 16 * 48
    assert m.flops + converted == c.cost_analysis()["flops"]


def test_bf16_large_matmul_judged_faster_by_the_peak_ratio():
    n = 8192  # compiled only, never run
    judged = {dt: judge(_compile(lambda a, b: a @ b, S((n, n), dt), S((n, n), dt)), H100)
              for dt in (jnp.float32, jnp.bfloat16)}
    f32, bf16 = judged[jnp.float32], judged[jnp.bfloat16]
    ratio = H100.peak_flops_for("bfloat16") / H100.peak_flops_for("float32")
    assert f32.matmul_flops == bf16.matmul_flops == 2 * n**3
    assert f32.matmul_s / bf16.matmul_s == pytest.approx(ratio)
    assert f32.compute_s > f32.bytes_s and bf16.compute_s > bf16.bytes_s  # FLOP-bound both
    assert f32.compute_s / bf16.compute_s == pytest.approx(ratio, rel=0.01)


@pytest.mark.parametrize("dtype, name", [(jnp.bfloat16, "bfloat16"), (jnp.float32, "float32")])
def test_non_matmul_flops_priced_at_the_program_dtype(dtype, name):
    def loss(w, x):
        return jnp.mean(jax.nn.gelu(x @ w) ** 2)
    c = _compile(jax.grad(loss), S((128, 256), dtype), S((64, 128), dtype))
    j = judge(c, H100)
    assert j.other_dtype == name and {m.dtype for m in hlo_compute(c.as_text()).matmuls} == {name}
    assert j.flops > j.matmul_flops
    assert j.other_s == pytest.approx((j.flops - j.matmul_flops) / H100.peak_flops_for(name))


def test_tiny_matmul_pays_the_efficiency_curve():
    c = _compile(lambda a, b: a @ b, S((64, 64), jnp.float32), S((64, 64), jnp.float32))
    j, plain = judge(c, H100), judge(c, PLAIN)
    flops = 2 * 64**3
    assert j.matmul_s == pytest.approx(compute_time(H100, flops, 0.0, "float32", matmul=True))
    assert j.matmul_s == pytest.approx(flops / (494.7e12 * H100.matmul_efficiency_at(flops)))
    assert H100.matmul_efficiency_at(flops) < 0.001 and j.compute_s > 100 * plain.compute_s


def test_no_dtype_table_and_no_curve_give_the_single_roofline():
    args = abstract_mlp_args(batch=32, hidden=64, layers=3)
    c = _compile(make_train_step(optax.adam(1e-3)), *args)
    j, ca = judge(c, PLAIN), c.cost_analysis()
    assert j.matmul_flops > 0.5 * ca["flops"] and j.loop_flops == 0
    old = max(ca["flops"] / PLAIN.peak_flops, ca["bytes accessed"] / PLAIN.hbm_bandwidth)
    assert j.compute_s == pytest.approx(old, rel=1e-12)
    assert j.flops == ca["flops"]


def test_scan_matmuls_counted_every_iteration():
    def scanned(x, ws):
        return jax.lax.scan(lambda c, w: (jnp.tanh(c @ w), None), x, ws)[0]
    c = _compile(scanned, S((64, 128), jnp.float32), S((5, 128, 128), jnp.float32))
    j, one = judge(c, PLAIN), 2 * 64 * 128 * 128
    assert j.matmul_flops == 5 * one and j.loop_flops == 4 * one
    assert j.flops == pytest.approx(c.cost_analysis()["flops"] + 4 * one)
