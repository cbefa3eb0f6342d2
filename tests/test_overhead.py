"""benchmarks.judge.overhead: a plan's step beyond the ideal, split into what made it
(hand-written HLO on test_gpu_replay's cluster: a 1 MB copy 2 ms, a 1 MB all-reduce 1 ms)."""

import pytest

from benchmarks.judge.overhead import overhead
from test_gpu_replay import ADD, CLUSTER, COPY, DONE, MS, START, program

REPLICATED = program(COPY + "  ROOT %r = f32[250000]{0} add(%k, %p)\n")  # copy 2 ms, the update 3 ms
PLAN = program(START + COPY + DONE + ADD)  # the same kernels, the copy under a 1 ms all-reduce


def test_the_parts_add_up_to_the_overhead():
    o = overhead(PLAN, REPLICATED, CLUSTER, 2)
    assert o.ideal_s == pytest.approx(2.5 * MS)  # (2 + 3) ms over two devices
    assert (o.plan.update_s, o.plan.other_s, o.plan.matmul_s) == (pytest.approx(3 * MS), pytest.approx(2 * MS), 0)
    assert o.contention_s == pytest.approx((1 - 1 / 1.15) * MS)  # the copy's first ms at 1/1.15 speed
    assert o.stall_s == pytest.approx(0.0, abs=1e-12)  # the all-reduce ends under the copy
    parts = (o.plan.update_s - o.ideal.update_s) + (o.plan.other_s - o.ideal.other_s) + o.contention_s + o.stall_s
    assert parts == pytest.approx(o.step_s - o.ideal_s)
    assert o.lines()[0].startswith("step 5.130 ms, ideal 2.500 ms")
