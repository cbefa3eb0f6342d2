"""Rotary attention written with jnp.stack / jnp.unstack / jnp.split (as keras-hub writes it).

The step must plan with no replicated fallback, compute what jax.jit computes, and, with
every argument pinned to data parallelism, compile to no more collectives than jax.jit
given the same input shardings (a missing rule made the plan gather every activation).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import shardsearch as ss
from helpers import assert_trees_close, collectives
from test_numerics import SLOW_COMPUTE

B, T, D, H = 16, 8, 32, 4


def rotary(x, positions):
    """x [B, T, H, hd]: rotate pairs (x1, x2) of the two halves by position-dependent angles."""
    hd = x.shape[-1]
    inv_freq = 1.0 / (10000 ** (jnp.arange(0, hd // 2, dtype=jnp.float32) / (hd // 2)))
    angles = positions[:, :, None, None] * inv_freq  # [B, T, 1, hd/2]
    x1, x2 = jnp.split(x, 2, axis=-1)
    rot = jnp.stack([x1 * jnp.cos(angles) - x2 * jnp.sin(angles),
                     x2 * jnp.cos(angles) + x1 * jnp.sin(angles)], axis=-2)  # [B, T, H, 2, hd/2]
    return rot.reshape(x.shape)


def attention(params, x, positions):
    qkv = (x @ params["qkv"]).reshape(B, T, 3, H, D // H)
    q, k, v = jnp.unstack(qkv, axis=2)
    q, k = rotary(q, positions), rotary(k, positions)
    w = jax.nn.softmax(jnp.einsum("bthd,bshd->bhts", q, k) / np.sqrt(D // H), axis=-1)
    return jnp.einsum("bhts,bshd->bthd", w, v).reshape(B, T, D) @ params["out"]


OPT = optax.sgd(0.1, momentum=0.9)


def train_step(params, opt_state, batch):
    def loss_fn(p):
        y = attention(p, batch["x"], batch["positions"])
        return jnp.mean((y - batch["y"]) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = OPT.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def _args():
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {"qkv": jax.random.normal(k[0], (D, 3 * D)) / np.sqrt(D),
              "out": jax.random.normal(k[1], (D, D)) / np.sqrt(D)}
    batch = {"x": jax.random.normal(k[2], (B, T, D)),
             "positions": jnp.broadcast_to(jnp.arange(T, dtype=jnp.float32), (B, T)),
             "y": jax.random.normal(k[3], (B, T, D))}
    return params, OPT.init(params), batch


def test_rotary_step_plans_without_fallback_and_matches_jit():
    args = _args()
    step = ss.auto(train_step, mesh=(2, 4), cluster=SLOW_COMPUTE)
    plan = step.plan_for(*args)
    prims = set(plan.node_primitive.values())
    assert {"stack", "unstack", "split"} <= prims
    assert plan.fallback == (), plan.summary()
    assert "replicated fallback: none" in plan.summary()
    got = want = args[:2]
    for _ in range(2):
        got, want = step(*got[:2], args[2]), jax.jit(train_step)(*want[:2], args[2])
    assert_trees_close(got[0], want[0])
    np.testing.assert_allclose(float(got[2]), float(want[2]), rtol=1e-4)


def test_rotary_step_pinned_to_data_parallel_needs_no_more_collectives_than_jit():
    args = _args()
    dp = P(("data", "model"))
    pins = {r"\[[01]\].*": P(), r"\[2\].*": dp}
    step = ss.auto(train_step, mesh=(2, 4), cluster=SLOW_COMPUTE, pins=pins)
    plan = step.plan_for(*args)
    assert plan.fallback == (), plan.summary()
    ours = collectives(step.lower(*args).compile().as_text())

    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    shard = lambda spec: lambda x: NamedSharding(mesh, spec)  # noqa: E731
    in_shardings = (jax.tree.map(shard(P()), args[0]), jax.tree.map(shard(P()), args[1]),
                    jax.tree.map(shard(dp), args[2]))
    theirs = collectives(jax.jit(train_step, in_shardings=in_shardings).lower(*args).compile().as_text())
    count = lambda cs: sum(len(c.shapes) for c in cs)  # noqa: E731
    assert count(ours) <= count(theirs), (ours, theirs)
    assert {c.kind for c in ours} <= {"all-reduce"}, ours  # gradients only: no activation gathered
