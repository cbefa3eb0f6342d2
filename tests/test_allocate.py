"""Sharing a cluster between jobs: ss.allocate against brute force, and the simulator."""

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shardsearch as ss
from cost_model import Cluster
from shardsearch.advise import Advice, BatchMode
from shardsearch.advise.allocate import Job, allowed_sizes, place
from shardsearch.advise.batch import BatchInfo
from shardsearch.advise.simulate import TraceJob, _equal, simulate
from test_advise import _row

# Two nodes of four devices.
NODES = Cluster.from_dict({
    "name": "2x4", "devices_per_node": 4, "num_nodes": 2, "peak_flops": 1e12, "memory_bytes": 1e9,
    "intra_node": {"bandwidth": 1e10, "latency": 1e-5}, "inter_node": {"bandwidth": 1e9, "latency": 1e-5},
})
SIZES = (1, 2, 4, 8)


def curve(kind: str, scale: float = 1.0) -> dict:
    """Hand-built speedup curves: linear, sublinear (Amdahl, 10% serial) and flat."""
    if kind == "linear":
        return {n: scale * n for n in SIZES}
    if kind == "amdahl":
        return {n: scale / (0.1 + 0.9 / n) for n in SIZES}
    return {n: scale for n in SIZES}


jobs_strategy = st.lists(
    st.tuples(st.sampled_from(["linear", "amdahl", "flat"]), st.floats(0.5, 4.0), st.sampled_from([1, 2, 4]),
              st.sampled_from([1.0, 2.0])),
    min_size=1, max_size=4)


def _value(jobs, sizes, total):
    value = 0.0
    for j in jobs:
        n = sizes.get(j.name, 0)
        if n:
            alone = max(j.rate(m) for m in allowed_sizes(j, total, 4))
            value += j.priority * j.rate(n) / alone
    return value


@settings(max_examples=60, deadline=None)
@given(jobs_strategy, st.sampled_from([4, 8]))
def test_allocate_matches_brute_force(specs, total):
    jobs = [Job(f"j{i}", curve(kind, scale), min_devices=least, priority=prio)
            for i, (kind, scale, least, prio) in enumerate(specs)]
    alloc = ss.allocate(jobs, NODES, devices=total)
    admitted = [j for j in jobs if j.name not in alloc.queued]
    best = max(
        (_value(admitted, dict(zip([j.name for j in admitted], combo)), total)
         for combo in itertools.product(*[allowed_sizes(j, total, 4) for j in admitted])
         if sum(combo) <= total),
        default=0.0)
    assert alloc.objective == pytest.approx(best, rel=1e-12)
    assert alloc.used <= total
    for s in alloc.shares:
        job = next(j for j in jobs if j.name == s.job)
        assert s.devices >= job.min_devices and s.throughput == job.rate(s.devices)
    ids = [d for s in alloc.shares for d in s.device_ids]
    assert len(ids) == len(set(ids)) == alloc.used and all(0 <= d < total for d in ids)
    for s in alloc.shares:  # a job inside a node stays inside it; a larger one takes whole nodes
        nodes = {d // 4 for d in s.device_ids}
        assert len(nodes) == max(1, s.devices // 4)


def test_minimums_and_priorities_decide_who_waits():
    big = Job("big", curve("linear"), min_devices=8)
    small = Job("small", curve("amdahl"), min_devices=1, priority=2.0)
    alloc = ss.allocate([big, small], NODES)
    assert alloc.queued == ("big",) and alloc.sizes() == {"small": 8}
    alloc = ss.allocate([Job("big", curve("linear"), min_devices=8, priority=3.0), small], NODES)
    assert alloc.queued == ("small",) and alloc.sizes() == {"big": 8}


def test_rerun_on_arrival_says_who_changes_size():
    a = Job("a", curve("linear"))
    first = ss.allocate([a], NODES)
    assert first.sizes() == {"a": 8} and first.changed == (("a", 0, 8),)
    b = Job("b", curve("flat"))  # gains nothing from more than one device
    second = ss.allocate([a, b], NODES, previous=first)
    assert second.sizes() == {"a": 4, "b": 1}  # a shrinks to a size that packs; b takes one device
    assert dict((j, (x, y)) for j, x, y in second.changed) == {"a": (8, 4), "b": (0, 1)}
    third = ss.allocate([a], NODES, previous=second)  # b leaves
    assert third.changed == (("a", 4, 8), ("b", 1, 0))
    json.loads(third.to_json())  # plain data


def test_restart_penalty_keeps_sizes_when_the_gain_is_small():
    a = Job("a", {1: 1.0, 2: 1.9, 4: 3.6, 8: 4.0})
    b = Job("b", {1: 1.0, 2: 1.9, 4: 3.6, 8: 4.0})
    before = ss.allocate([a, b], NODES)
    assert before.sizes() == {"a": 4, "b": 4}
    tweaked = Job("a", {1: 1.0, 2: 1.9, 4: 3.6, 8: 4.3})
    assert ss.allocate([tweaked, b], NODES, previous=before).changed == ()


def test_job_from_advice_takes_the_fastest_fitting_mesh_per_count():
    rows = [_row(1, 1.0, fits=False), _row(2, 0.6), _row(4, 0.35), _row(8, 0.3)]
    rows.append(type(rows[0])(**{**rows[2].__dict__, "mesh_shape": (2, 2), "step_s": 0.32, "throughput": 100.0}))
    advice = Advice(rows=tuple(rows), cluster="2x4", batch_mode=BatchMode.GLOBAL, memory_budget=1.0,
                    price_per_device_hour=None, batch=BatchInfo(32, (0,), ("x",), None))
    job = Job.from_advice("j", advice)
    assert job.min_devices == 2 and dict(job.meshes)[4] == (2, 2) and job.rate(4) == 100.0 and job.batch == 32
    weak = Advice(**{**advice.__dict__, "batch_mode": BatchMode.PER_DEVICE})
    with pytest.raises(ss.AdviseError, match="batch_mode='global'"):
        Job.from_advice("j", weak)


def test_placement_packs_nested_sizes_exactly():
    ids = place({"a": 8, "b": 4, "c": 2, "d": 1, "e": 1, "f": 4, "g": 2, "h": 2}, 8)
    assert sorted(d for v in ids.values() for d in v) == list(range(24))


def _trace(seed: int, count: int = 8):
    import random

    rng = random.Random(seed)
    kinds = ["linear", "amdahl", "flat"]
    return [TraceJob(Job(f"j{i}", curve(rng.choice(kinds), rng.uniform(0.5, 2.0)), min_devices=rng.choice([1, 2])),
                     arrival_s=rng.uniform(0, 50), steps=rng.randint(50, 400)) for i in range(count)]


@pytest.mark.parametrize("seed", range(6))
def test_simulated_policy_is_never_worse_than_equal_split(seed):
    trace = _trace(seed)
    ours = simulate(trace, NODES, "shardsearch", restart_s=1.0)
    equal = simulate(trace, NODES, "equal", restart_s=1.0)
    fcfs = simulate(trace, NODES, "fcfs")
    for result in (ours, equal, fcfs):
        assert set(result.jct_s) == {t.job.name for t in trace} and 0 < result.utilization <= 1 + 1e-9
    assert ours.mean_jct_s <= equal.mean_jct_s * (1 + 1e-9)
    # at every decision our split is worth at least the equal split of the same jobs (less
    # the restart penalty its objective charges for resizing)
    jobs = {tj.job.name: tj.job for tj in trace}
    for _, sizes, present in ours.timeline:
        here = [jobs[name] for name in present]
        assert _value(here, sizes, 8) >= _value(here, _equal(here, 8, 4), 8) * (1 - 0.1) - 1e-12


def test_a_resized_job_restarts_from_its_checkpoint_under_the_new_plan(tmp_path):
    """The allocation's flow end to end: job a runs on a 4-device share by its advice's plan,
    job b arrives with a higher priority, allocate shrinks a, and a restarts from its
    checkpoint under the plan for its new count; its parameters after 3 steps match plain
    jit's (SGD with momentum)."""
    import jax
    import numpy as np
    import optax

    from helpers import concrete_mlp_args, make_train_step
    from test_advise import TWO_NODES, mlp_args

    step = make_train_step(optax.sgd(0.1, momentum=0.9))
    advice = ss.advise(step, *mlp_args(), cluster=TWO_NODES, devices=[1, 2, 4, 8], progress=False)
    plans = advice.save_plans(tmp_path / "plans")
    a = Job.from_advice("a", advice, plans=plans)
    first = ss.allocate([a], TWO_NODES, devices=4)
    urgent = Job("b", curve("linear"), priority=5.0)
    second = ss.allocate([a, urgent], TWO_NODES, devices=4, previous=first)
    before, after = first.sizes()["a"], second.sizes()["a"]
    assert before == 4 and after == 2 and ("a", 4, 2) in second.changed

    args = concrete_mlp_args(32, 256, layers=2, optimizer=optax.sgd(0.1, momentum=0.9))
    plan = ss.Plan.load(first.shares[0].plan_path)
    params, opt_state, _ = plan.apply(step)(*args)
    params, opt_state, _ = plan.apply(step)(params, opt_state, args[2])
    ss.save_checkpoint(tmp_path / "ckpt", (params, opt_state))
    share = next(s for s in second.shares if s.job == "a")
    resized = ss.Plan.load(share.plan_path)
    assert resized.mesh.size == after and share.device_ids == tuple(range(after))
    like = jax.eval_shape(lambda: (params, opt_state))
    params, opt_state = ss.restore_checkpoint(tmp_path / "ckpt", like, plan=resized, argnum=(0, 1))
    params, _, loss = resized.apply(step)(params, opt_state, args[2])

    want = args
    for _ in range(3):
        want = jax.jit(step)(*want[:2], args[2])
    for x, y in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(want[0])):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
