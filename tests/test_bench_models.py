"""Benchmark models: every config builds abstractly with a sane size and well-formed
logical axes, and the tiny configs actually train."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from benchmarks.models import LOGICAL_AXES, SUITES, get_workload
from benchmarks.models._common import is_axes_leaf
from shardsearch.errors import ShardsearchError

ALL = [(s, name) for s, mod in SUITES.items() for name in mod.CONFIGS]
TINY = {"gpt": "gpt-tiny", "bert": "bert-tiny", "moe": "moe-tiny", "wresnet": "wresnet-tiny",
        "mlp": "mlp-tiny"}  # fmt: skip

# nominal sizes of the published configs; scaled-down ones are checked only for > 0
NOMINAL = {
    "gpt-350M": 350e6, "gpt-1.3B": 1.3e9, "gpt-2.6B": 2.6e9, "gpt-6.7B": 6.7e9,
    "gpt-15B": 15e9, "gpt-39B": 39e9,
    "bert-base": 110e6, "bert-large": 340e6, "bert-1.3B": 1.3e9, "bert-3.9B": 3.9e9,
    "moe-380M": 380e6, "moe-690M": 690e6, "moe-1.3B": 1.3e9, "moe-2.4B": 2.4e9,
    "moe-7.1B": 7.1e9, "moe-10B": 10e9, "moe-27B": 27e9, "moe-70B": 70e9,
    "wresnet-250M": 250e6, "wresnet-500M": 500e6, "wresnet-1B": 1e9, "wresnet-2B": 2e9,
    "wresnet-4B": 4e9, "wresnet-6.8B": 6.8e9, "wresnet-13B": 13e9,
    "mlp-dp": 6 * (512 * 512 + 512), "mlp-tp": 6 * (4096 * 4096 + 4096),
    # slices of the published widths: layers x 12 h^2 + the 51200-token embedding
    "gpt-350M-8L": 8 * 12 * 1024**2 + 51200 * 1024, "gpt-medium-bf16": 8 * 12 * 1024**2 + 51200 * 1024,
    "gpt-1.3B-8L": 8 * 12 * 2048**2 + 51200 * 2048, "gpt-1.3B-16L": 16 * 12 * 2048**2 + 51200 * 2048,
    "bert-medium-bf16": 134e6, "moe-medium-bf16": 205e6, "wresnet-medium-bf16": 25e6,
}  # fmt: skip


def _is_scaled_down(name):
    return name.endswith(("-tiny", "-small"))


@pytest.mark.parametrize("suite,name", ALL)
def test_builds_abstractly_with_right_size(suite, name):
    w = get_workload(suite, name)
    params, opt_state, batch = w.args
    leaves = jax.tree_util.tree_leaves(w.args)
    assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    assert w.params_count == sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params))
    assert w.num_layers > 0 and w.name == name
    if _is_scaled_down(name):
        assert 1e4 < w.params_count < 5e7
    else:
        assert name in NOMINAL, f"add a nominal size for {name}"
        assert 0.85 * NOMINAL[name] <= w.params_count <= 1.15 * NOMINAL[name]


def test_gpt_sizes_match_alpa_table():
    assert 1.2e9 <= get_workload("gpt", "gpt-1.3B").params_count <= 1.5e9
    assert 38e9 <= get_workload("gpt", "gpt-39B").params_count <= 40.5e9


@pytest.mark.parametrize("suite,name", ALL)
def test_logical_axes_match_args(suite, name):
    w = get_workload(suite, name)
    axes_leaves, axes_def = jax.tree_util.tree_flatten(w.logical_axes, is_leaf=is_axes_leaf)
    assert axes_def == jax.tree_util.tree_structure(w.args)
    for arg, axes in zip(jax.tree_util.tree_leaves(w.args), axes_leaves):
        assert is_axes_leaf(axes) and len(axes) == len(arg.shape), (arg, axes)
        named = [a for a in axes if a is not None]
        assert set(named) <= set(LOGICAL_AXES), axes
        assert len(named) == len(set(named)), f"a name used twice in one tensor: {axes}"
    # Adam's moments carry their parameter's axes; a big kernel must not be unnamed
    flat_opt = jax.tree_util.tree_leaves(w.logical_axes[1], is_leaf=is_axes_leaf)
    assert any(len(a) >= 2 and all(x is not None for x in a[-2:]) for a in flat_opt)
    assert () in flat_opt  # the step counter


def test_opt_state_axes_mirror_params():
    w = get_workload("gpt", "gpt-tiny")
    mu_axes = w.logical_axes[1][0].mu
    assert mu_axes == w.logical_axes[0]
    assert w.logical_axes[0]["layers"][0]["attn"]["q"] == ("embed", "heads", "head_dim")
    assert w.logical_axes[0]["layers"][0]["attn"]["o"] == ("heads", "head_dim", "embed")
    assert w.logical_axes[2]["tokens"] == ("batch", "seq")


def test_other_optimizers_get_axes():
    w = get_workload("mlp", "mlp-tiny", optimizer=optax.sgd(0.1, momentum=0.9))
    assert w.logical_axes[1][0].trace == w.logical_axes[0]
    # Adafactor's factored moments do not mirror a param: they get all-None, not an error
    w = get_workload("mlp", "mlp-tiny", optimizer=optax.adafactor(1e-3))
    assert w.logical_axes[1][0].v == w.logical_axes[0]
    assert w.logical_axes[1][0].v_row[0]["w"] == (None,)


def test_moe_expert_kernels_are_stacked():
    w = get_workload("moe", "moe-tiny")
    moe_layer = w.logical_axes[0]["layers"][1]["moe"]
    assert moe_layer["w1"] == ("experts", "embed", "mlp")
    assert w.args[0]["layers"][1]["moe"]["w1"].shape == (8, 128, 1024)
    assert "mlp" in w.logical_axes[0]["layers"][0]  # dense FFN in the other layers


def test_moe_routing_respects_capacity():
    from benchmarks.models import moe

    logits = jax.random.normal(jax.random.key(0), (2, 32, 4))
    combine, _ = jax.jit(moe.route, static_argnums=(1, 2))(logits, 2, 6)
    dispatch = np.asarray(combine > 0)  # [batch, seq, experts, capacity]
    assert dispatch.sum(axis=1).max() <= 1  # each (expert, slot) holds at most one token
    assert (dispatch.sum(axis=(2, 3)) <= 2).all()  # each token goes to <= top_k experts
    # each expert takes min(capacity, tokens that picked it among their top 2)
    top2 = np.argsort(-np.asarray(logits), axis=-1)[..., :2]
    requests = np.stack([(top2 == x).any(-1).sum(-1) for x in range(4)], axis=-1)
    np.testing.assert_array_equal(dispatch.sum(axis=(1, 3)), np.minimum(requests, 6))
    # gates of a token sum to at most 1 (exactly 1 unless a choice was dropped)
    np.testing.assert_array_less(np.asarray(combine.sum(axis=(2, 3))), 1.0 + 1e-5)


def test_moe_step_splits_into_microbatches():
    """The load-balancing loss is per routing group (a sequence) and averaged: the batch's
    is the mean of its rows', so shardsearch may cut the step into microbatches."""
    from benchmarks.models import moe
    from shardsearch.pipeline.microbatch import split_microbatches
    from shardsearch.trace import trace

    logits = jax.random.normal(jax.random.key(1), (4, 32, 4))
    aux = lambda x: moe.route(x, 2, 6)[1]  # noqa: E731
    np.testing.assert_allclose(aux(logits), np.mean([aux(logits[i:i + 1]) for i in range(4)]), rtol=1e-6)
    w = get_workload("moe", "moe-tiny")
    assert split_microbatches(trace(w.train_step, w.args)).batch_size == 16


def test_wresnet_kernels_are_hwio():
    w = get_workload("wresnet", "wresnet-tiny")
    stem = w.args[0]["stem"]["conv"]
    assert stem.shape == (7, 7, 3, 16)
    assert w.logical_axes[0]["stem"]["conv"] == (None, None, "conv_in", "conv_out")
    assert w.logical_axes[2]["images"] == ("batch", "height", "width", None)


def test_abstract_build_of_largest_is_fast():
    import time

    t = time.perf_counter()
    w = get_workload("moe", "moe-70B")
    assert time.perf_counter() - t < 10.0
    assert w.params_count > 6e10


@pytest.mark.parametrize("suite", list(SUITES))
def test_tiny_config_trains(suite):
    mod = SUITES[suite]
    cfg = mod.CONFIGS[TINY[suite]]
    w = mod.make_workload(cfg)
    params = mod.init_params(cfg, jax.random.key(0))
    batch = mod.make_batch(cfg, jax.random.key(1))
    # the real arrays have exactly the abstract shapes the workload advertises
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(w.args[0])
    for real, abst in zip(jax.tree_util.tree_leaves((params, batch)),
                          jax.tree_util.tree_leaves((w.args[0], w.args[2]))):  # fmt: skip
        assert real.shape == abst.shape and real.dtype == abst.dtype
    opt_state = optax.adamw(1e-4).init(params) if suite != "mlp" else optax.adam(1e-3).init(params)
    step = jax.jit(w.train_step)
    losses = []
    for _ in range(2):
        params, opt_state, loss = step(params, opt_state, batch)
        losses.append(float(loss))
    assert all(np.isfinite(losses)), losses
    assert losses[1] != losses[0], losses
    assert losses[1] < losses[0], losses  # same batch twice: the step must make progress


def test_unknown_names_raise_clear_error():
    with pytest.raises(ShardsearchError, match="valid suites: bert, gpt, mlp, moe, wresnet"):
        get_workload("resnet", "x")
    with pytest.raises(ShardsearchError, match="valid configs: gpt-tiny, gpt-small"):
        get_workload("gpt", "gpt-7B")


def test_bfloat16_config_builds():
    import dataclasses

    from benchmarks.models import gpt

    cfg = dataclasses.replace(gpt.CONFIGS["gpt-tiny"], dtype="bfloat16")
    w = gpt.make_workload(cfg)
    assert w.args[0]["embed"]["wte"].dtype == jnp.bfloat16
    assert w.args[2]["tokens"].dtype == jnp.int32
    loss = jax.eval_shape(w.train_step, *w.args)[2]
    assert loss.shape == ()
