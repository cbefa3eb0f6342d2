"""The advisor: device-count / mesh sweeps, their rows, goals, scaling modes and errors."""

import csv
import io
import json
import re

import jax
import numpy as np
import pytest

import shardsearch as ss
from cost_model import Cluster
from helpers import abstract_mlp_args, concrete_mlp_args, make_train_step
from shardsearch.advise import Advice, BatchMode, Row, RowStatus, mesh_shapes
from shardsearch.advise.batch import BatchInfo
from shardsearch.advise.configs import default_counts

# Two nodes of four slow devices with a price: small models still see communication.
TWO_NODES = Cluster.from_dict({
    "name": "two-nodes", "devices_per_node": 4, "num_nodes": 2, "peak_flops": 1e12, "memory_bytes": 4e9,
    "hbm_bandwidth": 1e11, "intra_node": {"bandwidth": 2e10, "latency": 1e-5},
    "inter_node": {"bandwidth": 1e9, "latency": 5e-5}, "price_per_device_hour": 2.0,
})
STEP = make_train_step(__import__("optax").sgd(0.1, momentum=0.9))


def mlp_args(batch=32, hidden=256, layers=2):
    return abstract_mlp_args(batch, hidden, layers=layers, optimizer=__import__("optax").sgd(0.1, momentum=0.9))


@pytest.fixture(scope="module")
def full_sweep():
    return ss.advise(STEP, *mlp_args(), cluster=TWO_NODES, devices=[1, 2, 4, 8], prune=False, progress=False)


def test_mesh_shapes_line_up_with_nodes():
    h100 = Cluster.load("h100-8x8-ib")
    assert mesh_shapes(8, h100) == [(8, 1), (4, 2)]  # (2, 4) is (4, 2) inside a node; (1, 8) is (8, 1)
    assert mesh_shapes(64, h100) == [(64, 1), (32, 2), (16, 4), (8, 8), (4, 16), (2, 32)]
    assert mesh_shapes(12, Cluster.from_dict({**TWO_NODES.to_dict(), "devices_per_node": 6, "num_nodes": 4})) == [
        (12, 1), (6, 2), (4, 3), (2, 6)]  # model 4 would straddle nodes of 6
    assert default_counts(h100) == (1, 2, 4, 8, 16, 32, 64)
    assert default_counts(h100, 16) == (1, 2, 4, 8, 16)


def test_sweep_rows_equal_individual_plans(full_sweep):
    assert [(r.devices, r.mesh_shape) for r in full_sweep.rows] == [
        (1, (1, 1)), (2, (2, 1)), (4, (2, 2)), (4, (4, 1)), (8, (2, 4)), (8, (4, 2)), (8, (8, 1))]
    for r in full_sweep.rows:
        alone = ss.plan(STEP, *mlp_args(), mesh=r.mesh_shape, cluster=TWO_NODES, pipeline=None)  # a mesh's row
        assert r.status is RowStatus.PLANNED and r.plan.mesh == alone.mesh
        assert r.step_s == pytest.approx(alone.predicted.total_s, rel=1e-9)
        assert r.plan.flat_in_specs == alone.flat_in_specs
        assert r.peak_bytes == (alone.predicted.peak_donated_bytes or alone.predicted.peak_bytes)
        assert r.plan.alternatives() == ()  # the sweep skips pricing the recipes unless asked


def test_compare_true_prices_the_recipes_beside_each_row():
    advice = ss.advise(STEP, *mlp_args(), cluster=TWO_NODES, devices=[2], compare=True, progress=False)
    assert len(advice.rows[0].plan.alternatives()) >= 2  # data parallel, FSDP, ...


def test_strong_scaling_keeps_the_batch(full_sweep):
    base = full_sweep.rows[0]
    for r in full_sweep.rows:
        assert r.batch == 32 and r.throughput == pytest.approx(32 / r.step_s)
        assert r.efficiency == pytest.approx((r.throughput / r.devices) / (base.throughput / base.devices))
        assert r.cost_per_step == pytest.approx(r.devices * r.step_s * 2.0 / 3600)
        assert r.cost_per_million_samples == pytest.approx(r.cost_per_step / 32 * 1e6)
        assert r.tokens_per_s is None  # float inputs: no sequence dim
    assert full_sweep.batch_mode is BatchMode.GLOBAL and "strong scaling" in full_sweep.to_markdown()


def test_weak_scaling_grows_the_batch_with_the_devices():
    weak = ss.advise(STEP, *mlp_args(batch=8), cluster=TWO_NODES, devices=[1, 2, 4], batch_mode="per_device",
                     prune=False, progress=False)
    base = weak.rows[0]
    for r in weak.rows:
        assert r.batch == 8 * r.devices
        x_shape = r.plan.in_avals[-2][0]  # the batch's x: (params..., opt_state..., x, y)
        assert x_shape == (8 * r.devices, 256)
        assert r.throughput == pytest.approx(r.batch / r.step_s)
        assert r.efficiency == pytest.approx((r.throughput / r.devices) / (base.throughput / base.devices))
    assert "weak scaling" in str(weak) and "per_device" in weak.to_csv()
    checked = weak.verify(STEP, *mlp_args(batch=8))  # the top pick compiles at its grown batch
    assert checked.compiled and checked.devices == weak.best().devices, checked


def token_step(params, batch):
    """A one-layer language model's SGD step: token ids [batch, seq] in, loss out."""
    import optax

    def loss(p):
        logits = p["embed"][batch["tokens"]] @ p["head"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()

    value, grads = jax.value_and_grad(loss)(params)
    return jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads), value


def test_tokens_are_counted_where_a_sequence_dim_is_recognizable():
    import jax.numpy as jnp

    params = {"embed": jax.ShapeDtypeStruct((128, 64), jnp.float32),
              "head": jax.ShapeDtypeStruct((64, 128), jnp.float32)}
    batch = {k: jax.ShapeDtypeStruct((16, 32), jnp.int32) for k in ("tokens", "labels")}
    advice = ss.advise(token_step, params, batch, cluster="h100-8", devices=[1, 2], progress=False)
    assert advice.batch.seq == 32
    for r in advice.usable():
        assert r.tokens_per_step == 16 * 32 and r.tokens_per_s == pytest.approx(r.throughput * 32)
        assert r.cost_per_million_tokens == pytest.approx(r.cost_per_step / (16 * 32) * 1e6)
    assert "tokens/s" in str(advice) and advice.verify(token_step, params, batch).compiled


def _row(devices, step_s, fits=True, batch=32, price=1.0):
    per_step = devices * step_s * price / 3600
    return Row(devices=devices, mesh_shape=(devices, 1), stages=1, batch=batch, tokens_per_step=None, step_s=step_s,
               throughput=batch / step_s, tokens_per_s=None, efficiency=None, fits=fits, peak_bytes=1.0,
               memory_budget=2.0, needs_bytes=None if fits else 3.0, cost_per_step=per_step,
               cost_per_million_samples=per_step / batch * 1e6, cost_per_million_tokens=None,
               status=RowStatus.PLANNED if fits else RowStatus.OVER_MEMORY, bound_s=None, search_s=0.0)


def _advice(rows, price=1.0):
    return Advice(rows=tuple(rows), cluster="toy", batch_mode=BatchMode.GLOBAL, memory_budget=2.0,
                  price_per_device_hour=price, batch=BatchInfo(32, (0,), ("x",), None))


def test_best_honors_its_goal():
    rows = [_row(1, 1.0), _row(2, 0.55), _row(4, 0.30), _row(8, 0.20), _row(16, 0.05, fits=False)]
    advice = _advice(rows)
    assert advice.best("fastest").devices == 8  # 16 would be faster but does not fit
    assert advice.best("cheapest").devices == 1  # 1 device-second per step beats 1.1, 1.2, 1.6
    assert advice.best(deadline=0.6).devices == 2  # the cheapest that makes the deadline
    assert advice.best("fastest", deadline=0.6).devices == 8
    assert advice.best(deadline=3.0, steps=10).devices == 4  # 10 steps in 3 s
    assert advice.best(budget=1.15 / 3600).devices == 2  # the fastest within the budget (2 x 0.55 s = 1.1 s)
    assert [r.devices for r in advice.pareto()] == [1, 2, 4, 8]
    with pytest.raises(ss.AdviseError, match=r"closest is 8 devices.*Raise the deadline"):
        advice.best(deadline=0.1)
    with pytest.raises(ss.AdviseError, match="not one of"):
        advice.best("greenest")
    with pytest.raises(ss.AdviseError, match="price_per_device_hour"):
        _advice(rows, price=None).best(budget=1.0)
    assert _advice(rows, price=None).best("cheapest").devices == 1  # device-seconds without a price


def test_a_model_that_fits_on_no_count_says_the_least_memory_it_needs():
    with pytest.raises(ss.AdviseError, match=r"no configuration fits in 10000 bytes \(9.77 KiB\) per device") as caught:
        ss.advise(STEP, *mlp_args(), cluster=TWO_NODES, devices=[1, 2], memory_budget=1e4, progress=False)
    advice = caught.value.advice  # the table comes with the error
    assert all(r.status is RowStatus.OVER_MEMORY and r.fits is False for r in advice.rows)
    assert all(r.step_s > 0 and r.needs_bytes > 1e4 for r in advice.rows)
    least = min(advice.rows, key=lambda r: r.needs_bytes)
    assert re.search(re.escape(f"the least any needs is {least.needs_bytes:.6g} bytes") + r".*"
                     + re.escape(f"{least.devices} devices, mesh {least.mesh}") + r".*Sweep more devices",
                     str(caught.value))
    with pytest.raises(ss.AdviseError, match="no configuration fits"):
        advice.best()


@pytest.mark.parametrize("kwargs, message", [
    (dict(devices=[16]), r"devices=16 is more than cluster 'two-nodes' holds .* use at most 8"),
    (dict(devices=[6]), r"devices=6 spans 1.5 nodes of 4 .* use 4 or 8 devices"),
    (dict(devices=[0]), r"not a positive whole number"),
    (dict(devices=[2], batch_mode="strong"), r"batch_mode='strong' is not one of"),
])
def test_bad_inputs_name_the_fix(kwargs, message):
    with pytest.raises(ss.AdviseError, match=message):
        ss.advise(STEP, *mlp_args(), cluster=TWO_NODES, progress=False, **kwargs)


def test_a_batch_no_count_divides_is_refused():
    with pytest.raises(ss.AdviseError, match=r"batch=7 .* divided by none of devices=\[2, 4\].*multiple of 2"):
        ss.advise(STEP, *mlp_args(batch=7), cluster=TWO_NODES, devices=[2, 4], progress=False)


def test_pruned_sweep_skips_only_meshes_that_cannot_win(full_sweep):
    pruned = ss.advise(STEP, *mlp_args(), cluster=TWO_NODES, devices=[1, 2, 4, 8], progress=False)
    full = {(r.devices, r.mesh_shape): r for r in full_sweep.rows}
    for r in pruned.rows:
        same = full[(r.devices, r.mesh_shape)]
        if r.status is RowStatus.DOMINATED:
            assert r.plan is None and r.step_s is None
            best = min(o.step_s for o in pruned.usable() if o.devices == r.devices)
            assert r.bound_s == best and same.step_s >= best * (1 - 1e-9)
        else:
            assert r.step_s == pytest.approx(same.step_s, rel=1e-9)
    for goal in ("fastest", "cheapest"):
        a, b = pruned.best(goal), full_sweep.best(goal)
        assert a.step_s == pytest.approx(b.step_s, rel=1e-9) and a.devices == b.devices
    assert pruned.verify(STEP, *mlp_args()).compiled


def test_outputs_people_read(full_sweep, tmp_path):
    text = str(full_sweep)
    assert "two-nodes" in text and "strong scaling" in text and "samples/s" in text
    md = full_sweep.to_markdown()
    assert md.count("\n| ") == len(full_sweep.rows) + 1 and "Fastest:" in md
    rows = list(csv.DictReader(line for line in io.StringIO(full_sweep.to_csv()) if not line.startswith("#")))
    assert [int(r["devices"]) for r in rows] == [r.devices for r in full_sweep.rows]
    assert float(rows[0]["step_s"]) == full_sweep.rows[0].step_s
    full_sweep.save(tmp_path / "advice.json", plans=tmp_path / "plans")
    data = json.loads((tmp_path / "advice.json").read_text())
    assert data["batch_mode"] == "global" and len(data["rows"]) == len(full_sweep.rows)
    loaded = ss.Plan.load(data["rows"][-1]["plan_path"])
    assert loaded.fingerprint() == full_sweep.rows[-1].plan.fingerprint()
    full_sweep.plot(tmp_path / "advice.png")
    assert (tmp_path / "advice.png").stat().st_size > 10_000
    with pytest.raises(ss.AdviseError, match=r"\.md, \.csv or \.json"):
        full_sweep.save(tmp_path / "advice.txt")


def test_the_chosen_row_compiles_and_runs(full_sweep):
    """The top pick's plan compiles on a fake mesh of its size and computes what jit does."""
    row = full_sweep.best("fastest")
    assert row.devices <= len(jax.devices())
    args = concrete_mlp_args(32, 256, layers=2, optimizer=__import__("optax").sgd(0.1, momentum=0.9))
    params, _, loss = row.auto(STEP)(*args)
    want_params, _, want_loss = jax.jit(STEP)(*args)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-4)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(want_params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def cli_target():
    """``shardsearch advise tests/test_advise.py:cli_target``: the step and its arguments."""
    return STEP, mlp_args()


def test_cli_writes_the_table_plot_and_plans(tmp_path):
    from typer.testing import CliRunner

    from shardsearch.cli import app

    out = CliRunner().invoke(app, [
        "advise", "tests/test_advise.py:cli_target", "--cluster", "h100-2x8-ib", "--devices", "1", "--devices", "2",
        "--devices", "4", "--out", str(tmp_path / "a.md"), "--out", str(tmp_path / "a.csv"), "--plot",
        str(tmp_path / "a.png"), "--plans", str(tmp_path / "plans"), "--verify", "--goal", "cheapest"])
    assert out.exit_code == 0, out.output
    assert "cheapest:" in out.output and "verify" in out.output and "compiled in" in out.output
    assert "strong scaling" in (tmp_path / "a.md").read_text() and (tmp_path / "a.png").exists()
    table = list(csv.DictReader(line for line in (tmp_path / "a.csv").read_text().splitlines()
                                if not line.startswith("#")))
    for r in table:  # piped output: the whole table, no number cut short to fit 80 columns
        assert re.search(rf"│ {r['mesh']} .*│ {float(r['step_s']) * 1e3:.4g} │", out.output), out.output
    assert len(list((tmp_path / "plans").glob("plan-*.json"))) >= 3
    bad = CliRunner().invoke(app, ["advise", "tests/test_advise.py:cli_target", "--cluster", "h100-8",
                                   "--devices", "16"])
    assert bad.exit_code == 2 and "use at most 8" in bad.output


def test_price_per_device_hour_is_optional_and_not_a_planning_figure():
    from shardsearch import cache
    from shardsearch.config import SearchConfig
    from shardsearch.trace import program_hash, trace

    d = TWO_NODES.to_dict()
    assert d["price_per_device_hour"] == 2.0 and Cluster.from_dict(d).price_per_device_hour == 2.0
    cheaper = Cluster.from_dict({**d, "price_per_device_hour": 1.0})
    assert cheaper == TWO_NODES and hash(cheaper) == hash(TWO_NODES)  # plans alike
    graph = trace(STEP, mlp_args())
    keys = {cache.plan_key(graph, program_hash(graph), ss.plan(STEP, *mlp_args(), mesh=(2,), cluster=c).mesh, c, 1e9,
                           SearchConfig()) for c in (cheaper, TWO_NODES)}
    assert len(keys) == 1
    with pytest.raises(ss.ClusterError, match="price_per_device_hour"):
        Cluster.from_dict({**d, "price_per_device_hour": -1})
    assert {Cluster.load(n).price_per_device_hour for n in ("h100-8", "h100-8x8-ib")} == {12.29}
    assert Cluster.load("h100-8").capacity == 8 and Cluster.load("h100-8x8-ib").capacity == 64


def test_verify_says_why_it_skips(full_sweep):
    import dataclasses

    big = dataclasses.replace(full_sweep.rows[-1], devices=16)  # more devices than this machine has
    skipped = full_sweep.verify(STEP, *mlp_args(), row=big)
    assert not skipped.compiled and "xla_force_host_platform_device_count=16" in skipped.reason
    assert "skipped" in str(skipped)


def module_step(params, opt_state, batch):
    """STEP as a module-level function: it pickles, so worker processes can get it."""
    return STEP(params, opt_state, batch)


@pytest.mark.slow
def test_workers_plan_the_same_rows(full_sweep):
    """Two spawned worker processes share the counts and find the same rows."""
    shared = ss.advise(module_step, *mlp_args(), cluster=TWO_NODES, devices=[1, 2, 4, 8], prune=False,
                       progress=False, workers=2)
    assert [(r.devices, r.mesh_shape) for r in shared.rows] == [(r.devices, r.mesh_shape) for r in full_sweep.rows]
    for a, b in zip(shared.rows, full_sweep.rows):
        assert a.step_s == pytest.approx(b.step_s, rel=1e-9) and a.plan.fingerprint() == b.plan.fingerprint()


def test_workers_need_a_step_that_pickles():
    import importlib.util

    if importlib.util.find_spec("cloudpickle") is not None:
        pytest.skip("cloudpickle pickles closures")
    with pytest.raises(ss.AdviseError, match=r"does not pickle .* Pass workers=1, install cloudpickle"):
        ss.advise(STEP, *mlp_args(), cluster=TWO_NODES, devices=[1, 2], progress=False, workers=2)


def test_progress_reports_every_configuration():
    from shardsearch.advise.sweep import SweepSettings, run_sweep
    from shardsearch.config import SearchConfig

    seen = []
    settings = SweepSettings(TWO_NODES, BatchMode.GLOBAL, TWO_NODES.memory_bytes, SearchConfig())
    advice = run_sweep(STEP, mlp_args(), counts=(1, 2, 4), settings=settings,
                       progress=lambda what, done, total: seen.append((what, done, total)))
    assert [d for _, d, _ in seen] == [0, 1, 2, 3, 4] and {t for _, _, t in seen} == {4} == {len(advice.rows)}
    assert seen[0][0] == "1 devices, mesh 1x1" and seen[-1][0] == "done"


def test_a_pipelined_configuration_is_one_more_row():
    """stages=(2,) adds the row ss.plan(pipeline=2) gives on the (nodes, per node) mesh."""
    args = mlp_args(layers=4)
    advice = ss.advise(STEP, *args, cluster=TWO_NODES, devices=[4], stages=(2,), progress=False)
    piped = [r for r in advice.rows if r.stages == 2]
    assert len(piped) == 1 and piped[0].mesh == "1x4 in 2 stages" and piped[0].plan.pipeline.num_stages == 2
    alone = ss.plan(STEP, *args, mesh=(1, 4), cluster=TWO_NODES, pipeline=2)
    assert piped[0].step_s == pytest.approx(alone.predicted.total_s, rel=1e-9)
    assert piped[0].throughput == pytest.approx(32 / piped[0].step_s)
    assert advice.verify(STEP, *args, row=piped[0]).compiled
    one_layer = ss.advise(STEP, *mlp_args(layers=1), cluster=TWO_NODES, devices=[2], stages=(2,), progress=False)
    assert all(r.stages == 1 for r in one_layer.rows) and one_layer.notes  # says why there is no such row
    assert "not planned: 2 devices in 2 pipeline stages" in one_layer.to_markdown()


def test_a_row_over_memory_is_the_plan_ss_plan_gives_without_a_budget():
    """Over the device's memory on a GPU cluster (which prices overlap), a row is the plan
    with every collective in full, as ss.plan plans a step that cannot fit the device."""
    small = Cluster.from_dict({**Cluster.load("h100-8").to_dict(), "name": "small-h100", "memory_bytes": 1e5})
    assert small.overlap_contention is not None
    with pytest.raises(ss.AdviseError, match="no configuration fits") as caught:
        ss.advise(STEP, *mlp_args(), cluster=small, devices=[2, 4], progress=False, prune=False)
    for r in caught.value.advice.rows:
        alone = ss.plan(STEP, *mlp_args(), mesh=r.mesh_shape, cluster=small, memory_budget=1e15)
        assert r.status is RowStatus.OVER_MEMORY and r.step_s == pytest.approx(alone.predicted.total_s, rel=1e-9)
        assert r.plan.flat_in_specs == alone.flat_in_specs
