"""Cluster presets: every bundled profile loads, states its figures and sources, and plans;
a malformed profile raises ClusterError naming the key."""

import json

import optax
import pytest

import shardsearch as ss
from cost_model import Cluster, ClusterError, MeshShape, preset_names
from tests.helpers import abstract_mlp_args, make_train_step

# The issue's list: 8xA100 and 8xH100 on NVLink, 2 and 8 nodes of 8xH100 on 400 Gb/s
# InfiniBand, the Alpa testbed (8xV100 nodes, 25 Gb/s Ethernet), a TPU slice, a CPU host;
# plus the slow two-node preset the benchmarks use.
EXPECTED = {"a100-8", "h100-8", "h100-2x8-ib", "h100-8x8-ib", "v100-8x8-eth", "tpu-v5e-256", "cpu-host", "2x4-slow"}


def test_the_issues_presets_exist():
    assert EXPECTED <= set(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_preset_loads_with_figures_and_sources(name):
    c = Cluster.load(name)
    assert c.name == name and c.description and c.sources
    assert 1e9 <= c.peak_flops <= 1e16 and 1e8 <= c.hbm_bandwidth <= 1e13 and 1e9 <= c.memory_bytes <= 1e12
    assert c.intra_node.bandwidth >= c.inter_node.bandwidth  # the network is never faster than the node
    assert 0 < c.intra_node.latency <= c.inter_node.latency < 1e-3
    assert Cluster.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("name", sorted(EXPECTED - {"2x4-slow"}))
def test_preset_states_peak_per_dtype(name):
    c = Cluster.load(name)
    peaks = dict(c.peak_flops_by_dtype)
    assert "float32" in peaks or "float16" in peaks
    assert c.peak_flops == max(v for k, v in peaks.items() if k in ("bfloat16", "float16", "float32"))
    assert c.peak_flops_for("float32") == peaks.get("float32", c.peak_flops)


def test_preset_figures_match_their_sources():
    two, eight = Cluster.load("h100-2x8-ib"), Cluster.load("h100-8x8-ib")
    assert (two.num_nodes, eight.num_nodes) == (2, 8)
    assert two.inter_node.bandwidth == eight.inter_node.bandwidth == 400e9 / 8  # 400 Gb/s per GPU
    assert eight.inter_node.latency > two.inter_node.latency
    alpa = Cluster.load("v100-8x8-eth")
    assert alpa.inter_node.bandwidth == 25e9 / 8 / 8  # 25 Gb/s per node, shared by 8 GPUs
    assert alpa.memory_bytes == 16e9 and "bfloat16" not in dict(alpa.peak_flops_by_dtype)
    tpu = Cluster.load("tpu-v5e-256")
    assert tpu.devices_per_node == 256 and tpu.peak_flops == 197e12
    # one ICI domain: a 16x16 mesh never leaves the slice
    assert not tpu.crosses_nodes(MeshShape(("data", "model"), (16, 16)), ("data", "model"))


@pytest.mark.parametrize("name", ["h100-8x8-ib", "v100-8x8-eth", "tpu-v5e-256", "cpu-host"])
def test_new_presets_plan(name):
    args = abstract_mlp_args(256, 256, layers=2)
    plan = ss.plan(make_train_step(optax.adam(1e-3)), *args, mesh=(2, 4), cluster=name)
    assert plan.predicted.total_s > 0 and plan.predicted.total_s < float("inf")


def test_slow_network_costs_more_than_infiniband():
    """Same program and 64-device mesh: data parallel across Ethernet-joined nodes is dearer."""
    args = abstract_mlp_args(1024, 512, layers=2)
    step = make_train_step(optax.adam(1e-3))
    ib, eth = (ss.plan(step, *args, mesh=(8, 8), cluster=c).predicted for c in ("h100-8x8-ib", "v100-8x8-eth"))
    assert eth.comm_s > ib.comm_s


# ---- malformed profiles -----------------------------------------------------------------

def _valid():
    return json.loads(json.dumps(Cluster.load("h100-2x8-ib").to_dict()))


def _without(key):
    def drop(d):
        del d[key]
    return drop


def _setter(path, value):
    def set_(d):
        node = d
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return set_


MALFORMED = [
    (_without("peak_flops"), r"missing 'peak_flops'"),
    (_without("intra_node"), r"missing 'intra_node'"),
    (_setter(["memory_bytes"], "80GB"), r"'memory_bytes' must be a number"),
    (_setter(["devices_per_node"], 0), r"'devices_per_node' must be a positive integer"),
    (_setter(["hbm_bandwidth"], -1.0), r"'hbm_bandwidth' must be a finite positive"),
    (_setter(["inter_node", "bandwidth"], 0), r"'inter_node'.bandwidth must be a finite positive"),
    (_setter(["intra_node", "latency"], "5us"), r"'intra_node'.latency must be a number"),
    (_setter(["intra_node", "speed"], 1.0), r"'intra_node' has unknown key 'speed'"),
    (_setter(["peak_flop"], 1.0), r"unknown key 'peak_flop'"),
    (_setter(["num_nodes"], 1.5), r"'num_nodes' must be a positive integer"),
    (_setter(["num_nodes"], 0), r"'num_nodes' must be a positive integer"),
    (_setter(["peak_flops_by_dtype"], [1e15]), r"'peak_flops_by_dtype' must be a dict"),
    (_setter(["peak_flops_by_dtype", "bf16"], 1e15), r"'peak_flops_by_dtype' has unknown dtype 'bf16'"),
    (_setter(["peak_flops_by_dtype", "float32"], "fast"), r"'peak_flops_by_dtype.float32' must be a number"),
    (_setter(["collectives"], {"allreduce": {}}), r"'collectives' has unknown collective 'allreduce'"),
    (_setter(["collectives"], {"all-reduce": 1.0}), r"'collectives.all-reduce' must be a dict"),
    (_setter(["collectives"], {"all-reduce": {"intra": {}}}), r"'collectives.all-reduce' has unknown key 'intra'"),
    (_setter(["collectives"], {"all-reduce": {"intra_node": {"bandwidth": 1e9}}}),
     r"'collectives.all-reduce.intra_node' is missing 'latency'"),
    (_setter(["measured"], [1, 2]), r"'measured' must be a dict"),
    (_setter(["sources"], "datasheet"), r"'sources' must be a list of strings"),
]


@pytest.mark.parametrize("break_it,message", MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_profile_names_the_key(tmp_path, break_it, message):
    d = _valid()
    break_it(d)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ClusterError, match=message) as err:
        Cluster.load(path)
    assert "broken.json" in str(err.value)  # the file is named too
    with pytest.raises(ClusterError, match=message):
        ss.auto(lambda x: x, mesh=(2, 4), cluster=str(path))


def test_measured_must_be_plain_json():
    with pytest.raises(ClusterError, match="'measured' must hold only JSON data"):
        Cluster.from_dict({**_valid(), "measured": {"t": float("nan")}})
