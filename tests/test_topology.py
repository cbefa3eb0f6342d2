"""Topology-aware collectives, the matmul efficiency curve, and resharding on a 2x4 mesh.

Round-number cluster (as in test_cost_model): intra-node 100 B/s and 1 s latency,
inter-node 10 B/s and 5 s, so every expected time is computed by hand below.
"""

import dataclasses
import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from benchmarks.judge import judge_text
from cost_model import (
    Cluster, ClusterError, Collective, CollectiveKind, Link, MeshShape, collective_time, compute_time,
    group_collective_time, preset_names, reshard_collectives, reshard_cost,
)
from cost_model.collectives import span_collective_time
from cost_model.topology import NodeSpan, spans_of_groups
from shardsearch.hlo import parse_collectives

AR, AG, RS, A2A, PERM = (CollectiveKind.ALL_REDUCE, CollectiveKind.ALL_GATHER, CollectiveKind.REDUCE_SCATTER,
                         CollectiveKind.ALL_TO_ALL, CollectiveKind.PERMUTE)
MESH_2x4 = MeshShape(("data", "model"), (2, 4))


def toy(devices_per_node=4, **changes):
    return Cluster(name="toy", devices_per_node=devices_per_node, peak_flops=1000.0, memory_bytes=1e9,
                   intra_node=Link(100.0, 1.0), inter_node=Link(10.0, 5.0), **changes)


# ---- the topology rule ----------------------------------------------------------------------

@pytest.mark.parametrize("dpn, mesh, axes, span", [
    (4, MESH_2x4, ("model",), NodeSpan(4, 1, 4, 4)),  # inside a node
    (4, MESH_2x4, ("data",), NodeSpan(2, 2, 1, 1)),  # across nodes, one member each
    (4, MESH_2x4, ("data", "model"), NodeSpan(8, 2, 4, 4)),  # two axes: 2 nodes of 4
    (2, MESH_2x4, ("model",), NodeSpan(4, 2, 2, 2)),  # mixed: {0,1,2,3} on nodes 0 and 1
    (2, MESH_2x4, ("data", "model"), NodeSpan(8, 4, 2, 2)),
    (8, MESH_2x4, ("data", "model"), NodeSpan(8, 1, 8, 8)),
    (4, MeshShape(("x",), (8,)), ("x",), NodeSpan(8, 2, 4, 4)),  # an axis of 8 on nodes of 4
    (4, MeshShape(("a", "b"), (4, 2)), ("a",), NodeSpan(4, 2, 2, 2)),  # {0,2,4,6}: major axis, mixed
    (4, MeshShape(("a", "b"), (4, 2)), ("b",), NodeSpan(2, 1, 2, 2)),
    (4, MeshShape(("x",), (6,)), ("x",), NodeSpan(6, 2, 2, 4)),  # uneven: 4 on node 0, 2 on node 1
])
def test_node_spans_from_the_device_order(dpn, mesh, axes, span):
    c = toy(dpn)
    assert c.node_spans(mesh, axes) == (span,)
    assert c.crosses_nodes(mesh, axes) == (span.nodes > 1)
    assert c.link_for(mesh, axes) == (c.inter_node if span.nodes > 1 else c.intra_node)
    # the judge reads explicit groups out of the HLO: the same rule
    assert spans_of_groups(mesh.device_groups(axes).tolist(), dpn) == (span,)


def test_spans_of_uneven_groups_keep_each_layout():
    assert spans_of_groups([[0, 1], [2, 5]], 2) == (NodeSpan(2, 1, 2, 2), NodeSpan(2, 2, 1, 1))
    assert spans_of_groups([], 4) == (NodeSpan.inside(1),)
    assert NodeSpan.across(1) == NodeSpan.inside(1) and NodeSpan.across(4) == NodeSpan(4, 4, 1, 1)


# ---- collective formulas ----------------------------------------------------------------------

X8 = MeshShape(("x",), (8,))


@pytest.mark.parametrize("kind, seconds", [
    # n=8 on k=2 nodes of m=4, B=400: intra part at 100 B/s, inter part at 10 B/s, lat 5
    (AR, 2 * 3 / 4 * 4 + 2 * 1 / 8 * 40 + 5),  # RS in node, AR of B/4 across, AG in node
    (AG, 3 / 4 * 4 + 1 / 8 * 40 + 5),
    (RS, 3 / 4 * 4 + 1 / 8 * 40 + 5),
    (A2A, 3 / 8 * 4 + 1 / 2 * 40 + 5),  # half of every buffer leaves the node
    (PERM, 40 + 5),
])
def test_two_level_formulas_for_an_axis_partly_across_nodes(kind, seconds):
    assert collective_time(toy(4), X8, kind, "x", 400) == pytest.approx(seconds)


@pytest.mark.parametrize("kind, seconds", [
    (AR, 2 * 7 / 8 * 4 + 1), (AG, 7 / 8 * 4 + 1), (RS, 7 / 8 * 4 + 1), (A2A, 7 / 8 * 4 + 1), (PERM, 4 + 1),
])
def test_inside_one_node_is_the_flat_ring(kind, seconds):
    assert collective_time(toy(8), X8, kind, "x", 400) == pytest.approx(seconds)
    assert group_collective_time(toy(8), kind, 8, False, 400) == pytest.approx(seconds)


@pytest.mark.parametrize("kind, seconds", [
    (AR, 2 * 7 / 8 * 40 + 5), (AG, 7 / 8 * 40 + 5), (RS, 7 / 8 * 40 + 5), (A2A, 7 / 8 * 40 + 5), (PERM, 40 + 5),
])
def test_one_member_per_node_is_the_flat_ring_at_inter_node_figures(kind, seconds):
    assert collective_time(toy(1), X8, kind, "x", 400) == pytest.approx(seconds)
    assert group_collective_time(toy(1), kind, 8, True, 400) == pytest.approx(seconds)


def test_two_axes_at_once():
    # dpn 2: 8 devices on 4 nodes of 2
    assert collective_time(toy(2), MESH_2x4, AR, ("data", "model"), 400) == pytest.approx(
        2 * 1 / 2 * 4 + 2 * 3 / 8 * 40 + 5)
    assert collective_time(toy(2), MESH_2x4, AG, ("model", "data"), 400) == pytest.approx(1 / 2 * 4 + 3 / 8 * 40 + 5)
    # the order the axes are named in does not change the groups
    assert collective_time(toy(4), MESH_2x4, A2A, ("model", "data"), 400) == \
        collective_time(toy(4), MESH_2x4, A2A, ("data", "model"), 400)


def test_uneven_groups_take_the_node_with_fewest_members():
    # n=6: 4 members on node 0, 2 on node 1; each of the 2 carries (6-2)/(6*2) of B across
    assert collective_time(toy(4), MeshShape(("x",), (6,)), AG, "x", 400) == pytest.approx(3 / 4 * 4 + 4 / 12 * 40 + 5)


def test_fitted_per_kind_links_price_their_kind():
    fitted = toy(4, collectives={"all-to-all": {"inter_node": {"bandwidth": 20.0, "latency": 2.0}},
                                 "all-reduce": {"intra_node": {"bandwidth": 50.0, "latency": 0.5}}})
    assert collective_time(fitted, X8, A2A, "x", 400) == pytest.approx(3 / 8 * 4 + 1 / 2 * 20 + 2)
    assert collective_time(fitted, X8, AR, "x", 400) == pytest.approx(2 * 3 / 4 * 8 + 2 * 1 / 8 * 40 + 5)
    assert collective_time(fitted, X8, AG, "x", 400) == collective_time(toy(4), X8, AG, "x", 400)


def test_latency_share_scales_fitted_links_too():
    fitted = toy(4, collectives={"all-reduce": {"inter_node": {"bandwidth": 20.0, "latency": 2.0}}})
    cheap = fitted.with_latency_share(0.25)
    assert cheap.intra_node == Link(100.0, 0.25) and cheap.inter_node == Link(10.0, 1.25)
    assert cheap.collective_link("all-reduce", True) == Link(20.0, 0.5)
    assert collective_time(cheap, X8, AR, "x", 400) == pytest.approx(2 * 3 / 4 * 4 + 2 * 1 / 8 * 20 + 0.5)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(CollectiveKind)), st.integers(2, 8), st.integers(1, 8), st.floats(1.0, 1e6))
def test_two_level_lies_between_all_inside_and_all_across(kind, nodes, per_node, nbytes):
    """With the network no faster than the node, a group spanning nodes costs at least what it
    would inside one node and at most the flat ring at the inter-node figures."""
    c, n = toy(4), nodes * per_node
    t = span_collective_time(c, kind, NodeSpan(n, nodes, per_node, per_node), nbytes)
    low = dataclasses.replace(c, inter_node=c.intra_node)  # as if every link were the node's
    assert group_collective_time(low, kind, n, False, nbytes) * (1 - 1e-12) <= t
    assert t <= group_collective_time(c, kind, n, True, nbytes) * (1 + 1e-12)


def test_judge_prices_hlo_groups_like_the_planner():
    hlo = "ENTRY %m {\n  %a = f32[100]{0} all-reduce(%p), replica_groups={{0,1,2,3,4,5,6,7}}, to_apply=%add\n}"
    (priced,) = judge_text(hlo, toy(4), num_devices=8).collectives
    assert priced.seconds == pytest.approx(collective_time(toy(4), X8, AR, "x", 400))


# ---- compute: dtype and the matmul efficiency curve ------------------------------------------

CURVE = {"flops": [1e8, 1e10], "efficiency": [0.1, 0.5]}


def test_compute_time_old_signature_and_dtype():
    c = toy(4, peak_flops_by_dtype={"float32": 250.0, "bfloat16": 1000.0}, matmul_efficiency=CURVE)
    assert compute_time(c, 5000, 20) == pytest.approx(5.0)  # peak_flops, no curve
    assert compute_time(c, 5000, 20, "float32") == pytest.approx(20.0)
    assert compute_time(c, 5000, 20, np.dtype("float32")) == pytest.approx(20.0)
    assert compute_time(c, 5000, 20, "int8") == pytest.approx(5.0)  # not listed: peak_flops


def test_matmul_efficiency_interpolates_in_log_flops_with_a_time_floor_below_and_flat_above():
    c = toy(4, matmul_efficiency=CURVE)
    assert c.matmul_efficiency_at(1e9) == pytest.approx(0.3)  # halfway in log space
    assert c.matmul_efficiency_at(1e14) == pytest.approx(0.5)
    # below 1e8 FLOPs a matmul takes as long as one of 1e8: efficiency falls with its size
    assert c.matmul_efficiency_at(1e6) == pytest.approx(0.1 * 1e6 / 1e8)
    assert compute_time(c, 1e6, 0, matmul=True) == pytest.approx(compute_time(c, 1e8, 0, matmul=True))
    assert compute_time(c, 1e9, 0, matmul=True) == pytest.approx(1e9 / (1000 * 0.3))
    assert compute_time(c, 1e9, 0, "bfloat16", matmul=True) == pytest.approx(1e9 / (1000 * 0.3))
    assert toy(4).matmul_efficiency_at(1.0) == 1.0  # no curve: peak


def test_efficiency_round_trips_and_survives_replace():
    c = Cluster.from_dict({**toy(4).to_dict(), "matmul_efficiency": CURVE})
    assert c.to_dict()["matmul_efficiency"] == CURVE
    assert Cluster.from_dict(c.to_dict()) == c
    assert dataclasses.replace(c, peak_flops=2000.0).matmul_efficiency == c.matmul_efficiency
    assert c != toy(4)  # the curve changes prices, so it is part of the identity


@pytest.mark.parametrize("bad, match", [
    ({"flops": [1e8, 1e10]}, 'exactly the keys "flops" and "efficiency"'),
    ([0.5], 'exactly the keys'),
    ({"flops": [1e8], "efficiency": [0.1, 0.5]}, "same length"),
    ({"flops": [], "efficiency": []}, "non-empty"),
    ({"flops": [1e10, 1e8], "efficiency": [0.1, 0.5]}, "strictly increasing"),
    ({"flops": [1e8, 1e10], "efficiency": [0.1, 1.5]}, r"\(0, 1\]"),
    ({"flops": [1e8, 1e10], "efficiency": [0.0, 0.5]}, "positive"),
    ({"flops": [1e8, "1e10"], "efficiency": [0.1, 0.5]}, "must be a number"),
])
def test_bad_efficiency_curve_names_the_key(bad, match):
    with pytest.raises(ClusterError, match="matmul_efficiency") as e:
        Cluster.from_dict({**toy(4).to_dict(), "matmul_efficiency": bad})
    assert e.match(match)


GPU_PRESETS = ["a100-8", "h100-8", "h100-2x8-ib", "h100-8x8-ib", "v100-8x8-eth", "2x4-slow"]


def test_gpu_presets_have_an_increasing_curve_and_others_none():
    for name in preset_names():
        c = Cluster.load(name)
        eff = [e for _, e in c.matmul_efficiency]
        if name not in GPU_PRESETS:
            assert not eff
            continue
        assert eff == sorted(eff) and 0 < eff[0] < 0.01 and 0.7 <= eff[-1] <= 0.9
        gemm_1024 = c.matmul_efficiency_at(2 * 1024**3)
        assert 0.2 < gemm_1024 < 0.7  # a 1024^3 GEMM is well short of peak on every GPU


def test_splitting_a_small_matmul_buys_less_than_the_flops():
    c = Cluster.load("h100-8")
    whole = compute_time(c, 2 * 1024**3, 0, "bfloat16", matmul=True)
    eighth = compute_time(c, 2 * 1024**3 / 8, 0, "bfloat16", matmul=True)
    assert whole / 8 < eighth < whole
    big = 2 * 16384**3  # a big matmul is near the plateau: splitting it pays almost fully
    assert compute_time(c, big / 8, 0, matmul=True) == pytest.approx(compute_time(c, big, 0, matmul=True) / 8, rel=0.05)


# ---- resharding on a 2-D mesh ------------------------------------------------------------------

def S(text):
    """'[data+model,-]' -> (("data", "model"), ())."""
    return tuple(tuple(d.split("+")) if d != "-" else () for d in text.strip("[]").split(","))


# (src, dst, collectives) for a (16, 32) float32 tensor on the 2x4 mesh; each row is what
# XLA emitted for the same transition (test_matches_what_xla_emits checks a sample), up
# to the group an all-to-all or permute runs over.
TABLE = [
    ("[model,-]", "[-,-]", [(AG, ("model",), 2048)]),
    ("[data,model]", "[-,-]", [(AG, ("data", "model"), 2048)]),
    ("[-,-]", "[data,model]", []),  # slicing is free
    ("[data,-]", "[data+model,-]", []),
    ("[model,-]", "[-,model]", [(A2A, ("model",), 512)]),
    ("[data,-]", "[-,data]", [(A2A, ("data",), 1024)]),
    ("[data,model]", "[data+model,-]", [(A2A, ("model",), 256)]),
    ("[data+model,-]", "[-,data+model]", [(A2A, ("data", "model"), 256)]),  # one all-to-all of both
    ("[data,model]", "[model,-]", [(AG, ("data",), 512), (A2A, ("model",), 512)]),
    # an added split that must sit before the moved one is sliced first (smaller buffer)
    ("[model,-]", "[-,data+model]", [(A2A, ("model",), 256)]),
    # refinement: every new piece lies in some old one: one permute of the new piece
    ("[model+data,-]", "[data+model,-]", [(PERM, ("data", "model"), 256)]),
    ("[model,-]", "[data+model,-]", [(PERM, ("data", "model"), 256)]),
    ("[data,-]", "[model,-]", [(PERM, ("data", "model"), 512)]),
    ("[-,data]", "[data,model]", [(PERM, ("data", "model"), 256)]),
    # moves that are not in place: all-to-all reshapes the tile grid, permute places pieces
    ("[data,model]", "[model,data]", [(A2A, ("data", "model"), 256), (PERM, ("data", "model"), 256)]),
    ("[data+model,-]", "[model,data]", [(A2A, ("data", "model"), 256), (PERM, ("data", "model"), 256)]),
    # coarsening in another order: permute the old pieces, then gather
    ("[model+data,-]", "[data,-]", [(PERM, ("data", "model"), 256), (AG, ("model",), 1024)]),
    ("[data+model,-]", "[model,-]", [(PERM, ("data", "model"), 256), (AG, ("data",), 512)]),
]


@pytest.mark.parametrize("src, dst, expected", TABLE)
def test_reshard_table_on_2x4(src, dst, expected):
    got = reshard_collectives(MESH_2x4, (16, 32), 4, S(src), S(dst))
    assert got == [Collective(k, axes, float(b)) for k, axes, b in expected]
    cost = reshard_cost(Cluster.load("2x4-slow"), MESH_2x4, (16, 32), 4, S(src), S(dst))
    assert math.isfinite(cost) and (cost == 0) == (not expected)


def _ps(spec):
    return P(*[None if not d else d[0] if len(d) == 1 else d for d in spec])


SAMPLE = [(s, d) for s, d, _ in TABLE] + [
    ("[-,data]", "[model+data,-]"), ("[model,data]", "[-,data+model]"), ("[model,-]", "[data,-]"),
]


SHAPE = (256, 512)  # big enough that bandwidth, not latency, decides the time
SLOW = Cluster.load("2x4-slow")  # the data axis crosses the two nodes


@pytest.fixture(scope="module")
def xla_reshards():
    """Compile each sampled transition on the 8 fake CPU devices: XLA's optimized HLO."""
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    x = jax.ShapeDtypeStruct(SHAPE, np.float32)
    out = {}
    for src, dst in SAMPLE:
        f = jax.jit(lambda a: a, in_shardings=NamedSharding(mesh, _ps(S(src))),
                    out_shardings=NamedSharding(mesh, _ps(S(dst))))
        out[src, dst] = f.lower(x).compile().as_text()
    return out


# Where XLA takes another path than ours: two gathers instead of one; an all-to-all over
# a part of an axis and a permute.
XLA_DIFFERS = {("[data,model]", "[-,-]"), ("[data,model]", "[model,data]"), ("[data+model,-]", "[model,data]"),
               ("[model,data]", "[-,data+model]")}


@pytest.mark.parametrize("src, dst", SAMPLE)
def test_matches_what_xla_emits(xla_reshards, src, dst):
    """The same collectives in the same order (up to their groups), except where listed;
    total bytes within a factor of two everywhere; priced on two nodes, never more than
    twice what XLA's program costs (nor under a third of it)."""
    xla = parse_collectives(xla_reshards[src, dst])
    ours = reshard_collectives(MESH_2x4, SHAPE, 4, S(src), S(dst))
    if (src, dst) not in XLA_DIFFERS:
        assert [(c.kind, c.nbytes) for c in xla] == [(c.kind.value, c.nbytes) for c in ours]
    xb, ob = sum(c.nbytes for c in xla), sum(c.nbytes for c in ours)
    assert xb / 2 <= ob <= xb * 2
    judged = judge_text(xla_reshards[src, dst], SLOW, num_devices=8).comm_s
    assert judged / 3 <= reshard_cost(SLOW, MESH_2x4, SHAPE, 4, S(src), S(dst)) <= 2 * judged
