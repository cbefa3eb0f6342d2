"""Layouts the user wrote down (with_sharding_constraint, device_put, shard_map) are planned
as written, and ops that pass values through (optimization_barrier, checkpoint_name) keep
their operands' layouts; the step computes what jax.jit computes."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import shardsearch as ss
from test_numerics import SLOW_COMPUTE

MESH = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)


def _node_specs(plan, prim):
    return [plan.node_out_specs[i] for i, p in plan.node_primitive.items() if p == prim]


def step(w, x):
    def loss(w):
        h = jnp.tanh(x @ w)
        h = jax.lax.with_sharding_constraint(h, NamedSharding(MESH, P(None, "model")))
        h = checkpoint_name(h, "hidden")
        h, s = jax.lax.optimization_barrier((h, h.sum()))
        h = jax.device_put(h * 2, NamedSharding(MESH, P("data", None)))
        centred = jax.shard_map(lambda a: a - jax.lax.pmean(a, "model"), mesh=MESH, in_specs=P("data", "model"),
                                out_specs=P("data", "model"))(h)
        return jnp.mean(centred ** 2) + 1e-3 * s

    return jax.value_and_grad(loss)(w)


def test_user_layouts_are_planned_as_written_and_the_step_matches_jit():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    w, x = jax.random.normal(k1, (32, 64)) / 8, jax.random.normal(k2, (16, 32))
    auto = ss.auto(step, mesh=MESH, cluster=SLOW_COMPUTE)
    plan = auto.plan_for(w, x)
    assert plan.fallback == (), plan.summary()
    assert _node_specs(plan, "sharding_constraint")[0] == (((), ("model",)),)
    assert _node_specs(plan, "device_put")[0] == ((("data",), ()),)
    # the forward shard_map (with the residuals it keeps for the backward one) and its transpose
    shard_maps = _node_specs(plan, "shard_map")
    assert len(shard_maps) == 2 and (("data",), ("model",)) in shard_maps[0]
    assert all(spec[0] == ("data",) for outs in shard_maps for spec in outs)
    ours, want = auto(w, x), jax.jit(step)(w, x)
    np.testing.assert_allclose(ours[0], want[0], rtol=1e-5)
    np.testing.assert_allclose(ours[1], want[1], rtol=1e-4, atol=1e-6)


def test_a_constraint_on_another_mesh_is_not_planned_as_if_it_were_on_this_one():
    small = jax.make_mesh((2,), ("data",), axis_types=(AxisType.Auto,), devices=jax.devices()[:2])
    f = lambda x: jax.lax.with_sharding_constraint(x * 2, NamedSharding(small, P("data"))).sum()  # noqa: E731
    plan = ss.plan(f, jax.ShapeDtypeStruct((16, 8), jnp.float32), mesh=(8,), cluster=SLOW_COMPUTE)
    assert _node_specs(plan, "sharding_constraint") == [(((), ()),)]
