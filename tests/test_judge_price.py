"""Pricing compiled HLO: closed-form seconds on a round-number cluster, and one real compile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from benchmarks.judge import ideal_s, judge, judge_text
from cost_model import Cluster

# 4 devices per node; intra: 100 B/s, 1 s latency; inter: 10 B/s, 5 s latency.
CLUSTER = Cluster.from_dict({
    "devices_per_node": 4, "peak_flops": 1000, "memory_bytes": 1e9, "hbm_bandwidth": 100,
    "intra_node": {"bandwidth": 100, "latency": 1}, "inter_node": {"bandwidth": 10, "latency": 5},
})


def _one(line: str, num_devices: int = 8):
    judged = judge_text(f"ENTRY %main {{\n  {line}\n}}\n", CLUSTER, num_devices=num_devices)
    return judged.collectives


@pytest.mark.parametrize("line, kind, nbytes, size, seconds", [
    # f32[25] = 100 bytes everywhere below
    ("%ar = f32[25]{0} all-reduce(%p), replica_groups={{0,1,2,3},{4,5,6,7}}, to_apply=%add",
     "all-reduce", 100, 4, 2 * 3 / 4 * 100 / 100 + 1),
    ("%ag = f32[25]{0} all-gather(%p), replica_groups={{0,1},{2,3},{4,5},{6,7}}, dimensions={0}",
     "all-gather", 100, 2, 1 / 2 * 100 / 100 + 1),
    # reduce-scatter is priced on its operand: result bytes x group size
    ("%rs = f32[25]{0} reduce-scatter(%p), replica_groups=[2,4]<=[8], dimensions={0}, to_apply=%add",
     "reduce-scatter", 400, 4, 3 / 4 * 400 / 100 + 1),
    ("%a2a = f32[25]{0} all-to-all(%p), replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={0}",
     "all-to-all", 100, 4, 3 / 4 * 100 / 100 + 1),
    ("%cp = f32[25]{0} collective-permute(%p), source_target_pairs={{0,1},{1,2},{2,3},{3,0}}",
     "collective-permute", 100, 2, 100 / 100 + 1),
    # a tuple all-reduce (the combiner's output) is one launch over the sum of its arrays
    ("%t = (f32[10]{0}, f32[15]{0}) all-reduce(%a, %b), replica_groups={{0,1,2,3},{4,5,6,7}}, to_apply=%add",
     "all-reduce", 100, 4, 2 * 3 / 4 * 100 / 100 + 1),
    # a group spanning nodes 0 and 1 is priced at the inter-node figures
    ("%x = f32[25]{0} all-reduce(%p), replica_groups={{0,4},{1,5},{2,6},{3,7}}, to_apply=%add",
     "all-reduce", 100, 2, 2 * 1 / 2 * 100 / 10 + 5),
])
def test_each_kind_closed_form(line, kind, nbytes, size, seconds):
    (c,) = _one(line)
    assert (c.kind, c.nbytes, c.group_size) == (kind, nbytes, size)
    assert c.crosses_nodes == (seconds > 10)  # only the inter-node case costs over 10 s
    assert c.seconds == pytest.approx(seconds)


def test_async_pair_counted_once():
    hlo = """ENTRY %main {
  %ags = (f32[25]{0}, f32[50]{0}) all-gather-start(f32[25]{0} %x), replica_groups={{0,1},{2,3},{4,5},{6,7}}, dimensions={0}
  ROOT %agd = f32[50]{0} all-gather-done(%ags)
}"""
    j = judge_text(hlo, CLUSTER, num_devices=8)
    assert len(j.collectives) == 1 and j.comm_bytes == 200
    assert j.comm_s == pytest.approx(1 / 2 * 200 / 100 + 1)


def test_size_one_groups_are_free():
    assert _one("%ar = f32[25]{0} all-reduce(%p), replica_groups={{0},{1},{2},{3}}, to_apply=%add", 4) == ()


def test_totals_compute_and_by_kind():
    hlo = """HloModule m, num_partitions=8
ENTRY %main {
  %a = f32[25]{0} all-reduce(%p), replica_groups={{0,1,2,3},{4,5,6,7}}, to_apply=%add
  %b = f32[25]{0} all-reduce(%a), replica_groups={{0,1,2,3},{4,5,6,7}}, to_apply=%add
  ROOT %g = f32[25]{0} all-gather(%b), replica_groups={{0,1},{2,3},{4,5},{6,7}}, dimensions={0}
}"""
    j = judge_text(hlo, CLUSTER, flops=2000, bytes_accessed=100, memory_bytes=64)
    assert j.num_devices == 8  # from the module header
    assert j.compute_s == pytest.approx(2.0)  # FLOP-bound: max(2000/1000, 100/100)
    assert judge_text(hlo, CLUSTER, flops=2000, bytes_accessed=500).compute_s == pytest.approx(5.0)
    assert j.comm_s == pytest.approx(2.5 + 2.5 + 1.5) and j.total_s == pytest.approx(8.5)
    assert j.comm_bytes == 300 and j.memory_bytes == 64 and j.flops == 2000
    assert j.by_kind() == {"all-reduce": (2, 200, pytest.approx(5.0)), "all-gather": (1, 100, pytest.approx(1.5))}
    assert ideal_s(8000, 8, CLUSTER) == pytest.approx(1.0)


def test_num_devices_from_group_ids():
    hlo = "ENTRY %m {\n  %a = f32[25]{0} all-reduce(%p), replica_groups={{0,1},{2,5}}, to_apply=%add\n}"
    assert judge_text(hlo, CLUSTER).num_devices == 6


def test_real_compile_contraction_split():
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    f = jax.jit(lambda a, b: a @ b, in_shardings=(NamedSharding(mesh, P(None, "model")),
                                                  NamedSharding(mesh, P("model", None))))
    compiled = f.lower(jnp.ones((64, 256)), jnp.ones((256, 128))).compile()
    j = judge(compiled, CLUSTER)
    assert j.num_devices == 8
    ars = [c for c in j.collectives if c.kind == "all-reduce"]
    assert ars and ars[0].nbytes == 64 * 128 * 4 and ars[0].group_size == 4
    assert not ars[0].crosses_nodes  # the 'model' groups are {0..3}, {4..7}
    assert j.flops >= 2 * 64 * 64 * 128  # per device: a quarter of the contraction
    assert j.memory_bytes > 0 and j.comm_s > 0 and j.compute_s > 0


def test_device_ids_put_a_submesh_program_on_its_nodes():
    """A program compiled for a stage numbers its devices 0..n-1; priced on the stage's own
    devices, a group that spans two nodes there costs the inter-node price."""
    hlo = "ENTRY %main {\n  %ar = f32[25]{0} all-reduce(%p), replica_groups={{0,1}}, to_apply=%add\n}\n"
    inside = judge_text(hlo, CLUSTER, device_ids=(4, 5))
    across = judge_text(hlo, CLUSTER, device_ids=(3, 4))
    assert inside.num_devices == across.num_devices == 2
    assert inside.comm_s == pytest.approx(2 * 1 / 2 * 100 / 100 + 1)
    assert across.comm_s == pytest.approx(2 * 1 / 2 * 100 / 10 + 5) and across.collectives[0].crosses_nodes
