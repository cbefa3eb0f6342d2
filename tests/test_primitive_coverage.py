"""No operator left behind: every primitive jax can bind has a strategy rule or a reason.

The list of primitives comes from jax's own rule tables (shardsearch.trace.primitives), so
a jax release that adds one fails here, with its name, before a user's plan quietly keeps
it replicated. Each primitive's sample (tests/primitive_samples.py) is traced through the
planner: it must really bind the primitive and plan with no operator left to the default.
"""

import jax
import pytest

import shardsearch as ss
from jax.extend import core as jcore

from cost_model.mesh import MeshShape
from primitive_samples import BINARY_FLOAT, COMPARE, INTEGER, NO_SAMPLE, SAMPLES, UNARY_FLOAT
from shardsearch.strategies import base as registry
from shardsearch.strategies.reasons import INLINED
from shardsearch.trace.primitives import known_primitives
from test_strategies_more import simulate, traced

PAIR = MeshShape(("x",), (2,))  # every dim split in two, in turn: few block shapes to compile
KNOWN = known_primitives()


def test_every_primitive_jax_can_bind_has_a_rule_or_a_reason():
    missing = sorted(KNOWN - set(registry.covered()))
    assert not missing, (
        f"{len(missing)} primitives of jax {jax.__version__} have no strategy rule and no reason: {missing}. "
        "Give each a rule in shardsearch/strategies/ (with a test that the sharded op computes what jit does), "
        "or a one-line reason in shardsearch/strategies/reasons.py why replicated is its only correct layout.")


def test_reasons_are_one_line_and_never_shadow_a_rule():
    for name, why in registry.covered().items():
        assert why == "rule" or (why.strip() and "\n" not in why), name
        assert not (registry.has_rule(name) and registry.reason_for(name)), name


def test_every_primitive_has_a_sample_or_says_why_not():
    assert not set(SAMPLES) & set(NO_SAMPLE), sorted(set(SAMPLES) & set(NO_SAMPLE))
    untested = sorted(KNOWN - set(SAMPLES) - set(NO_SAMPLE))
    assert not untested, f"add a small call of each to tests/primitive_samples.py: {untested}"
    stale = sorted((set(SAMPLES) | set(NO_SAMPLE)) - KNOWN)
    assert not stale, f"jax {jax.__version__} no longer has these primitives: {stale}"


def _bound(jaxpr) -> set[str]:
    """Primitives of a jaxpr and of every jaxpr nested in its equations' params."""
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        subs = list(jcore.jaxprs_in_params(eqn.params))
        if eqn.primitive.name == "custom_linear_solve":
            subs += [j.jaxpr for j in eqn.params["jaxprs"] if j is not None]
        for sub in subs:
            names |= _bound(getattr(sub, "jaxpr", sub))
    return names


@pytest.mark.parametrize("prim", sorted(set(SAMPLES) & KNOWN))
def test_sample_binds_its_primitive_and_plans_with_no_fallback(prim):
    fn, args = SAMPLES[prim]()
    assert prim in _bound(jax.make_jaxpr(fn)(*args).jaxpr), f"the sample of {prim} does not bind it"
    plan = ss.plan(fn, *args, mesh=(2, 4), cluster="h100-8")
    left = sorted({op.primitive for op in plan.fallback})
    assert not left, f"no rule and no reason: {left}"
    nodes = set(plan.node_primitive.values())
    if registry.reason_for(prim) == INLINED:
        assert prim not in nodes
    elif registry.has_rule(prim):
        assert prim in nodes, f"{prim} has a rule but its sample never reaches the planner"


# Rules whose blocks the simulation below cannot run, each tested another way.
NOT_SIMULATED = {
    # shapes in their params: a block needs other params (tests/test_strategies.py)
    "broadcast_in_dim", "reshape", "slice", "iota", "empty", "iota_2x32_shape",
    # all-reduced by max / min / product / logic, not the simulation's sum (tests/test_strategies.py)
    "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or", "reduce_xor",
    # a sharding of the whole array in their params; planned end to end in tests/test_passthrough.py
    "sharding_constraint", "reshard", "device_put", "layout_constraint", "shard_map",
    # no outputs to compare
    "dce_sink", "inspect_sharding",
    # lax's standard elementwise ops: one of each kind stands for the rest (compiling every
    # block of forty special functions takes minutes)
    *UNARY_FLOAT[1:], *BINARY_FLOAT[1:], *INTEGER[1:], *COMPARE[1:],
}


@pytest.mark.parametrize("prim", sorted(p for p in set(SAMPLES) & KNOWN
                                        if registry.has_rule(p) and p not in NOT_SIMULATED))
def test_every_strategy_of_a_ruled_sample_computes_the_unsharded_result(prim):
    """Each device runs the equation on its blocks (plus the strategy's collectives) and
    ends with its block of what the whole equation computes (tests/test_strategies_more.py)."""
    fn, args = SAMPLES[prim]()
    op, eqn = traced(prim, fn, *args)
    simulate(op, eqn, PAIR)
