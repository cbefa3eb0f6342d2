"""The pipeline judge: the schedule replayed from per-stage figures (closed forms), and a
2-stage plan's compiled programs priced on the stages' own devices."""

import pytest

from benchmarks.judge.pipeline import judge_pipeline, link_seconds, replay
from cost_model import Cluster
from shardsearch.pipeline.stage_search import Schedule

SLOW = Cluster.load("2x4-slow")


@pytest.mark.parametrize("schedule", list(Schedule))
@pytest.mark.parametrize("stages,m", [(1, 4), (2, 2), (3, 5), (4, 8)])
def test_equal_stages_replay_to_the_closed_form(schedule, stages, m):
    f, b, pre, post = 1.0, 2.0, 0.5, 0.25
    got = replay([f] * stages, [b] * stages, [pre] * stages, [post] * stages, [(0.0, 0.0)] * (stages - 1),
                 schedule, m)
    assert got == pytest.approx(pre + (stages + m - 1) * (f + b) + post)


def test_hand_replayed_two_stages_with_links():
    # stage 0: F 1, B 2; stage 1: F 2, B 3; link 0.5 each way; 2 microbatches, GPipe.
    # stage 0 F0 [0,1] F1 [1,2]; link F0 [1,1.5] F1 [2,2.5]; stage 1 F0 [1.5,3.5] F1 [3.5,5.5]
    # B0 [5.5,8.5] B1 [8.5,11.5]; link B0 [8.5,9] B1 [11.5,12]; stage 0 B0 [9,11] B1 [12,14]
    got = replay([1, 2], [2, 3], [0, 0], [0, 0], [(0.5, 0.5)], Schedule.GPIPE, 2)
    assert got == pytest.approx(14.0)
    # 1F1B: stage 1 runs F0 B0 F1 B1: F0 [1.5,3.5] B0 [3.5,6.5] F1 [6.5,8.5] B1 [8.5,11.5];
    # stage 0: F0 F1 B0 B1: B0 after link [6.5,7] -> [7,9], B1 after [11.5,12] -> [12,14]
    assert replay([1, 2], [2, 3], [0, 0], [0, 0], [(0.5, 0.5)], Schedule.ONE_F_ONE_B, 2) == pytest.approx(14.0)
    # POST starts when the stage's last backward ends: stage 1's long update decides the step
    assert replay([1, 2], [2, 3], [0, 0], [0, 5], [(0.5, 0.5)], Schedule.GPIPE, 2) == pytest.approx(16.5)


def test_once_per_step_transfers_delay_the_reader():
    # the replay of test_hand_replayed_two_stages_with_links (GPipe: 14.0), plus a value sent
    # once a step from stage 0 to stage 1 before its microbatches (4 s, from the step's
    # start): it holds the forward link [0,4], so F0's activations cross [4,4.5], F1's
    # [4.5,5]; stage 1 F0 [4.5,6.5] F1 [6.5,8.5] B0 [8.5,11.5] B1 [11.5,14.5];
    # link B1 [14.5,15]; stage 0's B1 [15,17]
    args = ([1, 2], [2, 3], [0, 0], [0, 0], [(0.5, 0.5)], Schedule.GPIPE, 2)
    assert replay(*args, [(0, 1, 4.0, False, True)]) == pytest.approx(17.0)
    # made by stage 0's PRE (2 s): it leaves at 2
    pre = ([1, 2], [2, 3], [2, 0], [0, 0], [(0.5, 0.5)], Schedule.GPIPE, 2)
    assert replay(*pre, [(0, 1, 4.0, False, False)]) == pytest.approx(replay(*pre) + 2.0 + 1.0)
    # a running total stage 0's update reads: sent when stage 1's last backward ends (11.5),
    # after B1's cotangent has crossed the backward link [11.5,12]: arrives 17
    assert replay(*args, [(1, 0, 5.0, True, False)]) == pytest.approx(17.0)
    assert replay(*args, [(1, 0, 1.0, True, False)]) == pytest.approx(14.0)  # arrives before stage 0's loop ends


def test_links_within_one_node_are_fast():
    intra = link_seconds(1e6, (0, 1), (2, 3), SLOW)
    inter = link_seconds(1e6, (0, 1, 2, 3), (4, 5, 6, 7), SLOW)
    assert intra == pytest.approx(1e6 / (2 * 300e9) + 8e-6)
    assert inter == pytest.approx(1e6 / (4 * 3.125e9) + 5e-5)
    assert link_seconds(0, (0,), (4,), SLOW) == 0.0


def test_two_stage_plan_judged_per_stage_and_its_fidelity(pipelined_embed_head):
    plan, compiled = pipelined_embed_head
    judged = judge_pipeline(compiled, SLOW)
    assert judged.num_stages == 2 and judged.num_microbatches == 4 and judged.schedule is Schedule.ONE_F_ONE_B
    first, second = judged.stages
    assert first.devices == (0, 1, 2, 3) and second.devices == (4, 5, 6, 7)
    for st in judged.stages:
        assert st.forward_s > 0 and st.backward_s > 0 and st.post_s > 0
        assert all(j.num_devices == 4 for j in st.programs.values())
        # inside a stage no group leaves its node
        assert not any(c.crosses_nodes for j in st.programs.values() for c in j.collectives)
    (fwd_bytes, bwd_bytes), = judged.transfer_bytes
    assert judged.transfer_s[0][0] == pytest.approx(fwd_bytes / (4 * 3.125e9) + 5e-5)
    # the replay is never shorter than the busiest stage's work, nor than the closed form's pipeline part
    busiest = max(judged.num_microbatches * st.micro_s + st.step_s for st in judged.stages)
    assert judged.total_s >= busiest
    assert judged.total_s == pytest.approx(judged.formula_s, rel=0.25)
    assert 0 < judged.compute_s < judged.total_s and judged.comm_s > 0
    assert judged.breakdown().count(" x4") == 3 and judged.breakdown().endswith(f"bubble {judged.bubble:.0%}")
    # 1F1B keeps 2 microbatches in flight on stage 0, 1 on stage 1
    assert judged.memory_per_stage[0] == pytest.approx(first.program_peak_bytes + first.stash_bytes)
    assert judged.memory_per_stage[1] == pytest.approx(second.program_peak_bytes)
    # plan.fidelity covers stages: every program predicted next to compiled
    report = plan.fidelity(compiled)
    assert [s.stage for s in report.stages] == [0, 1]
    for s in report.stages:
        assert {"forward", "backward", "post"} <= set(s.programs)
        assert s.compiled_peak_bytes > 0 and s.predicted_peak_bytes > 0
        # each program's memory as compiled, running totals of the backward's partials included
        assert all(abs(f.memory_error) < 0.2 for f in s.programs.values()), str(report)
    assert "stage peak" in str(report)


@pytest.fixture(scope="module")
def pipelined_embed_head():
    from test_pipeline_runtime import embed_head_step, pipelined_plan

    fn, args = embed_head_step()
    plan = pipelined_plan(fn, args, 2, 4, Schedule.ONE_F_ONE_B)
    return plan, plan.apply(fn).lower(*args).compile()
