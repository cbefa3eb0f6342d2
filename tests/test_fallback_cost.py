"""A replicated fallback is priced and shouted: the summary puts a costly one at the top and
the search warns once, at the user's line, naming the primitive, its shapes, where it is
bound and what a rule would save (at most: a rule for it saves less than that figure)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np

import shardsearch as ss
from helpers import primitive_without_a_rule
from shardsearch.fallbacks import costly_fallbacks
from shardsearch.strategies.base import register
from shardsearch.strategies.elementwise import elementwise_rule
from test_numerics import SLOW_COMPUTE

B, D = 256, 512
ARGS = (jax.ShapeDtypeStruct((D, D), jnp.float32), jax.ShapeDtypeStruct((D, D), jnp.float32),
        jax.ShapeDtypeStruct((B, D), jnp.float32))


def _step(twice):
    def loss(w1, w2, x):
        h = jnp.tanh(x @ w1)
        h = twice(h)  # the operator with no rule, between two sharded matmuls
        return jnp.mean((h @ w2) ** 2)

    return jax.grad(loss, argnums=(0, 1))


def _plan(step):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = ss.plan(step, *ARGS, mesh=(2, 4), cluster=SLOW_COMPUTE)
    return plan, [w for w in caught if "no strategy rule" in str(w.message)]


def test_a_costly_fallback_tops_the_summary_and_warns_once_at_the_users_line():
    plan, caught = _plan(_step(primitive_without_a_rule("shardsearch_test_twice_priced")))
    costly = costly_fallbacks(plan)
    assert {f.primitive for f in costly} == {"shardsearch_test_twice_priced"}
    assert all(f.seconds > 0 and f.moved_bytes >= B * D * 4 for f in costly)
    assert all(f.in_shapes == ((B, D),) and f.shapes == ((B, D),) for f in costly)

    assert len(caught) == 1, [str(w.message) for w in caught]
    (w,) = caught
    assert w.filename == __file__  # the user's call to ss.plan, not shardsearch's code
    text = str(w.message)
    assert "shardsearch_test_twice_priced" in text and f"[{B}, {D}] -> [{B}, {D}]" in text
    assert f"at {costly[0].label}" in text and costly[0].label  # where it is bound
    assert "would save up to" in text

    summary = plan.summary().splitlines()
    top = next(i for i, line in enumerate(summary) if line.startswith("!! replicated fallback"))
    assert top < next(i for i, line in enumerate(summary) if line.startswith("predicted step"))
    assert "rules for them would save up to" in summary[top]
    assert "shardsearch_test_twice_priced" in summary[top + 1]


def test_the_price_bounds_what_a_rule_saves():
    """The same step with a rule for the same operator (elementwise) is cheaper, by no more
    than the fallback's price."""
    without, _ = _plan(_step(primitive_without_a_rule("shardsearch_test_twice_unruled")))
    ruled = primitive_without_a_rule("shardsearch_test_twice_ruled")
    register("shardsearch_test_twice_ruled")(elementwise_rule)
    with_rule, caught = _plan(_step(ruled))
    assert with_rule.fallback == () and not caught
    saved = without.predicted.total_s - with_rule.predicted.total_s
    price = without.predicted.fallback_saving_s
    assert 0 < saved <= price * (1 + 1e-6), (saved, price)


def test_a_cheap_fallback_is_listed_but_not_shouted():
    twice = primitive_without_a_rule("shardsearch_test_twice_cheap")

    def loss(w1, w2, x):
        return jnp.mean(jnp.tanh(x @ w1) @ w2) + twice(w1[0, 0])  # a scalar: nothing to split

    plan, caught = _plan(jax.grad(loss, argnums=(0, 1)))
    assert [f.primitive for f in plan.fallback] == ["shardsearch_test_twice_cheap"]
    assert not caught and not costly_fallbacks(plan)
    assert "!! replicated fallback" not in plan.summary()
    np.testing.assert_equal(plan.fallback[0].moved_bytes, 0.0)


def test_the_prices_survive_a_plan_file(tmp_path):
    plan, _ = _plan(_step(primitive_without_a_rule("shardsearch_test_twice_priced")))
    plan.save(tmp_path / "plan.json")
    loaded = ss.Plan.load(tmp_path / "plan.json")
    assert loaded.fallback == plan.fallback and loaded.fallback[0].seconds > 0
    assert loaded.predicted.fallback_saving_s == plan.predicted.fallback_saving_s > 0
    assert costly_fallbacks(loaded) == costly_fallbacks(plan)
