"""Bad input gets a ShardsearchError that names the input and the fix, never a wrong result."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import shardsearch as ss
from cost_model import Cluster, MeshShape
from cost_model.mesh import used_axes
from helpers import abstract_mlp_args, concrete_mlp_args, make_train_step
from test_numerics import SLOW_COMPUTE



def test_non_divisible_shapes_are_never_split():
    optimizer = optax.adam(1e-3)
    train_step = make_train_step(optimizer)
    # batch 6 and hidden 10: neither is divisible by 4; 6 and 10 are by 2
    args = concrete_mlp_args(6, 10, layers=3, optimizer=optimizer)
    for mesh in [(4, 1), (2, 4), (8,)]:
        step = ss.auto(train_step, mesh=mesh, cluster=SLOW_COMPUTE)
        plan = step.plan_for(*args)
        graph = step._entry(args).graph
        mshape = plan.mesh
        checked = 0
        for node_id, specs in plan.node_out_specs.items():
            for info, spec in zip(graph.nodes[node_id].outputs, specs):
                for n, axes in zip(info.shape, spec):
                    assert n % mshape.group_size(axes) == 0, (graph.nodes[node_id].primitive, info.shape, spec)
                    checked += bool(axes)
        for i, spec in enumerate(plan.flat_in_specs):
            for n, axes in zip(graph.input_info(i).shape, spec):
                assert n % mshape.group_size(axes) == 0
        if mesh == (2, 4):
            assert checked > 0  # the size-2 axis does split what it divides
        # and the result is still right
        got = step(*args)
        want = jax.jit(train_step)(*args)
        np.testing.assert_allclose(float(got[2]), float(want[2]), rtol=1e-5)


def test_mesh_with_more_devices_than_exist():
    with pytest.raises(ss.MeshError, match=r"mesh shape \(4, 4\) needs 16 devices but only 8 cpu device"):
        ss.auto(lambda x: x, mesh=(4, 4))


def test_bad_mesh_argument():
    with pytest.raises(ss.MeshError, match=r"tuple of positive axis sizes"):
        ss.auto(lambda x: x, mesh="2x4")


def test_malformed_cluster_dict():
    with pytest.raises(ss.ClusterError, match=r"missing 'peak_flops'"):
        ss.auto(lambda x: x, mesh=(2, 4), cluster={"devices_per_node": 8})
    with pytest.raises(ss.ShardsearchError, match=r"unknown cluster 'h100-9'.*h100-8"):
        ss.auto(lambda x: x, mesh=(2, 4), cluster="h100-9")


def test_function_that_is_not_traceable():
    def branchy(x):
        if x.sum() > 0:  # Python control flow on a traced value
            return x
        return -x

    step = ss.auto(branchy, mesh=(2, 4))
    with pytest.raises(ss.TraceError, match=r"(?s)could not trace branchy.*TracerBoolConversionError.*keep Python control flow off traced values"):
        step.plan_for(jnp.ones((8, 8)))


def test_unknown_option():
    with pytest.raises(ss.OptionError, match=r"unknown option time_limt=5.*time_limit_s"):
        ss.auto(lambda x: x, mesh=(2, 4), time_limt=5)
    with pytest.raises(ss.OptionError, match=r"solver='gurobi' is not one of"):
        ss.auto(lambda x: x, mesh=(2, 4), solver="gurobi")


def test_plan_applied_to_another_mesh_or_program():
    optimizer = optax.sgd(0.1)
    args = abstract_mlp_args(64, 32, layers=2, optimizer=optimizer)
    plan = ss.plan(make_train_step(optimizer), *args, mesh=(2, 4), cluster=SLOW_COMPUTE)
    with pytest.raises(ss.PlanError, match=r"made for mesh .*\(2, 4\).* applied on mesh .*\(4, 2\)"):
        plan.apply(make_train_step(optimizer), mesh=(4, 2))
    other = plan.apply(make_train_step(optax.adam(1e-3)))
    with pytest.raises(ss.PlanError, match=r"made for another program .* plan again"):
        other.plan_for(*abstract_mlp_args(64, 32, layers=2, optimizer=optax.adam(1e-3)))


def test_memory_budget_that_cannot_be_met():
    optimizer = optax.adam(1e-3)
    args = abstract_mlp_args(64, 256, layers=2, optimizer=optimizer)
    with pytest.raises(ss.MemoryBudgetError, match=r"memory_budget=1000 bytes.*Raise memory_budget to at least"):
        ss.plan(make_train_step(optimizer), *args, mesh=(2, 4), memory_budget=1000)


def test_memory_budget_shards_the_state():
    """A budget below what replicated parameters need forces a plan that splits them.

    Replicated, the step needs its state twice (arguments + the new state it returns)."""
    optimizer = optax.adam(1e-3)
    args = abstract_mlp_args(64, 256, layers=2, optimizer=optimizer)
    state_bytes = sum(x.size * 4 for x in jax.tree_util.tree_leaves(args[:2]))
    plan = ss.plan(make_train_step(optimizer), *args, mesh=(2, 4), memory_budget=state_bytes / 2)
    assert plan.predicted.peak_bytes <= state_bytes / 2
    mshape = MeshShape(plan.mesh.axis_names, plan.mesh.axis_sizes)
    assert any(used_axes(s) for p, s in zip(plan.in_paths, plan.flat_in_specs) if p.startswith("args[0]"))
    assert mshape.size == 8
