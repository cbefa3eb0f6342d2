"""The GPU judge's two-clock replay, its kernel prices and XLA's schedule estimate, on
hand-written HLO (no plugin needed).

Cluster: HBM at 1e9 B/s and links at 1e9 B/s with no latency, so a copy of 1 MB takes
2 ms (read + write) and an all-reduce of 1 MB over two devices 1 ms (ring: 2(n-1)/n = 1).
"""

import pytest

from benchmarks.judge import judge_gpu_text, replay, schedule_estimate_s
from benchmarks.judge.kernels import KernelPricer
from cost_model import Cluster
from shardsearch.hlo.compute import intended_dtypes, parse_matmuls
from shardsearch.hlo.module import entry_of, parse_module

CLUSTER = Cluster.from_dict({
    "devices_per_node": 8, "peak_flops": 1e15, "memory_bytes": 1e10, "hbm_bandwidth": 1e9,
    "intra_node": {"bandwidth": 1e9, "latency": 0.0}, "inter_node": {"bandwidth": 1e8, "latency": 0.0},
})
MS = 1e-3
HEAD = """HloModule m, is_scheduled=true, num_partitions=2

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}
"""


def program(body: str) -> str:
    return HEAD + "\nENTRY %main (p: f32[250000]) -> f32[250000] {\n  %p = f32[250000]{0} parameter(0)\n" + body + "}\n"


START = "  %ars = f32[250000]{0} all-reduce-start(%p), replica_groups={{0,1}}, to_apply=%add\n"
DONE = "  %ard = f32[250000]{0} all-reduce-done(%ars)\n"
COPY = "  %k = f32[250000]{0} copy(%p)\n"
ADD = "  ROOT %r = f32[250000]{0} add(%ard, %k)\n"


def test_a_collective_under_a_kernel_is_hidden_but_slows_it():
    r = replay(program(START + COPY + DONE + ADD), CLUSTER, 2)
    assert (r.compute_s, r.comm_s, r.num_async) == (pytest.approx(5 * MS), pytest.approx(1 * MS), 1)
    # the copy runs its first ms 15% slower: 1/1.15 ms of its work done under the all-reduce
    slowed = 1 * MS - 1 * MS / 1.15
    assert r.total_s == pytest.approx(5 * MS + slowed)
    assert r.exposed_comm_s == pytest.approx(slowed)
    assert r.hidden_fraction == pytest.approx(1 - slowed / MS)
    assert r.no_overlap_s == pytest.approx(6 * MS)


def test_a_done_right_after_its_start_stalls_compute():
    r = replay(program(START + DONE + COPY + ADD), CLUSTER, 2)
    assert r.total_s == pytest.approx(6 * MS)
    assert r.exposed_comm_s == pytest.approx(1 * MS)
    assert r.hidden_fraction == pytest.approx(0.0)


def test_no_contention_when_asked():
    r = replay(program(START + COPY + DONE + ADD), CLUSTER, 2, contention=0.0)
    assert r.total_s == pytest.approx(5 * MS)
    assert r.hidden_fraction == pytest.approx(1.0)


def test_collectives_share_the_network_one_at_a_time():
    second, done2 = START.replace("%ars", "%ars2"), "  %ard2 = f32[250000]{0} all-reduce-done(%ars2)\n"
    r = replay(program(START + second + COPY + DONE + done2 + ADD), CLUSTER, 2, contention=0.0)
    # the second all-reduce runs from 1 to 2 ms: still under the 2 ms copy
    assert r.total_s == pytest.approx(5 * MS)
    bare = START + second + DONE + done2 + "  ROOT %r = f32[250000]{0} copy(%ard2)\n"
    r = replay(program(bare), CLUSTER, 2, contention=0.0)
    assert r.total_s == pytest.approx(2 * MS + 2 * MS)  # 1 + 1 ms of network in turn, then the copy


def test_a_blocking_collective_waits_on_both_clocks():
    sync = "  %ard = f32[250000]{0} all-reduce(%p), replica_groups={{0,1}}, to_apply=%add\n"
    r = replay(program(sync + COPY + ADD), CLUSTER, 2)
    assert (r.num_sync, r.num_async) == (1, 0)
    assert r.total_s == pytest.approx(6 * MS)


def test_a_loop_replays_its_body_per_iteration():
    text = HEAD + """
%body (t: (s32[], f32[250000])) -> (s32[], f32[250000]) {
  %t = (s32[], f32[250000]{0}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %x = f32[250000]{0} get-tuple-element(%t), index=1
  %s = f32[250000]{0} all-reduce-start(%x), replica_groups={{0,1}}, to_apply=%add
  %c = f32[250000]{0} copy(%x)
  %d = f32[250000]{0} all-reduce-done(%s)
  ROOT %o = (s32[], f32[250000]{0}) tuple(%i, %d)
}

%cond (t: (s32[], f32[250000])) -> pred[] {
  %t = (s32[], f32[250000]{0}) parameter(0)
  ROOT %lt = pred[] constant(true)
}

ENTRY %main (p: f32[250000]) -> (s32[], f32[250000]) {
  %p = f32[250000]{0} parameter(0)
  %z = s32[] constant(0)
  %init = (s32[], f32[250000]{0}) tuple(%z, %p)
  ROOT %w = (s32[], f32[250000]{0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"3"}}
}
"""
    r = replay(text, CLUSTER, 2, contention=0.0)
    assert (r.num_async, r.comm_s, r.compute_s) == (3, pytest.approx(3 * MS), pytest.approx(6 * MS))
    assert r.total_s == pytest.approx(6 * MS)  # each all-reduce under its iteration's copy


def test_judge_gpu_reports_both_figures():
    j = judge_gpu_text(program(START + COPY + DONE + ADD), CLUSTER, xla_estimate_s=4 * MS)
    assert j.num_devices == 2
    assert j.total_s == pytest.approx(6 * MS)  # no overlap, as the CPU judge adds them
    assert j.overlap_s == pytest.approx(5 * MS + MS - MS / 1.15)
    assert j.exposed_comm_s == pytest.approx(MS - MS / 1.15)
    assert j.xla_estimate_s == 4 * MS
    (c,) = j.collectives
    assert (c.kind, c.nbytes, c.group_size) == ("all-reduce", 1e6, 2)


FUSED = HEAD + """
%dus (buf: f32[8,250000], upd: f32[1,250000], i: s32[]) -> f32[8,250000] {
  %buf = f32[8,250000]{1,0} parameter(0)
  %upd = f32[1,250000]{1,0} parameter(1)
  %i = s32[] parameter(2)
  %z = s32[] constant(0)
  ROOT %u = f32[8,250000]{1,0} dynamic-update-slice(%buf, %upd, %i, %z)
}

%ds (buf: f32[8,250000], i: s32[]) -> f32[1,250000] {
  %buf = f32[8,250000]{1,0} parameter(0)
  %i = s32[] parameter(1)
  %z = s32[] constant(0)
  %sl = f32[1,250000]{1,0} dynamic-slice(%buf, %i, %z), dynamic_slice_sizes={1,250000}
  ROOT %e = f32[1,250000]{1,0} exponential(%sl)
}

ENTRY %main (b: f32[8,250000], u: f32[1,250000], i: s32[]) -> f32[8,250000] {
  %b = f32[8,250000]{1,0} parameter(0)
  %u = f32[1,250000]{1,0} parameter(1)
  %i = s32[] parameter(2)
  %read = f32[1,250000]{1,0} fusion(%b, %i), kind=kLoop, calls=%ds
  ROOT %write = f32[8,250000]{1,0} fusion(%b, %read, %i), kind=kLoop, calls=%dus
}
"""


def test_kernels_read_slices_and_update_in_place():
    module = parse_module(FUSED)
    entry = entry_of(module)
    pricer = KernelPricer(module, intended_dtypes(module), CLUSTER)
    read, write = (pricer.price(entry, entry.by_name[n]) for n in ("read", "write"))
    assert read.bytes == 2e6 + 4  # the slice read, the result written, the index
    assert read.flops == 250000  # one exponential per element
    assert write.bytes == 2e6 + 4  # the update read and written into the buffer, not the 8 MB buffer


CUDNN = """ENTRY %main {
  %x = bf16[8,32,32,64]{3,2,1,0} parameter(0)
  %w = bf16[64,3,3,64]{3,2,1,0} parameter(1)
  %dy = bf16[8,32,32,64]{3,2,1,0} parameter(2)
  %fwd = (bf16[8,32,32,64]{3,2,1,0}, u8[0]{0}) custom-call(%x, %w), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convForward"
  %dw = (bf16[64,3,3,64]{3,2,1,0}, u8[0]{0}) custom-call(%x, %dy), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardFilter"
  %dx = (bf16[8,32,32,64]{3,2,1,0}, u8[0]{0}) custom-call(%dy, %w), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardInput"
  ROOT %t = (bf16[8,32,32,64]{3,2,1,0}) tuple(%x)
}
"""


def test_cudnn_convolutions_count_as_their_forward_convolution():
    fwd, dw, dx = parse_matmuls(CUDNN)
    taps = (32 * 3 - 2) ** 2  # per spatial dim, 2 of the 32 x 3 (output, tap) pairs fall in the padding
    assert fwd.flops == dw.flops == dx.flops == 2 * 8 * 64 * 64 * taps
    assert {fwd.kind, dw.kind, dx.kind} == {"convolution"}
    assert fwd.dtype == "bfloat16"


SCHEDULE = """hlo_module {
  name: "jit_step"
  entry_computation_id: 22
}
computation_schedules {
  computation_id: 7
  scheduler_statistics { total_cycles: 99.0 }
  cycles_per_microsecond: 1
}
computation_schedules {
  computation_id: 22
  instructions { id: 1 start_timestamp_cycles: 0 end_timestamp_cycles: 2.5 }
  scheduler_statistics {
    all_reduce_wasted_cycles: 1.0
    total_cycles: 5692.0385
  }
  cycles_per_microsecond: 2
}
"""


def test_xla_estimate_is_the_entry_schedule_total():
    assert schedule_estimate_s(SCHEDULE) == pytest.approx(5692.0385 / 2 * 1e-6)
    assert schedule_estimate_s("hlo_module { }") is None
