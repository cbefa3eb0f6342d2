"""Resharding reads and writes each device's memory, not only the links (issue 4).

The local bytes of a transition are checked against what XLA's optimized program for it
reads and writes on a 2x4 mesh (``cost_analysis()['bytes accessed']`` of jax.jit with
in/out shardings), and the planner is checked to price them apart from communication.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

import shardsearch as ss
from helpers import draw_mesh_and_two_specs
from cost_model import Cluster, Collective, CollectiveKind, Link, MeshShape, reshard_collectives, reshard_cost
from cost_model.collectives import collective_local_bytes
from cost_model.reshard import reshard_local_bytes, reshard_local_time, reshard_matrices, reshard_steps

MESH_2x4 = MeshShape(("data", "model"), (2, 4))
SHAPE = (16, 32)  # float32: 2 KiB whole
B = 4 * 16 * 32


def S(text: str):
    """``[data+model,-]`` -> (("data", "model"), ())."""
    return tuple(() if p.strip() == "-" else tuple(p.strip().split("+")) for p in text.strip("[]").split(","))


def _ps(spec):
    return P(*[None if not d else d[0] if len(d) == 1 else d for d in spec])


@pytest.fixture(scope="module")
def xla_bytes():
    """Bytes XLA's program for each transition reads and writes, per device."""
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    x = jax.ShapeDtypeStruct(SHAPE, np.float32)

    def measure(src, dst):
        f = jax.jit(lambda a: a, in_shardings=NamedSharding(mesh, _ps(S(src))),
                    out_shardings=NamedSharding(mesh, _ps(S(dst))))
        return f.lower(x).compile().cost_analysis()["bytes accessed"]
    return measure


# Transitions whose program is collectives and copies only: XLA's count is exact.
EXACT = [
    ("[data,-]", "[-,-]"),  # all-gather along the leading dim: its two buffers
    ("[-,data]", "[-,-]"),  # along the minor dim: transposed there and back
    ("[-,model]", "[-,-]"),
    ("[data,model]", "[data,-]"),
    ("[model,-]", "[data,-]"),  # permute, then all-gather
    ("[model+data,-]", "[data,-]"),
    ("[model+data,-]", "[data+model,-]"),  # one permute
]


@pytest.mark.parametrize("src, dst", EXACT)
def test_local_bytes_are_what_xla_reads_and_writes(xla_bytes, src, dst):
    assert reshard_local_bytes(MESH_2x4, SHAPE, 4, S(src), S(dst)) == xla_bytes(src, dst)


# All-to-alls: XLA packs the k pieces with k static-slice fusions, and cost_analysis
# counts each as reading its whole operand; the device reads it once (k - 1 too many).
ALL_TO_ALL = [("[data,-]", "[-,data]", 2), ("[model,-]", "[-,model]", 4), ("[data,model]", "[data+model,-]", 4),
              ("[data+model,-]", "[-,data+model]", 8)]


@pytest.mark.parametrize("src, dst, k", ALL_TO_ALL)
def test_all_to_all_is_packed_sent_and_unpacked(xla_bytes, src, dst, k):
    (step,) = reshard_steps(MESH_2x4, SHAPE, 4, S(src), S(dst))
    buf = step.collective.nbytes
    assert step.collective.kind is CollectiveKind.ALL_TO_ALL
    assert step.local_bytes == 6 * buf  # pack, send + receive, unpack: each a read and a write
    assert step.local_bytes == xla_bytes(src, dst) - (k - 1) * buf


def test_free_transitions_stay_free():
    for src, dst in [("[data,model]", "[data,model]"), ("[-,-]", "[data,model]"), ("[data,-]", "[data+model,-]")]:
        assert reshard_local_bytes(MESH_2x4, SHAPE, 4, S(src), S(dst)) == 0.0
    # an axis of size one splits nothing
    assert reshard_local_bytes(MeshShape(("data", "model"), (1, 8)), SHAPE, 4, S("[data,-]"), S("[-,-]")) == 0.0


def test_collective_buffers():
    mesh = MESH_2x4
    assert collective_local_bytes(mesh, Collective(CollectiveKind.ALL_REDUCE, ("model",), 100.0)) == 200.0
    assert collective_local_bytes(mesh, Collective(CollectiveKind.ALL_GATHER, ("model",), 400.0)) == 500.0
    assert collective_local_bytes(mesh, Collective(CollectiveKind.REDUCE_SCATTER, ("data",), 400.0)) == 600.0
    assert collective_local_bytes(mesh, Collective(CollectiveKind.PERMUTE, ("data", "model"), 64.0)) == 128.0
    assert collective_local_bytes(MeshShape(("x",), (1,)), Collective(CollectiveKind.ALL_REDUCE, ("x",), 64.0)) == 0.0


TOY = Cluster(name="toy", devices_per_node=4, peak_flops=1000.0, memory_bytes=1e9,
              intra_node=Link(100.0, 1.0), inter_node=Link(10.0, 5.0), hbm_bandwidth=50.0)


def test_links_and_memory_are_priced_apart():
    src, dst = S("[-,data]"), S("[-,-]")
    links = reshard_cost(TOY, MESH_2x4, SHAPE, 4, src, dst)
    assert links == pytest.approx(1 / 2 * B / 10 + 5)  # the link time alone, as before
    local = reshard_local_time(TOY, MESH_2x4, SHAPE, 4, src, dst)
    assert local == pytest.approx(3 * (B / 2 + B) / 50)
    m_links, m_local = reshard_matrices(TOY, MESH_2x4, SHAPE, 4, [src, dst], [dst])
    assert m_links[0, 0] == links and m_local[0, 0] == local and m_local[1, 0] == 0.0


@st.composite
def mesh_shape_specs(draw):
    return draw_mesh_and_two_specs(draw, st.sampled_from([1, 2, 3, 4]))


@settings(max_examples=300, deadline=None)
@given(mesh_shape_specs())
def test_local_bytes_finite_and_only_with_a_collective(case):
    mesh, shape, src, dst = case
    steps = reshard_steps(mesh, shape, 4, src, dst)
    local = reshard_local_bytes(mesh, shape, 4, src, dst)
    assert math.isfinite(local) and local >= 0
    moves = any(mesh.group_size(s.collective.axes) > 1 for s in steps)
    assert (local > 0) == moves
    # at least the collectives' own buffers; at most 6x the largest buffer per step
    assert local >= sum(collective_local_bytes(mesh, s.collective) for s in steps)
    whole = 4 * math.prod(shape)
    assert local <= 6 * whole * len(steps)
    assert [s.collective for s in steps] == reshard_collectives(mesh, shape, 4, src, dst)


# ---- the planner ------------------------------------------------------------------------------

# tests/models' cluster: memory 100x slower than the links, so a layout change costs far
# more in copies than on the wire.
SLOW_COMPUTE = Cluster.from_dict({
    "name": "slow-compute", "devices_per_node": 8, "peak_flops": 1e9, "memory_bytes": 16e9,
    "hbm_bandwidth": 1e9, "intra_node": {"bandwidth": 1e11, "latency": 1e-7},
    "inter_node": {"bandwidth": 1e10, "latency": 1e-6},
})


@pytest.fixture(scope="module")
def mlp_plan():
    import optax

    from helpers import abstract_mlp_args, make_train_step

    optimizer = optax.adam(1e-3)
    args = abstract_mlp_args(64, 128, layers=3, optimizer=optimizer)
    step = ss.auto(make_train_step(optimizer), mesh=(2, 4), cluster=SLOW_COMPUTE)
    return step.plan_for(*args), step.lower(*args).compile().as_text()


def test_plan_reports_memory_traffic_apart_from_communication(mlp_plan):
    p = mlp_plan[0].predicted
    assert p.total_s == pytest.approx(p.compute_s + p.comm_s)
    assert p.comm_s > 0
    # memory is 100x slower than the links here: counted as communication, the
    # collectives' buffers would make comm_s the larger
    assert p.comm_s < p.collective_memory_s < p.compute_s


def test_slow_memory_keeps_one_layout(mlp_plan):
    """Priced by the links alone, the all-to-alls between batch-split and feature-split
    layouts looked free here and the plan had two; their copies make them dear."""
    plan, hlo = mlp_plan
    assert not [c for c in plan.predicted.collectives if c[0] == "all-to-all"], plan.predicted.collectives
    assert "all-to-all" not in hlo
