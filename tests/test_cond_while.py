"""cond and while_loop get real plans: a cond's branches are planned inline with one
layout per output, a while loop's body is planned once, and both run as lax.switch /
lax.while_loop again with the planned layouts pinned inside."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

import shardsearch as ss
from helpers import assert_trees_close, concrete_mlp_args, make_train_step
from shardsearch.plan import to_partition_spec
from shardsearch.trace import trace
from test_numerics import SLOW_COMPUTE, run_steps

MESH = (2, 4)
TRIVIAL_ELEMENTS = 64


def _big_fallback(plan):
    return [f for f in plan.fallback if max((math.prod(s) for s in f.shapes), default=0) > TRIVIAL_ELEMENTS]


def _spec(x):
    return x.sharding.spec


def _assert_state_split_like_params(params, moments):
    """Where the plan splits a parameter, each moment of it (mu, nu, accumulated grads)
    is split the same way; and it splits some (else the check says nothing). A
    replicated parameter may have split moments (ZeRO-1 style)."""
    split = [p for p in jax.tree_util.tree_leaves(params) if any(d is not None for d in _spec(p))]
    assert split
    for tree in moments:
        for p, m in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(tree), strict=True):
            if any(d is not None for d in _spec(p)):
                assert m.sharding.is_equivalent_to(p.sharding, p.ndim), (_spec(p), _spec(m))


def test_gradient_accumulation_plans_the_update_inside_the_cond():
    opt = optax.MultiSteps(optax.adamw(1e-3), every_k_schedule=2)
    args = concrete_mlp_args(64, 64, layers=2, optimizer=opt)
    graph = trace(make_train_step(opt), args)
    assert len(graph.conds) == 1 and len(graph.conds[0].branches) == 2
    assert all(graph.nodes[m].primitive == "cond_merge" for m in graph.conds[0].merges)
    step = ss.auto(make_train_step(opt), mesh=MESH, cluster=SLOW_COMPUTE)
    plan = step.plan_for(*args)
    assert not _big_fallback(plan), plan.summary()
    # still a cond, not both branches computed (XLA may still turn small branches into selects)
    assert step.lower(*args).as_text().count("stablehlo.case") == 1
    got = run_steps(step, *args, n=4)  # steps 2 and 4 apply the update, 1 and 3 only accumulate
    want = run_steps(jax.jit(make_train_step(opt)), *args, n=4)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-4)
    assert_trees_close(got[0], want[0])
    assert_trees_close(got[1], want[1])
    adam = got[1].inner_opt_state[0]
    _assert_state_split_like_params(got[0], [adam.mu, adam.nu, got[1].acc_grads])


def test_apply_if_finite_skips_an_inf_step_like_jit():
    opt = optax.apply_if_finite(optax.adam(1e-3), max_consecutive_errors=3)
    params, opt_state, (x, y) = concrete_mlp_args(64, 64, layers=2, optimizer=opt)
    step = ss.auto(make_train_step(opt), mesh=MESH, cluster=SLOW_COMPUTE)
    plan = step.plan_for(params, opt_state, (x, y))
    assert not _big_fallback(plan), plan.summary()
    bad = (x.at[0, 0].set(jnp.inf), y)
    got, want = (params, opt_state), (params, opt_state)
    for batch in ((x, y), bad):  # applied, then skipped
        *got, _ = step(*got, batch)
        *want, _ = jax.jit(make_train_step(opt))(*want, batch)
        assert_trees_close(got, want)
    assert int(got[1].notfinite_count) == 1 and int(got[1].total_notfinite) == 1
    _assert_state_split_like_params(got[0], [got[1].inner_state[0].mu, got[1].inner_state[0].nu])


def _halving_loss(params, batch):
    """A data-dependent loop: halve the activations until their norm is under a bound."""
    x, y = batch
    h = jnp.tanh(x @ params["w1"])
    small = jax.lax.while_loop(lambda z: jnp.sqrt(jnp.sum(z * z)) > 1.0, lambda z: z * 0.5,
                               jax.lax.stop_gradient(h))
    return jnp.mean(((h + small) @ params["w2"] - y) ** 2)


def test_data_dependent_while_loop_in_a_step():
    opt = optax.sgd(0.1)

    def train_step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(_halving_loss)(params, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    k = jax.random.split(jax.random.key(1), 4)
    params = {"w1": 0.1 * jax.random.normal(k[0], (64, 256)), "w2": 0.1 * jax.random.normal(k[1], (256, 64))}
    batch = (jax.random.normal(k[2], (64, 64)), jax.random.normal(k[3], (64, 64)))
    args = (params, opt.init(params), batch)
    graph = trace(train_step, args)
    (loop,) = graph.whiles
    assert {graph.nodes[n].primitive for n in loop.body} == {"mul"}
    step = ss.auto(train_step, mesh=MESH, cluster=SLOW_COMPUTE)
    plan = step.plan_for(*args)
    assert not _big_fallback(plan), plan.summary()
    assert any(plan.node_out_specs[n][0] != ((), ()) for n in loop.carries)  # the carry is split
    assert "stablehlo.while" in step.lower(*args).as_text()
    got, want = run_steps(step, *args), run_steps(jax.jit(train_step), *args)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-4)
    assert_trees_close(got[0], want[0])


def _disagreeing(a, b, pred):
    """Each branch returns an operand its caller lays out differently."""
    return jax.lax.cond(pred, lambda a, b: jnp.sin(a), lambda a, b: 2.0 * b, a, b)


def test_branches_wanting_different_layouts_share_one_output_layout():
    a = jax.random.normal(jax.random.key(0), (64, 64))
    b = jax.random.normal(jax.random.key(1), (64, 64))
    step = ss.auto(_disagreeing, mesh=MESH, cluster=SLOW_COMPUTE, pins={"[0]": P("data", "model"),
                                                                        "[1]": P("model", "data")})
    plan = step.plan_for(a, b, True)
    (cond,) = trace(_disagreeing, (a, b, True)).conds
    (merge,) = cond.merges
    assert plan.flat_in_specs[:2] == ((("data",), ("model",)), (("model",), ("data",)))
    # one branch (at its op or where it hands its result over) moves its tensor
    assert any(n in plan.node_operand_specs for n in cond.members)
    assert plan.node_out_specs[merge][0] == plan.flat_out_specs[0]
    planned = NamedSharding(step.lower(a, b, True).compile().output_shardings.mesh,
                            to_partition_spec(plan.flat_out_specs[0]))
    for pred in (True, False):  # whichever branch runs, the result comes out as planned
        got = step(a, b, pred)
        np.testing.assert_allclose(got, _disagreeing(a, b, pred), rtol=1e-6)
        assert got.sharding.is_equivalent_to(planned, 2), (got.sharding, plan.flat_out_specs[0])


def _cond_in_scan(ws, x, flags):
    def layer(x, wf):
        w, f = wf
        return jax.lax.cond(f, lambda x: jnp.tanh(x @ w), lambda x: x @ w.T, x), None

    x, _ = jax.lax.scan(layer, x, (ws, flags))
    return jnp.sum(x**2)


def _scan_in_cond(ws, x, flags):
    def deep(x):
        return jax.lax.scan(lambda x, w: (jnp.tanh(x @ w), None), x, ws)[0]

    return jnp.sum(jax.lax.cond(flags[0], deep, lambda x: x * 3.0, x) ** 2)


def test_nested_cond_and_scan_are_planned_and_match_jit():
    ws = jnp.stack([jnp.eye(64) * 0.5 + 0.01 * i for i in range(3)])
    x = jax.random.normal(jax.random.key(0), (32, 64))
    both = (jnp.array([True, False, True]), jnp.array([False, True, False]))  # every branch runs
    for fn in (_cond_in_scan, _scan_in_cond):
        grad = jax.value_and_grad(fn)
        graph = trace(grad, (ws, x, both[0]))
        assert graph.conds and graph.loops
        step = ss.auto(grad, mesh=MESH, cluster=SLOW_COMPUTE)
        plan = step.plan_for(ws, x, both[0])
        assert not _big_fallback(plan), plan.summary()
        for flags in both:
            assert_trees_close(step(ws, x, flags), grad(ws, x, flags), rtol=1e-5)
