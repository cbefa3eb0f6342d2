"""Gradient accumulation through the public API (``num_microbatches=M``): one jitted
program (PRE, a scan over the microbatches with the micro graph's intra-op plan pinned
inside, POST) that computes what plain jax.jit computes, on a (2, 4) mesh."""

import warnings

import jax
import numpy as np
import optax
import pytest

import shardsearch as ss
from helpers import assert_trees_close, concrete_mlp_args, make_train_step
from models import bert, gpt
from shardsearch import cache
from shardsearch.errors import MicrobatchError
from shardsearch.plan import Plan
from test_microbatch import batch_norm_step
from test_numerics import SLOW_COMPUTE, run_steps

SGD = optax.sgd(0.1, momentum=0.9)
MESH = (2, 4)


def mlp_args(batch=64, hidden=32, layers=3):
    return make_train_step(SGD), concrete_mlp_args(batch, hidden, layers=layers, optimizer=SGD)


def assert_steps_match(step, fn, args, n=3):
    got, want = run_steps(step, *args, n=n), run_steps(jax.jit(fn), *args, n=n)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-4)  # losses
    assert_trees_close(got[0], want[0])  # params
    assert_trees_close(got[1], want[1])  # momenta


@pytest.mark.parametrize("m", [4, 8])
def test_accumulated_mlp_matches_jit(m):
    fn, args = mlp_args()
    step = ss.auto(fn, mesh=MESH, cluster=SLOW_COMPUTE, num_microbatches=m)
    plan = step.plan_for(*args)
    assert plan.pipeline.num_microbatches == m and plan.pipeline.num_stages == 1
    assert any(any(d) for d in plan.flat_in_specs), "expected a plan that splits something"
    assert f"gradient accumulation: {m} microbatches of {64 // m} rows" in plan.summary().lower()
    assert_steps_match(step, fn, args)


@pytest.mark.slow
@pytest.mark.parametrize("make", [lambda: gpt.make(optimizer=SGD), lambda: gpt.make(scan=True, optimizer=SGD),
                                  lambda: bert.make(optimizer=SGD)], ids=["gpt", "gpt_scan", "bert"])
def test_accumulated_models_match_jit(make):
    case = make()
    step = ss.auto(case.train_step, mesh=MESH, cluster=SLOW_COMPUTE, num_microbatches=4)
    assert step.plan_for(*case.args).pipeline.num_microbatches == 4
    assert_steps_match(step, case.train_step, case.args)


def test_accumulation_lowers_to_one_program_that_holds_fewer_activations():
    fn, args = mlp_args(batch=2048, hidden=32, layers=6)  # activations dominate

    def temp_bytes(m):
        lowered = ss.auto(fn, mesh=MESH, cluster=SLOW_COMPUTE, num_microbatches=m).lower(*args)
        assert isinstance(lowered, jax.stages.Lowered)  # one program, as without microbatches
        compiled = lowered.compile()
        assert m == 1 or "while" in compiled.as_text()  # the microbatch loop
        return compiled.memory_analysis().temp_size_in_bytes

    whole, eight = temp_bytes(1), temp_bytes(8)
    assert eight < 0.5 * whole, (whole, eight)


def test_plan_with_microbatches_round_trips_through_a_file(tmp_path):
    fn, args = mlp_args()
    plan = ss.plan(fn, *args, mesh=MESH, cluster=SLOW_COMPUTE, num_microbatches=4)
    plan.save(tmp_path / "plan.json")
    loaded = Plan.load(tmp_path / "plan.json")
    assert loaded.pipeline == plan.pipeline and loaded.fingerprint() == plan.fingerprint()
    assert_steps_match(loaded.apply(fn), fn, args)
    assert plan.fingerprint() != ss.plan(fn, *args, mesh=MESH, cluster=SLOW_COMPUTE).fingerprint()


def test_plan_cache_keys_on_the_microbatches(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_DIR, str(tmp_path / "plans"))
    monkeypatch.delenv(cache.ENV_OFF, raising=False)
    fn, args = mlp_args()
    four = ss.plan(fn, *args, mesh=MESH, cluster=SLOW_COMPUTE, num_microbatches=4)
    eight = ss.plan(fn, *args, mesh=MESH, cluster=SLOW_COMPUTE, num_microbatches=8)
    again = ss.plan(fn, *args, mesh=MESH, cluster=SLOW_COMPUTE, num_microbatches=4)
    assert not eight.stats.cached and again.stats.cached
    assert again.pipeline == four.pipeline and eight.pipeline.num_microbatches == 8


def test_batch_norm_step_runs_whole_with_a_warning_naming_the_operator():
    fn, args = batch_norm_step()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step = ss.auto(fn, mesh=MESH, cluster=SLOW_COMPUTE, num_microbatches=4)
        plan = step.plan_for(*args)
    assert plan.pipeline is None
    warned = [w for w in caught if "num_microbatches=4" in str(w.message)]
    assert warned and "reduce_sum (float32[16,8] -> float32[8])" in str(warned[0].message)
    assert warned[0].filename == __file__  # the warning names the line that asked for microbatches
    assert_steps_match(step, fn, args, n=2)


def test_a_count_that_does_not_divide_the_batch_is_an_error():
    fn, args = mlp_args()
    with pytest.raises(MicrobatchError, match=r"num_microbatches=3 .* Use one of \[1, 2, 4, 8, 16, 32, 64\]"):
        ss.plan(fn, *args, mesh=MESH, cluster=SLOW_COMPUTE, num_microbatches=3)
    with pytest.raises(ss.OptionError, match="num_microbatches"):
        ss.plan(fn, *args, mesh=MESH, cluster=SLOW_COMPUTE, num_microbatches=0)
