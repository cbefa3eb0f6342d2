"""A scan over layers is planned once: its body's operators get strategies like an
unrolled layer's, the stacked layer dim stays whole, and the compiled step keeps the loop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import shardsearch as ss
from shardsearch.trace import trace
from test_numerics import SLOW_COMPUTE, run_steps

WIDTH, BATCH = 64, 32


def _loss(params, batch):
    def layer(x, w):
        return jnp.tanh(x @ w["a"]) @ w["b"] + x, None

    x, _ = jax.lax.scan(layer, batch["x"], params["layers"])
    return jnp.mean((x - batch["y"]) ** 2)


def _step(optimizer):
    def train_step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(_loss)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def _args(layers, optimizer, seed=0):
    k = jax.random.split(jax.random.key(seed), 4)
    params = {"layers": {"a": 0.1 * jax.random.normal(k[0], (layers, WIDTH, 4 * WIDTH)),
                         "b": 0.1 * jax.random.normal(k[1], (layers, 4 * WIDTH, WIDTH))}}
    batch = {"x": jax.random.normal(k[2], (BATCH, WIDTH)), "y": jax.random.normal(k[3], (BATCH, WIDTH))}
    return params, optimizer.init(params), batch


def test_the_body_is_planned_once_whatever_the_depth():
    opt = optax.sgd(0.1)
    shallow, deep = (trace(_step(opt), _args(n, opt)) for n in (2, 16))
    assert len(shallow.nodes) == len(deep.nodes)  # no unrolling
    assert [len(g.loops) for g in (shallow, deep)] == [2, 2]  # forward and backward scans
    body = {deep.nodes[i].primitive for loop in deep.loops for i in loop.body}
    assert "dot_general" in body
    assert all(deep.nodes[i].trips == 16 for loop in deep.loops for i in loop.body)


@pytest.mark.slow
def test_scanned_layers_get_real_shardings_and_match_jit():
    opt = optax.sgd(0.05, momentum=0.9)  # Adam would turn summation-order noise into +-lr steps
    args = _args(4, opt)
    step = ss.auto(_step(opt), mesh=(2, 4), cluster=SLOW_COMPUTE)
    plan = step.plan_for(*args)
    assert not plan.fallback, plan.summary()
    specs = dict(zip(plan.in_paths, plan.flat_in_specs))
    kernels = [specs["args[0]['layers']['a']"], specs["args[0]['layers']['b']"]]
    assert all(k[0] == () for k in kernels)  # the stacked layer dim stays whole
    assert any(any(d) for k in kernels for d in k[1:]), kernels  # and the layers are split
    assert " while(" in step.lower(*args).compile().as_text() or "while" in step.lower(*args).as_text()
    got, want = run_steps(step, *args), run_steps(jax.jit(_step(opt)), *args)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-4)
    for g, w in zip(jax.tree_util.tree_leaves(got[0]), jax.tree_util.tree_leaves(want[0])):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
