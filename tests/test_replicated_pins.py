"""A plan that splits nothing is compiled without pins on its intermediates
(apply.executable.replicated_throughout): XLA leaves them replicated by itself, and the pins
only moved its fusion boundaries (wresnet-tiny on 2x4-slow: 0.1403 ms judged pinned, 0.1402
unpinned, which is jax.jit's program)."""

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

import shardsearch as ss
from shardsearch.apply.executable import replicated_throughout


def step(w, x):
    return jax.grad(lambda w: jnp.tanh(x @ w).sum())(w)


ARGS = (jax.ShapeDtypeStruct((16, 16), jnp.float32), jax.ShapeDtypeStruct((8, 16), jnp.float32))


def _constraints(pins) -> tuple[int, object]:
    auto = ss.auto(step, mesh=(2,), cluster="h100-8", cache=False, pins=pins)
    text = auto.lower(*ARGS).as_text()
    return text.count("sharding_constraint"), auto.plan_for(*ARGS)


def test_a_replicated_plan_has_no_pins_and_a_split_one_keeps_them():
    n, plan = _constraints((("[0]", P()), ("[1]", P())))
    assert replicated_throughout(plan) and n == 0
    n, plan = _constraints((("[0]", P()), ("[1]", P("data"))))
    assert not replicated_throughout(plan) and n > 0  # the batch split: its intermediates pinned as planned
