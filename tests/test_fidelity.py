"""The fidelity report: the cost model's predictions next to what XLA compiled."""

import pytest

import shardsearch as ss
from benchmarks.models import get_workload
from benchmarks.runner import make_mesh
from cost_model import MeshShape
from cost_model.collectives import Collective, CollectiveKind
from cost_model.reshard import reshard_collectives
from shardsearch.fidelity import compare, compiled_collectives

MESH_2x4 = MeshShape(("data", "model"), (2, 4))

HLO = """
HloModule m, num_partitions=8
ENTRY e {
  %p = f32[64,32]{1,0} parameter(0)
  %ar = f32[64,32]{1,0} all-reduce(%p), replica_groups=[2,4]<=[8], to_apply=%add
  %ag = f32[64,32]{1,0} all-gather(%p), replica_groups=[4,2]<=[2,4]T(1,0), dimensions={0}
  %rs = f32[8,32]{1,0} reduce-scatter(%p), replica_groups={{0,1,2,3,4,5,6,7}}, dimensions={0}
}
"""


def test_compiled_collectives_name_their_mesh_axes_in_cost_model_bytes():
    found = {(k, a): (c, b) for k, a, c, b in compiled_collectives(HLO, MESH_2x4)}
    tensor = 64 * 32 * 4
    assert found[("all-reduce", "model")] == (1, tensor)  # groups {0..3}, {4..7}: along model
    assert found[("all-gather", "data")] == (1, tensor)  # groups {0,4}, {1,5}, ...: along data
    assert found[("reduce-scatter", "data+model")] == (1, tensor)  # its operand, not its shard


def test_report_table_and_errors():
    f = compare([("all-reduce", "data", 3, 300.0)], [("all-reduce", "data", 1, 330.0)], 1100.0, 1000.0)
    assert f.comm_error == pytest.approx(-30 / 330) and f.memory_error == pytest.approx(0.1)
    text = str(f)
    assert "all-reduce" in text and "total communication" in text and "peak memory / device" in text


def test_a_whole_multi_axis_split_moves_with_one_all_to_all():
    # XLA views (model, data) as one axis of 8 and moves the tensor in one all-to-all
    cs = reshard_collectives(MESH_2x4, (8, 16, 4), 4, (("model", "data"), (), ()), ((), ("model", "data"), ()))
    assert cs == [Collective(CollectiveKind.ALL_TO_ALL, ("data", "model"), 8 * 16 * 4 * 4 / 8)]


def test_fidelity_of_a_compiled_mlp_plan():
    from helpers import concrete_mlp_args, make_train_step
    import optax

    optimizer = optax.adam(1e-3)
    args = concrete_mlp_args(64, 64, layers=2, optimizer=optimizer)
    step = ss.auto(make_train_step(optimizer), mesh=(2, 4), cluster="cpu-host")
    report = step.plan_for(*args).fidelity(step.lower(*args).compile())
    assert abs(report.comm_error) <= 0.1 and abs(report.memory_error) <= 0.1, report


# Issue 5's acceptance: the benchmark models' tiny configs on every mesh shape, planned
# for the CPU host they compile on (the plans differ by mesh: replicated, data parallel,
# split weights).
CASES = [(suite, f"{suite}-tiny", mesh) for suite in ("gpt", "moe", "wresnet")
         for mesh in ((8, 1), (1, 8), (2, 4), (4, 2))]


@pytest.mark.slow
def test_predictions_match_the_compiled_programs():
    rows = []
    for suite, config, mesh_shape in CASES:
        workload = get_workload(suite, config)
        step = ss.auto(workload.train_step, mesh=make_mesh(mesh_shape), cluster="cpu-host")
        report = step.plan_for(*workload.args).fidelity(step.lower(*workload.args).compile())
        rows.append((config, mesh_shape, report))
    for config, mesh_shape, r in rows:
        print(f"{config} {mesh_shape}: communication {r.predicted_comm_bytes:.4g} vs {r.compiled_comm_bytes:.4g} "
              f"bytes ({r.comm_error:+.1%}), peak {r.predicted_peak_bytes:.4g} vs {r.compiled_peak_bytes:.4g} "
              f"bytes ({r.memory_error:+.1%})")
    worst_comm = max(rows, key=lambda r: abs(r[2].comm_error))
    worst_memory = max(rows, key=lambda r: abs(r[2].memory_error))
    print(f"worst communication: {worst_comm[0]} {worst_comm[1]}\n{worst_comm[2]}")
    print(f"worst memory: {worst_memory[0]} {worst_memory[1]}\n{worst_memory[2]}")
    assert len(rows) >= 12
    assert abs(worst_comm[2].comm_error) <= 0.10
    assert abs(worst_memory[2].memory_error) <= 0.10
