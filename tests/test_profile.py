"""The profiler: least-squares fits, the profile file, the CLI, and the round trip into planning.

The CPU timings are whatever this machine gives; what is checked is the fit (against
synthetic data with known answers, and as the least-squares optimum of the real timings),
the file format, and that a written profile steers the planner's cost.
"""

import io
import json
import math
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from typer.testing import CliRunner

import shardsearch as ss
from cost_model import Cluster, CollectiveKind, Link, ProfileError, collective_time, profile
from cost_model.mesh import MeshShape
from cost_model.profile import Sweep, charged_bytes, fit_line, fit_link, fit_profile
from shardsearch.cli import app
from shardsearch.runtime.launch import launch
from tests.helpers import abstract_mlp_args, make_train_step

KINDS = [k.value for k in CollectiveKind]
ROOT = Path(__file__).resolve().parents[1]


# ---- fitting ----------------------------------------------------------------------------

def test_fit_line_recovers_exact_line():
    x = np.array([1e4, 1e5, 1e6, 1e7])
    assert fit_line(x, 3e-5 + x / 2e9) == pytest.approx((3e-5, 1 / 2e9), rel=1e-9)


def test_fit_line_weights_relative_error():
    # +-5% noise: a plain least squares would let the 1e7 point swamp the intercept
    x = np.array([1e3, 1e4, 1e5, 1e6, 1e7])
    t = (2e-5 + x / 1e9) * np.array([1.05, 0.95, 1.05, 0.95, 1.05])
    intercept, slope = fit_line(x, t)
    assert intercept == pytest.approx(2e-5, rel=0.1) and 1 / slope == pytest.approx(1e9, rel=0.1)


def test_fit_line_clips_negative_intercept_to_a_line_through_the_origin():
    x = np.array([1.0, 2.0, 4.0])
    intercept, slope = fit_line(x, x * 3.0 - 0.5)
    assert intercept == 0.0 and slope > 0


def test_fit_line_rejects_flat_and_single_size_data():
    with pytest.raises(ProfileError, match="did not grow with the bytes"):
        fit_line([1e3, 1e6], [2e-3, 1e-3], what="memory pass", amount="bytes")
    with pytest.raises(ProfileError, match="at least two sizes"):
        fit_line([1e3, 1e3], [1e-3, 1.1e-3])


def test_charged_bytes_is_the_cost_models_ring_factor():
    assert charged_bytes("all-reduce", 4, 400) == pytest.approx(2 * 3 / 4 * 400)
    assert charged_bytes("all-gather", 2, 400) == pytest.approx(200)
    assert charged_bytes("collective-permute", 8, 400) == pytest.approx(400)


def _synthetic_measured(truth: Cluster, mesh: MeshShape, cross_axes=()):
    """Timings that ``truth`` predicts exactly, in the layout profile() writes."""
    matmul = [{"dtype": dt, "n": n, "flops": 2.0 * n**3, "seconds": 1e-5 + 2.0 * n**3 / flops}
              for dt, flops in truth.peak_flops_by_dtype for n in (256, 512, 1024)]
    memory = [{"nbytes": b, "seconds": 5e-6 + b / truth.hbm_bandwidth} for b in (1e6, 4e6, 16e6)]
    coll = [{"kind": k, "axes": [a], "group_size": mesh.axis_size(a), "crosses_nodes": a in cross_axes,
             "nbytes": b, "seconds": collective_time(truth, mesh, k, a, b)}
            for a in mesh.axis_names for k in KINDS for b in (1e4, 1e5, 1e6)]
    return {"matmul": matmul, "memory": memory, "collectives": coll}


def test_fit_profile_recovers_known_figures():
    truth = Cluster(name="t", devices_per_node=4, peak_flops=1e12, memory_bytes=1e9,
                    peak_flops_by_dtype={"float32": 5e11, "bfloat16": 1e12}, hbm_bandwidth=2e11,
                    intra_node=Link(1e11, 5e-6), inter_node=Link(1e10, 3e-5))
    mesh = MeshShape(("data", "model"), (2, 4))  # data spans the two nodes, model stays inside
    fitted = fit_profile(_synthetic_measured(truth, mesh, cross_axes=("data",)), devices_per_node=4,
                         memory_bytes=1e9, num_nodes=2)
    assert fitted.peak_flops == pytest.approx(1e12) and fitted.hbm_bandwidth == pytest.approx(2e11)
    assert dict(fitted.peak_flops_by_dtype) == pytest.approx({"float32": 5e11, "bfloat16": 1e12})
    for got, want in ((fitted.intra_node, truth.intra_node), (fitted.inter_node, truth.inter_node)):
        assert (got.bandwidth, got.latency) == pytest.approx((want.bandwidth, want.latency), rel=1e-6)
    assert {(k, s) for k, s, _ in fitted.collectives} == {(k, s) for k in KINDS for s in ("intra_node", "inter_node")}
    assert fitted.collective_link("all-to-all", True).bandwidth == pytest.approx(1e10)


def test_fit_profile_single_node_reuses_the_intra_node_link():
    truth = Cluster(name="t", devices_per_node=8, peak_flops=1e12, memory_bytes=1e9,
                    peak_flops_by_dtype={"float32": 1e12}, intra_node=Link(1e11, 5e-6), inter_node=Link(1, 1))
    fitted = fit_profile(_synthetic_measured(truth, MeshShape(("data",), (8,))), devices_per_node=8, memory_bytes=1e9)
    assert fitted.inter_node == fitted.intra_node
    assert fitted.intra_node.bandwidth == pytest.approx(1e11)


def test_fit_profile_skips_a_kind_whose_times_are_flat():
    truth = Cluster(name="t", devices_per_node=8, peak_flops=1e12, memory_bytes=1e9,
                    peak_flops_by_dtype={"float32": 1e12}, intra_node=Link(1e11, 5e-6), inter_node=Link(1, 1))
    measured = _synthetic_measured(truth, MeshShape(("data",), (8,)))
    for row in measured["collectives"]:
        if row["kind"] == "all-to-all":
            row["seconds"] = 1e-3 * 1e4 / row["nbytes"]  # larger messages faster: noise, not a link
    fitted = fit_profile(measured, devices_per_node=8, memory_bytes=1e9)
    assert ("all-to-all", "intra_node") not in {(k, s) for k, s, _ in fitted.collectives}
    assert ("all-reduce", "intra_node") in {(k, s) for k, s, _ in fitted.collectives}
    assert "No Link of its own for all-to-all (intra_node)" in fitted.description
    assert fitted.collective_link("all-to-all", False) == fitted.intra_node  # falls back to the pooled one


def test_fit_profile_rejects_a_file_without_timings():
    with pytest.raises(ProfileError, match="'measured' section.*shardsearch profile"):
        fit_profile({"matmul": []}, devices_per_node=8, memory_bytes=1e9)


# ---- measuring on the fake CPU mesh -----------------------------------------------------

@pytest.fixture(scope="module")
def cli_profile(tmp_path_factory):
    """`shardsearch profile --mesh 2x4 --quick` on the 8 fake CPU devices, timed."""
    path = tmp_path_factory.mktemp("profile") / "cpu-2x4.json"
    start = time.perf_counter()
    res = CliRunner().invoke(app, ["profile", "--mesh", "2x4", "--out", str(path), "--quick"])
    return path, res, time.perf_counter() - start


def test_cli_profile_writes_a_loadable_profile(cli_profile):
    path, res, seconds = cli_profile
    assert res.exit_code == 0, res.output
    assert seconds < 120, f"quick profile took {seconds:.0f} s"
    assert f"--cluster {path}" in res.output and "all-reduce (intra-node)" in res.output
    data = json.loads(path.read_text())
    assert data["name"] == "cpu-2x4" and data["devices_per_node"] == 8 and data["num_nodes"] == 1
    assert "Only the intra_node link was measured; inter_node repeats its fit" in data["description"]
    cluster = Cluster.load(path)
    assert cluster == Cluster.from_dict(data) and cluster.to_dict() == data
    assert set(data["peak_flops_by_dtype"]) == {"float32", "bfloat16"}
    assert cluster.peak_flops == max(data["peak_flops_by_dtype"].values())


def test_profile_file_holds_every_measurement(cli_profile):
    m = json.loads(cli_profile[0].read_text())["measured"]
    assert m["platform"] == "cpu" and m["mesh"] == {"axis_names": ["data", "model"], "axis_sizes": [2, 4]}
    assert {(r["dtype"], r["n"]) for r in m["matmul"]} == {(d, n) for d in ("float32", "bfloat16")
                                                           for n in (128, 256, 512)}
    cells = {(r["kind"], r["axes"][0], r["group_size"]) for r in m["collectives"]}
    assert cells == {(k, a, n) for k in KINDS for a, n in (("data", 2), ("model", 4))}
    assert len(m["collectives"]) == len(cells) * 3  # three message sizes each
    assert all(r["seconds"] > 0 and not r["crosses_nodes"] for r in m["collectives"])


def test_profile_file_is_its_own_least_squares_fit(cli_profile):
    cluster = Cluster.load(cli_profile[0])
    refit = fit_profile(cluster.measured, devices_per_node=8, memory_bytes=cluster.memory_bytes,
                        name=cluster.name, num_nodes=1)
    assert refit == cluster
    # the written Link is the optimum of the relative-error objective: nudging it is worse
    rows = cluster.measured["collectives"]
    x = np.array([charged_bytes(r["kind"], r["group_size"], r["nbytes"]) for r in rows])
    t = np.array([r["seconds"] for r in rows])

    def loss(bw, lat):
        return float(np.sum(((lat + x / bw - t) / t) ** 2))

    bw, lat = cluster.intra_node.bandwidth, cluster.intra_node.latency
    best = loss(bw, lat)
    for scale in (0.95, 1.05):
        assert loss(bw * scale, lat) > best
        if lat > 0:
            assert loss(bw, lat * scale) > best


def test_profile_round_trip_steers_the_plan(cli_profile):
    """Plan an MLP with the written profile and with a copy whose links are twice as slow
    (half the bandwidth, twice the latency: every collective takes exactly twice as long)."""
    fast = Cluster.load(cli_profile[0])
    d = fast.to_dict()

    def slower(link):
        return {"bandwidth": link["bandwidth"] / 2, "latency": link["latency"] * 2}

    # the fitted per-kind Links price their collectives too (Cluster.collective_link)
    slow = Cluster.from_dict({**d, **{k: slower(d[k]) for k in ("intra_node", "inter_node")},
                              "collectives": {kind: {scope: slower(link) for scope, link in scopes.items()}
                                              for kind, scopes in d.get("collectives", {}).items()}})
    args = abstract_mlp_args(4096, 1024, layers=2)
    p_fast, p_slow = (ss.plan(make_train_step(optax.adam(1e-3)), *args, mesh=(2, 4), cluster=c)
                      for c in (str(cli_profile[0]), slow))  # cluster= takes the file's path
    assert p_fast.cluster == fast.name
    f, s = p_fast.predicted, p_slow.predicted
    assert f.comm_s > 0 and f.compute_s > 0  # the plan communicates, so the links matter
    assert s.total_s >= f.total_s * (1 - 1e-6)  # no plan got cheaper
    assert s.total_s <= (f.total_s + f.comm_s) * (1 + 1e-3)  # keeping the fast plan would cost this
    if _layouts(p_fast) == _layouts(p_slow):  # the same plan, operator by operator
        assert s.comm_s == pytest.approx(2 * f.comm_s, rel=1e-6)
        assert s.compute_s == pytest.approx(f.compute_s, rel=1e-9)
    else:  # the planner moved to a plan that communicates no more (by optimality of both)
        assert s.comm_s <= 2 * f.comm_s * (1 + 1e-6)


def _layouts(plan):
    return plan.node_strategy, plan.node_out_specs, plan.node_operand_specs, plan.flat_in_specs


def test_cli_profile_bad_mesh_exits_2():
    res = CliRunner().invoke(app, ["profile", "--mesh", "4x4", "--out", "never.json", "--quick"])
    assert res.exit_code == 2 and "needs 16 devices" in res.output and "XLA_FLAGS" in res.output


def test_python_api_with_a_custom_sweep_and_a_1d_mesh(tmp_path):
    mesh = jax.make_mesh((4,), ("x",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:4])
    sweep = Sweep(matmul_sizes=(64, 256), memory_bytes=(1 << 16, 1 << 22), message_bytes=(1 << 12, 1 << 16, 1 << 20),
                  dtypes=("float32",), repeats=3)
    path = tmp_path / "p.json"
    cluster = profile(mesh, path, sweep=sweep, name="tiny", show_progress=False)
    assert Cluster.load(path) == cluster and cluster.name == "tiny"
    assert cluster.devices_per_node == 4 and dict(cluster.peak_flops_by_dtype).keys() == {"float32"}
    assert len(cluster.measured["collectives"]) == len(KINDS) * 3
    assert all(math.isfinite(v) and v > 0 for v in (cluster.intra_node.bandwidth, cluster.hbm_bandwidth))


def test_profile_rejects_bad_input():
    with pytest.raises(ProfileError, match=r"\(2, 4\)"):
        profile("2x4", show_progress=False)
    sweep = Sweep(matmul_sizes=(64,), memory_bytes=(1024,), message_bytes=(1024,), dtypes=("float128",))
    with pytest.raises(ProfileError, match="'float128'"):
        profile((2,), sweep=sweep, show_progress=False)


# A worker of a 2-process run: each process profiles the (2, 4) mesh over all 8 devices.
MULTIHOST_WORKER = """
import sys
import jax
from shardsearch.runtime.distributed import initialize_from_env
initialize_from_env()
from cost_model import profile
c = profile((2, 4), sys.argv[1], quick=True, show_progress=False)
print("fitted", c.intra_node, c.inter_node, dict(c.peak_flops_by_dtype))
"""


@pytest.mark.slow
def test_two_processes_measure_the_inter_node_link(tmp_path):
    """2 processes x 4 CPU devices: the 'data' axis crosses processes, so its collectives
    are the inter-node link; both processes fit the same profile; process 0 writes it."""
    out, path = io.StringIO(), tmp_path / "two-nodes.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    code = launch([sys.executable, "-c", MULTIHOST_WORKER, str(path)], 2, local_devices=4, out=out, env=env,
                  timeout_s=300)
    assert code == 0, out.getvalue()[-3000:]
    fitted = sorted(line[4:] for line in out.getvalue().splitlines() if line[4:].startswith("fitted "))
    assert len(fitted) == 2 and fitted[0] == fitted[1]  # the same timings, hence the same figures
    cluster = Cluster.load(path)
    assert (cluster.devices_per_node, cluster.num_nodes) == (4, 2)
    crossing = {r["axes"][0] for r in cluster.measured["collectives"] if r["crosses_nodes"]}
    assert crossing == {"data"}
    assert cluster.inter_node != cluster.intra_node
    assert "Only the" not in cluster.description  # both links were measured
    assert fitted[0] == f"fitted {cluster.intra_node} {cluster.inter_node} {dict(cluster.peak_flops_by_dtype)}"
