"""The planner prices gradient reductions by what they leave exposed on clusters whose
collectives overlap compute (cost_model.overlap, shardsearch.costs.overlap)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import shardsearch as ss
from benchmarks.judge import replay
from cost_model import Cluster
from cost_model.collectives import collective_time
from cost_model.overlap import exposed_time
from test_gpu_replay import CLUSTER, HEAD


def test_exposed_time_is_what_outlasts_the_window_or_the_contention():
    assert exposed_time(1.0, 0.0, 0.15) == pytest.approx(1.0)  # nothing to hide under
    assert exposed_time(1.0, 10.0, 0.15) == pytest.approx(1 - 1 / 1.15)  # hidden, but compute slowed
    assert exposed_time(3.0, 1.0, 0.15) == pytest.approx(2.0)
    # the two regimes meet where the collective lasts (1 + contention) windows
    assert exposed_time(1.15, 1.0, 0.15) == pytest.approx(0.15) == pytest.approx(1.15 * (1 - 1 / 1.15))
    assert exposed_time(1.0, 10.0, 0.0) == 0.0
    np.testing.assert_allclose(exposed_time(np.array([1.0, 3.0]), 1.0, 0.0), [0.0, 2.0])


def one_collective_under_a_copy(copied: int) -> str:
    """An all-reduce of 1 MB (1 ms on the test cluster's links) issued before a copy of
    ``copied`` floats (8 bytes a float read and written: ``copied`` * 8 ns)."""
    return HEAD + f"""
ENTRY %main (p: f32[250000], q: f32[{copied}]) -> (f32[250000], f32[{copied}]) {{
  %p = f32[250000]{{0}} parameter(0)
  %q = f32[{copied}]{{0}} parameter(1)
  %ars = f32[250000]{{0}} all-reduce-start(%p), replica_groups={{{{0,1}}}}, to_apply=%add
  %k = f32[{copied}]{{0}} copy(%q)
  %ard = f32[250000]{{0}} all-reduce-done(%ars)
  ROOT %t = (f32[250000]{{0}}, f32[{copied}]{{0}}) tuple(%ard, %k)
}}
"""


@pytest.mark.parametrize("copied", [25000, 125000, 143750, 500000])
def test_the_planner_formula_is_the_replay_of_one_collective_under_compute(copied):
    r = replay(one_collective_under_a_copy(copied), CLUSTER, 2)
    window = copied * 8 / 1e9
    assert (r.comm_s, r.compute_s) == (pytest.approx(1e-3), pytest.approx(window))
    assert r.exposed_comm_s == pytest.approx(float(exposed_time(1e-3, window, 0.15)), rel=1e-9)


def mlp_step(params, x):
    def loss(params):
        h = x
        for w in params:
            h = jnp.tanh(h @ w)
        return jnp.mean(h ** 2)

    grads = jax.grad(loss)(params)
    return [w - 0.1 * g for w, g in zip(params, grads)]


def mlp_args(width: int, layers: int, batch: int = 8192):
    return ([jax.ShapeDtypeStruct((width, width), jnp.bfloat16) for _ in range(layers)],
            jax.ShapeDtypeStruct((batch, width), jnp.bfloat16))


ARGS = mlp_args(1024, 6)


def _with_and_without_overlap(args):
    h100 = Cluster.load("h100-8")
    no_overlap = dataclasses.replace(h100, overlap_contention=None)
    hidden = ss.plan(mlp_step, *args, mesh=(8,), cluster=h100)
    full = ss.plan(mlp_step, *args, mesh=(8,), cluster=no_overlap)
    # both split the batch and replicate the weights: the gradients are all-reduced
    assert hidden.flat_in_specs == full.flat_in_specs
    # an asynchronous all-reduce's reads and writes of device memory run beside the kernels
    # (the contention its exposed time counts), not as kernel time
    moved = full.predicted.collective_memory_s - hidden.predicted.collective_memory_s
    assert moved > 0
    assert hidden.predicted.compute_s == pytest.approx(full.predicted.compute_s - moved)
    return hidden.predicted.comm_s, full.predicted.comm_s


def test_data_parallel_gradients_hide_under_the_backward_pass():
    # 4 x 32 MB of bf16 gradients: four buckets of XLA's combiner (30 MiB), all but the
    # last issued under the backward of the earlier layers (compiled for H100s: 4 all-reduces)
    hidden, full = _with_and_without_overlap(mlp_args(4096, 4))
    assert 0 < hidden < 0.6 * full


def test_gradients_that_fit_one_bucket_wait_for_the_last_one():
    # 6 x 2 MB: XLA combines them into one all-reduce issued after the last gradient
    # (compiled for H100s: one bf16[6291456] all-reduce, the replay leaves 93% of the
    # communication exposed; priced per gradient under the rest of the backward, a third)
    hidden, full = _with_and_without_overlap(ARGS)
    assert 0.85 * full < hidden <= full


def test_fsdp_gathers_hide_under_the_compute_before_their_reader():
    """A weight's all-gather waits on nothing the step computes (the weights are state the
    step carries, not the batch): XLA's scheduler starts it early and combines it with the others (compiled for 8 x H100, gpt-medium-bf16 with FSDP
    pinned: 2.7 ms of all-gathers, 0.27 ms of stalls); only the contention and the first
    gather, before which nothing runs, are left to pay."""
    h100 = Cluster.load("h100-8")
    args = mlp_args(4096, 4)
    step = lambda params, x: (mlp_step(params, x),)  # noqa: E731  the new weights: the state the step carries
    fsdp = ss.plan(step, *args, mesh=(8,), cluster=h100, pins=tuple((f"[0][{i}]", P("data", None)) for i in range(4)))
    dp = ss.plan(step, *args, mesh=(8,), cluster=h100, pins=tuple((f"[0][{i}]", P()) for i in range(4)))
    full = {kind: count * collective_time(h100, fsdp.mesh, kind, axes, nbytes / count)
            for kind, axes, count, nbytes in fsdp.predicted.collectives}
    assert {"all-gather", "all-reduce"} <= set(full)  # 4 gathers of 32 MB: 0.28 ms in full
    # data parallel's gradient all-reduces (a fifth more bytes than FSDP's) as they hide,
    # FSDP's all-to-alls in full: what is left of its gathers is under a quarter of them
    assert fsdp.predicted.comm_s < dp.predicted.comm_s + full.get("all-to-all", 0.0) + 0.25 * full["all-gather"]


def test_a_plan_too_big_for_the_devices_is_planned_without_overlap():
    """XLA's scheduler keeps the step within the device's memory and gives up overlap first."""
    small = dataclasses.replace(Cluster.load("h100-8"), memory_bytes=1e6)  # 1 MB devices
    over = ss.plan(mlp_step, *ARGS, mesh=(8,), cluster=small, memory_budget=1e12)  # a budget the devices lack
    full = ss.plan(mlp_step, *ARGS, mesh=(8,), cluster=dataclasses.replace(small, overlap_contention=None),
                   memory_budget=1e12)
    assert over.predicted.peak_donated_bytes > small.memory_bytes
    assert over.predicted.comm_s == pytest.approx(full.predicted.comm_s)
    # planned again on the strategies, tie labels and priced tables of the first search
    # (search.plan_graph): the very plan a search without overlap makes
    assert over.fingerprint() == full.fingerprint() and over.predicted == full.predicted


def test_collective_overlap_is_a_validated_cluster_key():
    d = Cluster.load("h100-8").to_dict()
    assert d["collective_overlap"] == {"contention": 0.15}
    assert "collective_overlap" not in Cluster.load("cpu-host").to_dict()
    with pytest.raises(ss.ClusterError, match="collective_overlap"):
        Cluster.from_dict({**d, "collective_overlap": {"contention": -1}})
    with pytest.raises(ss.ClusterError, match="collective_overlap"):
        Cluster.from_dict({**d, "collective_overlap": 0.15})


def test_collectives_queue_on_the_links_one_at_a_time():
    from shardsearch.costs.overlap import queue_windows

    # three collectives of 2, 3 and 1 s ready with 5, 4 and 1 s of compute left: the second
    # waits 1 s for the first, the third 1 s for the second (it starts as the compute ends)
    got = queue_windows({10: 5.0, 11: 4.0, 12: 1.0}, {10: 2.0, 11: 3.0, 12: 1.0})
    assert got == {10: 5.0, 11: pytest.approx(3.0), 12: 0.0}
    assert queue_windows({1: 3.0, 2: 3.0}, {1: 1.0, 2: 1.0}) == {1: 3.0, 2: 2.0}  # same bucket: node order


def test_gradients_hide_no_more_than_the_backward_computes():
    # 4 x 32 MB of bf16 gradients across 2x4-slow's 25 Gb/s link (11.5 ms of all-reduces)
    # under a 6.3 ms step, a third of it the forward pass, before any gradient exists: each
    # priced alone under the rest of the backward, they hid 5.7 ms together. XLA's scheduler
    # gives each only as much compute as it takes at NVLink figures (the part inside a node)
    from shardsearch.costs.overlap import as_one_node

    slow = Cluster.load("2x4-slow")
    args = mlp_args(4096, 4, batch=32768)
    no_overlap = dataclasses.replace(slow, overlap_contention=None)
    hidden = ss.plan(mlp_step, *args, mesh=(8,), cluster=slow)
    full = ss.plan(mlp_step, *args, mesh=(8,), cluster=no_overlap)
    inside = ss.plan(mlp_step, *args, mesh=(8,), cluster=as_one_node(no_overlap))
    assert hidden.flat_in_specs == full.flat_in_specs == inside.flat_in_specs  # data parallel
    saved = full.predicted.comm_s - hidden.predicted.comm_s
    assert 0 < saved <= min(2 / 3 * hidden.predicted.compute_s, inside.predicted.comm_s)
    assert inside.predicted.comm_s < 0.1 * full.predicted.comm_s  # 6% of it inside the nodes


def _combinable(producer, reader, window, axes=("data",), moves=True, nbytes=1e3, bandwidth=1.0, estimate=1e9,
                hidden=True):
    """A reshard of ``producer`` read by ``reader`` taking ``axes`` off its layout (one
    strategy each side: layout (axes,) to replicated)."""
    from shardsearch.costs.gathers import Combinable

    one = lambda x: np.array([[x]], dtype=float)  # noqa: E731
    return Combinable(producer, reader, ((axes,),), ((),), np.array([[moves]]), one(bandwidth), one(estimate),
                      np.array([nbytes]), window, hidden, 0.15)


def test_xla_combines_the_gathers_of_values_ready_at_the_start_per_device_group():
    """XLA's all-gather combiner merges independent gathers of one device group, in reader
    order, up to 30 MiB: one launch each, every member waiting for the whole (compiled for
    A100s, tests/models gpt FSDP on 2x4-slow: 38 reshards, one all-gather of 1.89 MB, fully
    exposed)."""
    from shardsearch.costs.gathers import settle

    choice = np.zeros(40, dtype=int)
    # three over 'data' (the first read with nothing before it), one over 'model' read later
    plan = [_combinable(0, 10, 0.0), _combinable(1, 20, 5.0), _combinable(2, 30, 9.0),
            _combinable(3, 25, 7.0, axes=("model",)),
            _combinable(4, 12, 0.0, moves=False),  # moves nothing in this plan: not a member
            _combinable(0, 11, 0.0)]  # the same value into the same layout: the first one's copy
    got = settle(plan, choice)
    assert (got.members, got.launches) == (4, 2) and got.share == pytest.approx(0.5)
    # the 'data' gather (3 s) waits for its first reader at 0, stalling the compute 3 s; the
    # 'model' one queues behind it and hides under the 7 s before its reader: the contention
    assert got.spans == ((10, pytest.approx(1.0)), (25, pytest.approx(0.15 / 1.15)))
    assert got.fraction(5) is None and got.fraction(24) == pytest.approx(1.0)
    assert got.fraction(99) == pytest.approx(0.15 / 1.15)
    # past the threshold a second gather over the same devices; a plan without any: no share
    big = settle([_combinable(0, 10, 0.0, nbytes=20 * 2**20), _combinable(1, 20, 0.0, nbytes=20 * 2**20)], choice)
    assert (big.members, big.launches) == (2, 2)
    assert settle([_combinable(4, 12, 0.0, moves=False)], choice).members == 0
    assert got.same_price(settle(plan, choice)) and not got.same_price(big)
