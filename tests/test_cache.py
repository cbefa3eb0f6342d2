"""The plan cache: a second identical search is a hit; anything the plan depends on misses."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

import shardsearch as ss
from cost_model import Cluster
from shardsearch import cache
from test_numerics import SLOW_COMPUTE


def _f(w, x):
    return jnp.tanh(x @ w).sum()


ARGS = (jax.ShapeDtypeStruct((64, 64), jnp.float32), jax.ShapeDtypeStruct((128, 64), jnp.float32))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_DIR, str(tmp_path / "plans"))
    monkeypatch.delenv(cache.ENV_OFF, raising=False)
    return tmp_path / "plans"


def _plan(**kw):
    kw = {"mesh": (2, 4), "cluster": SLOW_COMPUTE, **kw}
    return ss.plan(_f, *ARGS, **kw)


def test_second_identical_search_is_a_hit(cache_dir):
    first = _plan()
    assert not first.stats.cached
    assert len(list(cache_dir.glob("*.plan.json"))) == 1
    again = _plan()
    assert again.stats.cached
    assert again.fingerprint() == first.fingerprint() and again.predicted == first.predicted
    assert again.in_specs == first.in_specs  # pytrees rebuilt for this call
    # through auto too, and the cached plan compiles and runs
    step = ss.auto(_f, mesh=(2, 4), cluster=SLOW_COMPUTE)
    assert step.plan_for(*ARGS).stats.cached
    w, x = jnp.ones((64, 64)) / 64, jnp.ones((128, 64))
    assert jnp.allclose(step(w, x), jax.jit(_f)(w, x), rtol=1e-5)


@pytest.mark.parametrize(
    "change",
    [
        {"cluster": dataclasses.replace(SLOW_COMPUTE, peak_flops=2e9)},
        {"cluster": "h100-8"},
        {"mesh": (4, 2)},
        {"memory_budget": 1e9},
        {"time_limit_s": 10.0},
        {"follow_elementwise": False},
        {"pins": {"[0]": P("model")}},
    ],
)
def test_anything_the_plan_depends_on_misses(cache_dir, change):
    _plan()
    assert not _plan(**change).stats.cached
    assert _plan(**change).stats.cached  # and is cached in turn
    assert len(list(cache_dir.glob("*.plan.json"))) == 2


def test_a_changed_program_misses(cache_dir):
    _plan()
    wider = (ARGS[0], jax.ShapeDtypeStruct((256, 64), jnp.float32))
    assert not ss.plan(_f, *wider, mesh=(2, 4), cluster=SLOW_COMPUTE).stats.cached
    assert not ss.plan(lambda w, x: jnp.sin(x @ w).sum(), *ARGS, mesh=(2, 4), cluster=SLOW_COMPUTE).stats.cached


def test_changed_planner_code_misses(cache_dir, monkeypatch):
    _plan()
    assert _plan().stats.cached
    monkeypatch.setattr(cache, "planner_hash", lambda: "edited-rules")  # as after editing a strategy rule
    assert not _plan().stats.cached


def test_reporting_options_share_the_entry(cache_dir):
    _plan()
    assert _plan(verbose=True).stats.cached


def test_opt_out_by_option_and_by_environment(cache_dir, monkeypatch):
    _plan(cache=False)
    assert not cache_dir.exists()  # nothing written
    _plan()
    assert not _plan(cache=False).stats.cached  # nothing read either
    monkeypatch.setenv(cache.ENV_OFF, "1")
    assert not _plan().stats.cached


def test_corrupt_file_is_ignored_with_a_warning_and_replaced(cache_dir):
    first = _plan()
    (path,) = cache_dir.glob("*.plan.json")
    path.write_text("{ not json")
    with pytest.warns(UserWarning, match="ignoring the cached plan .* searching again and replacing it"):
        plan = _plan()
    assert not plan.stats.cached and plan.fingerprint() == first.fingerprint()
    assert json.loads(path.read_text())["format"] == "shardsearch-plan"  # replaced
    assert _plan().stats.cached


def test_a_file_for_another_program_is_not_trusted(cache_dir):
    _plan()
    (path,) = cache_dir.glob("*.plan.json")
    d = json.loads(path.read_text())
    d["program_hash"] = "0" * 16
    path.write_text(json.dumps(d))
    with pytest.warns(UserWarning, match="holds a plan for program 0000000000000000"):
        assert not _plan().stats.cached


def test_an_unwritable_folder_costs_a_warning_not_the_plan(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(cache.ENV_DIR, str(blocker / "plans"))  # a folder under a file
    monkeypatch.delenv(cache.ENV_OFF, raising=False)
    with pytest.warns(UserWarning, match="could not write the plan cache file"):
        plan = _plan()
    assert plan.stats.status == "OPTIMAL"


def test_default_folder_and_key_inputs(monkeypatch):
    monkeypatch.delenv(cache.ENV_DIR, raising=False)
    assert cache.cache_dir().parts[-2:] == (".cache", "shardsearch")
    # the cluster's description is documentation: it does not change the key
    described = dataclasses.replace(SLOW_COMPUTE, description="the same figures")
    assert cache._cluster_figures(described) == cache._cluster_figures(SLOW_COMPUTE)
    assert cache._cluster_figures(Cluster.load("h100-8")) != cache._cluster_figures(SLOW_COMPUTE)
