"""Tests of the cost_model leaf package: clusters, collectives, compute, resharding."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import draw_mesh_and_two_specs

from cost_model import (
    Cluster, ClusterError, Collective, CollectiveKind, Link, MeshShape, ShardsearchError,
    collective_cost, collective_time, compute_time, preset_names, reshard_collectives,
    reshard_cost, reshard_matrix,
)

AR, AG, RS, A2A = (CollectiveKind.ALL_REDUCE, CollectiveKind.ALL_GATHER,
                   CollectiveKind.REDUCE_SCATTER, CollectiveKind.ALL_TO_ALL)
MESH_2x4 = MeshShape(("data", "model"), (2, 4))
MESH_1D = MeshShape(("x",), (4,))


def toy_cluster(devices_per_node=4):
    """Round numbers so that every expected time can be computed by hand."""
    return Cluster(name="toy", devices_per_node=devices_per_node, peak_flops=1000.0,
                   memory_bytes=1e9, intra_node=Link(100.0, 1.0), inter_node=Link(10.0, 5.0))


def valid_dict(**changes):
    d = {"devices_per_node": 8, "peak_flops": 9.89e14, "memory_bytes": 8e10,
         "intra_node": {"bandwidth": 4.5e11, "latency": 5e-6},
         "inter_node": {"bandwidth": 5e10, "latency": 1e-5}}
    d.update(changes)
    return d


# ---- collectives: closed forms --------------------------------------------------------

def test_collective_formulas_intra_node():
    c = toy_cluster()  # model axis (n=4) stays inside a node: bw 100, lat 1
    assert collective_time(c, MESH_2x4, AR, ("model",), 400) == pytest.approx(2 * 3 / 4 * 4 + 1)  # 7
    assert collective_time(c, MESH_2x4, AG, ("model",), 400) == pytest.approx(3 / 4 * 4 + 1)  # 4
    assert collective_time(c, MESH_2x4, RS, ("model",), 400) == pytest.approx(4.0)
    assert collective_time(c, MESH_2x4, A2A, ("model",), 400) == pytest.approx(4.0)


def test_collective_formulas_inter_node():
    c = toy_cluster()  # data axis (n=2) spans both nodes: bw 10, lat 5
    assert collective_time(c, MESH_2x4, AR, ("data",), 400) == pytest.approx(40 + 5)
    assert collective_time(c, MESH_2x4, AG, ("data",), 400) == pytest.approx(20 + 5)
    assert collective_time(c, MESH_2x4, RS, "data", 400) == pytest.approx(25.0)
    assert collective_time(c, MESH_2x4, A2A, ("data",), 400) == pytest.approx(25.0)
    # both axes: n=8 on 2 nodes of 4: reduce-scatter and all-gather inside the node at
    # bw 100, all-reduce of a quarter of the buffer across the nodes at bw 10 (test_topology)
    assert collective_time(c, MESH_2x4, AR, ("data", "model"), 400) == pytest.approx(2 * 3 / 4 * 4 + 2 * 1 / 8 * 40 + 5)
    assert collective_time(c, MESH_2x4, CollectiveKind.PERMUTE, ("data",), 400) == pytest.approx(45.0)


def test_collective_trivial_groups_are_free():
    c = toy_cluster()
    assert collective_time(c, MESH_2x4, AR, (), 1e9) == 0.0
    assert collective_time(c, MeshShape(("a", "b"), (1, 4)), AR, ("a",), 1e9) == 0.0


def test_collective_cost_matches_time_and_accepts_string_kind():
    c = toy_cluster()
    assert collective_cost(c, MESH_2x4, Collective(AG, ("model",), 400)) == pytest.approx(4.0)
    assert collective_time(c, MESH_2x4, "all-reduce", ("model",), 400) == pytest.approx(7.0)


def test_collective_unknown_axis_names_it():
    with pytest.raises(ShardsearchError, match="'nope'"):
        collective_time(toy_cluster(), MESH_2x4, AR, ("nope",), 1)


# ---- topology -------------------------------------------------------------------------

def test_topology_four_per_node():
    c = toy_cluster(4)
    assert c.crosses_nodes(MESH_2x4, ("data",))
    assert not c.crosses_nodes(MESH_2x4, ("model",))
    assert c.crosses_nodes(MESH_2x4, ("data", "model"))
    assert c.link_for(MESH_2x4, ("data",)) == c.inter_node
    assert c.link_for(MESH_2x4, ("model",)) == c.intra_node


def test_topology_eight_per_node_never_crosses():
    c = toy_cluster(8)
    for axes in [("data",), ("model",), ("data", "model")]:
        assert not c.crosses_nodes(MESH_2x4, axes)
        assert c.link_for(MESH_2x4, axes) == c.intra_node


def test_topology_two_per_node():
    c = toy_cluster(2)
    assert c.crosses_nodes(MESH_2x4, ("model",))  # group {0,1,2,3} spans nodes 0 and 1
    assert c.crosses_nodes(MESH_2x4, ("data",))
    assert c.link_for(MESH_2x4, ("model",)) == c.inter_node


# ---- Cluster.from_dict / load -----------------------------------------------------------

def test_from_dict_defaults_hbm_bandwidth():
    c = Cluster.from_dict(valid_dict())
    assert c.hbm_bandwidth == pytest.approx(9.89e12)
    assert c.intra_node == Link(4.5e11, 5e-6)


def test_from_dict_missing_key():
    d = valid_dict()
    del d["peak_flops"]
    with pytest.raises(ClusterError, match=r"missing 'peak_flops'.*FLOP/s.*add it"):
        Cluster.from_dict(d)


def test_from_dict_missing_link_key():
    with pytest.raises(ClusterError, match=r"intra_node.*missing 'latency'"):
        Cluster.from_dict(valid_dict(intra_node={"bandwidth": 1e9}))


def test_from_dict_negative_bandwidth():
    with pytest.raises(ClusterError, match=r"inter_node'\.bandwidth.*positive.*-5"):
        Cluster.from_dict(valid_dict(inter_node={"bandwidth": -5.0, "latency": 1e-5}))


def test_from_dict_zero_peak_flops():
    with pytest.raises(ClusterError, match=r"'peak_flops'.*positive.*got 0"):
        Cluster.from_dict(valid_dict(peak_flops=0))


def test_from_dict_wrong_type():
    with pytest.raises(ClusterError, match=r"'memory_bytes'.*number.*'80GB'.*str"):
        Cluster.from_dict(valid_dict(memory_bytes="80GB"))
    with pytest.raises(ClusterError, match=r"devices_per_node.*integer.*2\.5"):
        Cluster.from_dict(valid_dict(devices_per_node=2.5))
    with pytest.raises(ClusterError, match=r"intra_node.*must be a dict"):
        Cluster.from_dict(valid_dict(intra_node=4.5e11))


def test_from_dict_unknown_key():
    with pytest.raises(ClusterError, match=r"unknown key 'peak_flop'.*allowed keys.*peak_flops"):
        Cluster.from_dict(valid_dict(peak_flop=1.0))


@pytest.mark.parametrize("name", ["a100-8", "h100-8", "2x4-slow"])
def test_presets_load_and_round_trip(name):
    c = Cluster.load(name)
    assert c.name == name
    assert c.description and c.sources
    again = Cluster.from_dict(c.to_dict())
    assert again == c and again.to_dict() == c.to_dict()


def test_preset_figures():
    assert {"a100-8", "h100-8", "2x4-slow"} <= set(preset_names())
    assert Cluster.load(None) == Cluster.load("h100-8")
    slow = Cluster.load("2x4-slow")
    assert slow.devices_per_node == 4 and slow.inter_node.bandwidth == 3.125e9
    assert Cluster.load("h100-8").peak_flops == 989e12


def test_load_passes_cluster_through():
    c = toy_cluster()
    assert Cluster.load(c) is c


def test_load_unknown_name_lists_presets():
    with pytest.raises(ClusterError, match=r"'h100-9'.*a100-8.*h100-8"):
        Cluster.load("h100-9")


def test_load_from_json_path(tmp_path):
    path = tmp_path / "mybox.json"
    path.write_text(json.dumps(valid_dict(hbm_bandwidth=1e12)))
    c = Cluster.load(path)
    assert c.name == "mybox" and c.hbm_bandwidth == 1e12
    assert Cluster.load(str(path)) == c


def test_load_malformed_json_names_path(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{ not json")
    with pytest.raises(ClusterError, match="broken.json.*not valid JSON"):
        Cluster.load(path)


def test_load_invalid_profile_names_path_and_key(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(valid_dict(peak_flops=-1)))
    with pytest.raises(ClusterError, match="bad.json.*peak_flops"):
        Cluster.load(path)


def test_load_missing_file_names_path(tmp_path):
    with pytest.raises(ClusterError, match="nothere.json"):
        Cluster.load(tmp_path / "nothere.json")


# ---- compute ----------------------------------------------------------------------------

def test_compute_time_is_roofline():
    c = Cluster.from_dict(valid_dict(peak_flops=1000.0, hbm_bandwidth=10.0))
    assert compute_time(c, 5000, 20) == pytest.approx(5.0)  # compute bound
    assert compute_time(c, 1000, 100) == pytest.approx(10.0)  # memory bound


# ---- resharding ---------------------------------------------------------------------------

def test_reshard_identical_is_empty():
    assert reshard_collectives(MESH_1D, (8, 16), 4, (("x",), ()), (("x",), ())) == []
    assert reshard_cost(toy_cluster(), MESH_1D, (8, 16), 4, (("x",), ()), (("x",), ())) == 0.0


def test_reshard_rank0_is_empty():
    assert reshard_collectives(MESH_1D, (), 4, (), ()) == []


def test_reshard_replicated_to_sharded_is_free():
    assert reshard_collectives(MESH_1D, (8, 16), 4, ((), ()), (("x",), ())) == []
    assert reshard_collectives(MESH_2x4, (8, 16), 4, (("data",), ()), (("data", "model"), ())) == []


def test_reshard_sharded_to_replicated_is_one_all_gather():
    cs = reshard_collectives(MESH_1D, (8, 16), 4, (("x",), ()), ((), ()))
    assert cs == [Collective(AG, ("x",), 8 * 16 * 4)]  # the gathered result: whole tensor
    c = toy_cluster()
    assert reshard_cost(c, MESH_1D, (8, 16), 4, (("x",), ()), ((), ())) == pytest.approx(3 / 4 * 512 / 100 + 1)


def test_reshard_dim0_to_dim1_is_all_to_all():
    cs = reshard_collectives(MESH_1D, (8, 16), 4, (("x",), ()), ((), ("x",)))
    assert cs == [Collective(A2A, ("x",), 8 * 16 * 4 / 4)]


def test_reshard_2d_swap_both_axes():
    c = toy_cluster(4)
    src, dst = (("data",), ("model",)), (("model",), ("data",))
    cs = reshard_collectives(MESH_2x4, (8, 16), 2, src, dst)
    # neither move is an in-place all-to-all (each target dim is still split by the
    # other axis): XLA reshapes the tile grid with an all-to-all, then permutes the pieces
    P = CollectiveKind.PERMUTE
    assert cs == [Collective(A2A, ("data", "model"), 32.0), Collective(P, ("data", "model"), 32.0)]
    # the group of both axes spans 2 nodes of 4 (test_topology pins the two-level formulas)
    expected = (3 / 8 * 32 / 100 + 1 / 2 * 32 / 10 + 5) + (32 / 10 + 5)
    assert reshard_cost(c, MESH_2x4, (8, 16), 2, src, dst) == pytest.approx(expected)


def test_reshard_2d_coarsen_is_permute_then_gather():
    cs = reshard_collectives(MESH_2x4, (8, 16), 2, (("data",), ("model",)), ((), ("data",)))
    # src's 8 pieces tile dst's 2 in another order: XLA permutes the pieces so each group
    # that ends with one piece of dst holds its parts, then gathers (test_topology's table)
    assert cs == [Collective(CollectiveKind.PERMUTE, ("data", "model"), 32.0), Collective(AG, ("model",), 128.0)]


def test_reshard_gathers_removed_axes_together():
    cs = reshard_collectives(MESH_2x4, (8, 16), 2, (("model", "data"), ()), ((), ()))
    assert cs == [Collective(AG, ("data", "model"), 256.0)]


def test_reshard_reorder_within_dim_is_one_permute():
    # XLA reorders the tiles of one dim with a collective-permute of the new piece
    cs = reshard_collectives(MESH_2x4, (8, 16), 2, (("data", "model"), ()), (("model", "data"), ()))
    assert cs == [Collective(CollectiveKind.PERMUTE, ("data", "model"), 32.0)]


def test_reshard_ignores_size_one_axes():
    mesh = MeshShape(("data", "model"), (1, 4))
    assert reshard_collectives(mesh, (8, 16), 4, (("data",), ()), ((), ())) == []


def test_reshard_uneven_shape_is_finite():
    cost = reshard_cost(toy_cluster(), MESH_2x4, (3, 5), 4, (("data",), ("model",)), (("model",), ()))
    assert math.isfinite(cost) and cost > 0


def test_reshard_accepts_partition_spec_style_entries():
    assert reshard_collectives(MESH_1D, (8, 16), 4, ("x", None), [[], ["x"]]) == \
        reshard_collectives(MESH_1D, (8, 16), 4, (("x",), ()), ((), ("x",)))


def test_reshard_bad_spec_errors():
    with pytest.raises(ShardsearchError, match=r"2 entries.*\(8,\)"):
        reshard_cost(toy_cluster(), MESH_1D, (8,), 4, ((), ()), ((),))
    with pytest.raises(ShardsearchError, match="'y'"):
        reshard_collectives(MESH_1D, (8,), 4, (("y",),), ((),))
    with pytest.raises(ShardsearchError, match="twice"):
        reshard_collectives(MESH_2x4, (8, 8), 4, (("data",), ("data",)), ((), ()))


def test_reshard_matrix_matches_pairwise_costs():
    c = toy_cluster()
    specs = [((), ()), (("data",), ()), ((), ("model",)), (("data",), ("model",)), (("model", "data"), ())]
    m = reshard_matrix(c, MESH_2x4, (8, 16), 4, specs, specs[:3])
    assert m.shape == (5, 3)
    for i, s in enumerate(specs):
        for j, d in enumerate(specs[:3]):
            assert m[i, j] == reshard_cost(c, MESH_2x4, (8, 16), 4, s, d)
    assert np.all(np.diag(m[:3, :3]) == 0)
    m[0, 0] = 99.0  # the caller's copy: must not poison the cache
    assert reshard_matrix(c, MESH_2x4, (8, 16), 4, specs, specs[:3])[0, 0] == 0.0


def test_reshard_matrix_empty():
    assert reshard_matrix(toy_cluster(), MESH_1D, (4,), 4, [], [((),)]).shape == (0, 1)


def test_cost_model_imports_neither_jax_nor_shardsearch():
    code = "import sys, cost_model; bad = [m for m in ('jax', 'shardsearch') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- property: every pair of valid specs has a finite cost ---------------------------------

@st.composite
def mesh_shape_specs(draw):
    return (*draw_mesh_and_two_specs(draw, st.integers(2, 4)), draw(st.sampled_from([1, 2, 4, 8])))


@settings(max_examples=300, deadline=None)
@given(mesh_shape_specs())
def test_reshard_cost_finite_and_zero_iff_only_adds_splits(case):
    mesh, shape, src, dst, dpn = case
    cost = reshard_cost(toy_cluster(dpn), mesh, shape, 4, src, dst)
    assert math.isfinite(cost) and cost >= 0
    only_adds = all(d[:len(s)] == s for s, d in zip(src, dst))
    assert (cost == 0) == only_adds
