"""shardsearch.auto follows jax.jit's calling conventions: static and donated arguments
by position or name, keyword arguments, and errors that name a bad leaf's path."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import shardsearch as ss
from helpers import assert_trees_close, concrete_mlp_args, make_train_step


def _step_with_config(params, opt_state, batch, lr_scale, use_tanh=True):
    """A train step whose ``lr_scale`` (a Python float) and ``use_tanh`` (a bool) are static."""
    optimizer = optax.sgd(0.1 * lr_scale, momentum=0.9)
    act = jnp.tanh if use_tanh else jax.nn.relu

    def loss_fn(p):
        h = batch[0]
        for layer in p:
            h = act(h @ layer["w"] + layer["b"])
        return jnp.mean((h - batch[1]) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def _args():
    params, _, batch = concrete_mlp_args(64, 32, layers=2)
    return params, optax.sgd(0.1, momentum=0.9).init(params), batch


def test_static_argnums_match_jax_jit_and_plan_once_per_value():
    params, opt_state, batch = _args()
    want = jax.jit(_step_with_config, static_argnums=(3, 4))
    step = ss.auto(_step_with_config, mesh=(2, 4), static_argnums=(3, 4))
    for scale, use_tanh in ((1.0, True), (0.5, False)):
        got = step(params, opt_state, batch, scale, use_tanh)
        ref = want(params, opt_state, batch, scale, use_tanh)
        assert_trees_close(got[0], ref[0])  # parameters after SGD with momentum
        np.testing.assert_allclose(got[2], ref[2], rtol=1e-4)
    assert len(step._entries) == 2  # one plan per static value
    step(params, opt_state, batch, 1.0, True)
    assert len(step._entries) == 2  # the first value's plan is reused
    # the static position stays in the argument paths as an empty None
    plan = step.plan_for(params, opt_state, batch, 1.0, True)
    assert plan.in_specs[3] is None and "args[2][0]" in plan.in_paths


def test_static_argnames_and_keyword_calls_match_jax_jit():
    params, opt_state, batch = _args()
    want = jax.jit(_step_with_config, static_argnames=("lr_scale", "use_tanh"))
    step = ss.auto(_step_with_config, mesh=(2, 4), static_argnames=("lr_scale", "use_tanh"))
    got = step(params, opt_state, batch=batch, lr_scale=2.0, use_tanh=False)
    ref = want(params, opt_state, batch=batch, lr_scale=2.0, use_tanh=False)
    assert_trees_close(got[0], ref[0])
    # a static position named by its parameter works positionally too (jax.jit infers it)
    again = step(params, opt_state, batch, 2.0, False)
    assert_trees_close(again[0], ref[0])
    assert len(step._entries) == 1


def test_donate_argnames_donates_like_donate_argnums():
    optimizer = optax.sgd(0.1, momentum=0.9)
    args = concrete_mlp_args(64, 32, layers=2, optimizer=optimizer)
    train_step = make_train_step(optimizer)
    by_name = ss.auto(train_step, mesh=(2, 4), donate_argnames=("params", "opt_state"))
    by_num = ss.auto(train_step, mesh=(2, 4), donate_argnums=(0, 1))
    assert by_name.donate_argnums == by_num.donate_argnums == (0, 1)
    want = jax.jit(train_step)(*args)[0]
    params = jax.tree_util.tree_map(lambda x: x + 0, args[0])
    out = by_name(params, args[1], args[2])
    assert_trees_close(out[0], want)
    placed = by_name(out[0], out[1], args[2])  # already laid out as planned: passed as is, donated
    assert all(x.is_deleted() for x in jax.tree_util.tree_leaves(out[0]))
    assert not any(x.is_deleted() for x in jax.tree_util.tree_leaves(placed[0]))


def test_a_bad_leaf_is_named_by_its_path_as_jax_jit_names_it():
    params, opt_state, (x, y) = _args()
    batch = {"x": x, "y": y, "label": "abc"}

    def step(params, opt_state, batch):
        return jnp.sum(batch["x"] @ params[0]["w"])

    with pytest.raises(TypeError, match=r"batch\['label'\]") as jax_error:
        jax.jit(step)(params, opt_state, batch)
    with pytest.raises(ss.ArgumentError) as ours:
        ss.auto(step, mesh=(2, 4))(params, opt_state, batch)
    text = str(ours.value)
    assert "args[2]['label']" in text and "batch['label']" in text and "static_argnums" in text
    assert isinstance(ours.value, TypeError) and "batch['label']" in str(jax_error.value)
    with pytest.raises(ss.ArgumentError, match=r"args\[2\]\['label'\]"):
        ss.plan(step, params, opt_state, batch, mesh=(2, 4))


def test_bad_static_options_are_refused_naming_the_fix():
    params, opt_state, batch = _args()
    with pytest.raises(ss.OptionError, match=r"static_argnums=\(7,\) but accepts only 5"):
        ss.auto(_step_with_config, mesh=(2, 4), static_argnums=7)
    with pytest.raises(ss.OptionError, match=r"no parameter\(s\) \['lr'\] given in static_argnames"):
        ss.auto(_step_with_config, mesh=(2, 4), static_argnames="lr")
    step = ss.auto(_step_with_config, mesh=(2, 4), static_argnums=3)
    with pytest.raises(ss.OptionError, match=r"static argument 3 \(lr_scale\) .* is a list, which is not hashable"):
        step(params, opt_state, batch, [1.0])
