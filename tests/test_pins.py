"""Partial pinning: pinned argument layouts are kept, the search completes the rest."""

import jax
import jax.numpy as jnp
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import shardsearch as ss
from helpers import assert_trees_close, concrete_mlp_args, make_train_step
from test_numerics import SLOW_COMPUTE

REPLICATED = P()


def _spec_of(plan, path):
    return dict(zip(plan.in_paths, plan.flat_in_specs))[path]


def _compiled_in_sharding(compiled, path):
    """The sharding the compiled program takes the argument leaf at ``path`` in."""
    shardings, _ = compiled.input_shardings
    flat = jax.tree_util.tree_flatten_with_path(tuple(shardings))[0]
    return {"args" + jax.tree_util.keystr(k): s for k, s in flat}[path]


def test_pinned_mlp_layer_is_honored_and_matches_jit():
    optimizer = optax.adam(1e-3)
    train_step = make_train_step(optimizer)
    args = concrete_mlp_args(64, 64, layers=3, optimizer=optimizer)
    free = ss.plan(train_step, *args, mesh=(2, 4), cluster=SLOW_COMPUTE)
    # a layout the free search does not choose for this weight: the pin must force it
    pin = P("data", "model")
    assert _spec_of(free, "args[0][1]['w']") != (("data",), ("model",))

    step = ss.auto(train_step, mesh=(2, 4), cluster=SLOW_COMPUTE, pins={"[0][1]['w']": pin})
    plan = step.plan_for(*args)
    assert _spec_of(plan, "args[0][1]['w']") == (("data",), ("model",))
    assert plan.in_specs[0][1]["w"] == pin
    # the rest is still searched: other leaves are split, not all left replicated
    others = [s for p, s in zip(plan.in_paths, plan.flat_in_specs) if p != "args[0][1]['w']"]
    assert any(any(d) for d in others)

    compiled = step.lower(*args).compile()
    got = _compiled_in_sharding(compiled, "args[0][1]['w']")
    assert isinstance(got, NamedSharding) and got.is_equivalent_to(NamedSharding(got.mesh, pin), 2)

    out = step(*args)
    want = jax.jit(train_step)(*args)
    assert_trees_close(out, want)


def test_regex_pins_every_matching_leaf_and_first_pin_wins():
    optimizer = optax.sgd(1e-2)
    args = concrete_mlp_args(64, 32, layers=3, optimizer=optimizer)
    pins = [("[0][0]['w']", REPLICATED), (r"\[0\]\[\d+\]\['w'\]", P(None, "model"))]
    plan = ss.plan(make_train_step(optimizer), *args, mesh=(2, 4), cluster=SLOW_COMPUTE, pins=pins)
    specs = dict(zip(plan.in_paths, plan.flat_in_specs))
    assert specs["args[0][0]['w']"] == ((), ())
    assert specs["args[0][1]['w']"] == specs["args[0][2]['w']"] == ((), ("model",))
    # the plan's own path form works too, and a short spec leaves trailing dims replicated
    plan = ss.plan(make_train_step(optimizer), *args, mesh=(2, 4), cluster=SLOW_COMPUTE,
                   pins={"args[2][0]": P("data")})
    assert dict(zip(plan.in_paths, plan.flat_in_specs))["args[2][0]"] == (("data",), ())


def _f(w, x):
    return jnp.tanh(x @ w).sum()


W, X = jax.ShapeDtypeStruct((32, 36), jnp.float32), jax.ShapeDtypeStruct((64, 32), jnp.float32)


@pytest.mark.parametrize(
    "pins, message",
    [
        ({"[0]['w']": P("model")}, r"pin \"\[0\]\['w'\]\" names no argument leaf.*'\[0\]', '\[1\]'"),
        ({"[(": P("model")}, r"names no argument leaf \(it is no exact path, and not a valid regex"),
        ({"[0]": P("tensor")}, r"names mesh axis 'tensor', but the mesh has axes \['data', 'model'\]"),
        ({"[1]": P(None, None, "data")}, r"has 3 entries but the leaf has rank 2 \(shape \(64, 32\)\)"),
        ({"[0]": P(None, ("data", "model"))}, r"dim 1 of shape \(32, 36\) has size 36, which mesh axes "
                                              r"\['data', 'model'\] \(together 8 devices\) do not divide"),
        ({"[0]": P("data", "data")}, r"uses mesh axis 'data' twice"),
        ({"[0]": ("data",)}, r"is not a jax.sharding.PartitionSpec"),
        ({"[0]": P(P.UNCONSTRAINED)}, r"entry .* is not a mesh-axis name"),
        ("[0]", r"is not a dict \{path: PartitionSpec\}"),
    ],
)
def test_bad_pins_raise_pin_errors(pins, message):
    with pytest.raises(ss.PinError, match=message):
        ss.plan(_f, W, X, mesh=(2, 4), pins=pins)


def test_pins_are_part_of_the_options():
    step = ss.auto(_f, mesh=(2, 4), cluster=SLOW_COMPUTE, pins={"[1]": P("model")})
    assert step.config.pins == (("[1]", P("model")),)
    assert step.plan_for(W, X).flat_in_specs[1] == (("model",), ())
    # a config passed by keyword normalizes the same way
    assert ss.SearchConfig(pins=[("[1]", P("model"))]) == step.config


@pytest.mark.slow
def test_gpt_with_the_embedding_pinned_on_vocab():
    from benchmarks.models.gpt import CONFIGS, make_workload

    work = make_workload(CONFIGS["gpt-tiny"])
    wte, pin = "args[0]['embed']['wte']", P("model", None)
    free = ss.plan(work.train_step, *work.args, mesh=(2, 4), cluster="h100-8")
    assert _spec_of(free, wte) != (("model",), ())  # the pin changes what the search would do

    step = ss.auto(work.train_step, mesh=(2, 4), cluster="h100-8", pins={"[0]['embed']['wte']": pin})
    plan = step.plan_for(*work.args)
    assert _spec_of(plan, wte) == (("model",), ())
    # still optimized around it: the batch is split, and the plan is not the free one
    assert any(any(d) for p, d in zip(plan.in_paths, plan.flat_in_specs) if "tokens" in p)
    assert plan.fingerprint() != free.fingerprint()
    compiled = step.lower(*work.args).compile()
    got = _compiled_in_sharding(compiled, wte)
    assert got.is_equivalent_to(NamedSharding(got.mesh, pin), 2)  # P('model') is P('model', None)
