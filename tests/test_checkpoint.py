"""Sharded checkpoints: save under one plan, restore under another plan on another mesh."""

import io
import os
import re
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

import shardsearch as ss
from helpers import assert_trees_close, concrete_mlp_args, make_train_step
from test_numerics import SLOW_COMPUTE

is_spec = lambda x: isinstance(x, PartitionSpec)  # noqa: E731


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two Adam steps of the MLP under a (2, 4) plan, checkpointed as (params, opt_state)."""
    optimizer = optax.adam(1e-2)
    train_step = make_train_step(optimizer)
    params, opt_state, batch = concrete_mlp_args(64, 32, layers=2, optimizer=optimizer)
    step = ss.auto(train_step, mesh=(2, 4), cluster=SLOW_COMPUTE)
    for _ in range(2):
        params, opt_state, _ = step(params, opt_state, batch)
    path = tmp_path_factory.mktemp("ckpt") / "step2"
    ss.save_checkpoint(path, (params, opt_state))
    return train_step, (params, opt_state), batch, step.plan_for(params, opt_state, batch), path


def _leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_checkpoint_from_a_2x4_plan_restores_under_a_4x2_plan(trained):
    train_step, state, batch, old_plan, path = trained
    new_step = ss.auto(train_step, mesh=(4, 2), cluster="h100-8")
    new_plan = new_step.plan_for(*state, batch)
    k = len(jax.tree_util.tree_leaves(state))
    assert new_plan.flat_in_specs[:k] != old_plan.flat_in_specs[:k]  # other layouts, not only another mesh
    like = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)  # nothing allocated
    restored = ss.restore_checkpoint(path, like, plan=new_plan, argnum=(0, 1))
    _leaves_equal(restored, state)
    for got, spec in zip(
        jax.tree_util.tree_leaves(restored),
        jax.tree_util.tree_leaves(new_plan.in_specs[:2], is_leaf=is_spec),
    ):
        assert got.sharding == NamedSharding(new_step.mesh, spec)  # placed as the new plan wants: no copy on call
    # training goes on under the new plan as unsharded jax.jit would
    assert_trees_close(new_step(*restored, batch), jax.jit(train_step)(*state, batch))


def test_restore_with_a_plan_read_from_file(trained, tmp_path):
    train_step, state, batch, _, path = trained
    ss.plan(train_step, *state, batch, mesh=(8,), cluster=SLOW_COMPUTE).save(tmp_path / "plan.json")
    plan = ss.Plan.load(tmp_path / "plan.json")  # flat paths only: no pytrees needed to restore
    restored_params, restored_opt = ss.restore_checkpoint(path, state, plan=plan, argnum=(0, 1))
    _leaves_equal((restored_params, restored_opt), state)
    assert {leaf.sharding.mesh.shape_tuple for leaf in jax.tree_util.tree_leaves(restored_params)} == {(("data", 8),)}


def test_restore_one_argument_and_without_a_plan(trained, tmp_path):
    train_step, (params, opt_state), batch, plan, _ = trained
    ss.save_checkpoint(tmp_path / "params", params)
    got = ss.restore_checkpoint(tmp_path / "params", params, plan=plan)  # argnum=0: the params
    _leaves_equal(got, params)
    assert [x.sharding.spec for x in jax.tree_util.tree_leaves(got)] == jax.tree_util.tree_leaves(plan.in_specs[0], is_leaf=is_spec)
    same = ss.restore_checkpoint(tmp_path / "params", params)  # the like arrays' own shardings
    assert [x.sharding for x in jax.tree_util.tree_leaves(same)] == [x.sharding for x in jax.tree_util.tree_leaves(params)]
    host = jax.tree_util.tree_map(np.asarray, params)
    replicated = ss.restore_checkpoint(tmp_path / "params", host, mesh=(4, 2))
    _leaves_equal(replicated, params)
    assert {x.sharding.spec for x in jax.tree_util.tree_leaves(replicated)} == {PartitionSpec()}
    with pytest.raises(ss.CheckpointError, match=r"leaf \[0\]\['b'\] has no sharding to restore into; pass plan="):
        ss.restore_checkpoint(tmp_path / "params", host)


def test_checkpoint_errors_name_the_path_and_the_fix(trained, tmp_path):
    _, state, _, plan, path = trained
    with pytest.raises(ss.CheckpointError, match=r"no checkpoint at .*nowhere \(not a directory\); pass the directory"):
        ss.restore_checkpoint(tmp_path / "nowhere", state, plan=plan, argnum=(0, 1))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ss.CheckpointError, match=r"no checkpoint at .*empty \(it holds no orbax checkpoint metadata\)"):
        ss.restore_checkpoint(tmp_path / "empty", state, plan=plan, argnum=(0, 1))
    with pytest.raises(ss.CheckpointError, match=r"step2 already exists; pass overwrite=True"):
        ss.save_checkpoint(path, state)
    with pytest.raises(ss.CheckpointError, match=r"does not fit `like`.*pass a `like` with the tree structure"):
        ss.restore_checkpoint(path, state[0], plan=plan)  # params alone: the checkpoint holds (params, opt_state)
    with pytest.raises(ss.PlanError, match=r"leaf args\[1\]\[0\]\['b'\] is not an argument of the plan \(argnum=1"):
        ss.restore_checkpoint(path, state[0], plan=plan, argnum=1)
    with pytest.raises(ss.PlanError, match=r"argnum=\(0, 1\) names 2 arguments, so `like` must be a tuple of 2 states; got a tuple of 3"):
        ss.restore_checkpoint(path, state + (state[0],), plan=plan, argnum=(0, 1))
    with pytest.raises(ss.PlanError, match=r"plan was made for mesh .*\(2, 4\).* but mesh= is .*\(4, 2\)"):
        ss.restore_checkpoint(path, state, plan=plan, mesh=(4, 2), argnum=(0, 1))
    bigger = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((2,) + x.shape, x.dtype), state[0])
    with pytest.raises(ss.PlanError, match=r"args\[0\]\[0\]\['b'\] has shape \(2, 32\) but the plan was made for shape \(32,\)"):
        ss.restore_checkpoint(path, (bigger, state[1]), plan=plan, argnum=(0, 1))


def test_overwrite_replaces_a_checkpoint(tmp_path):
    x = {"w": jnp.arange(16.0).reshape(4, 4)}
    ss.save_checkpoint(tmp_path / "c", x)
    ss.save_checkpoint(tmp_path / "c", {"w": x["w"] + 1}, overwrite=True)
    np.testing.assert_array_equal(ss.restore_checkpoint(tmp_path / "c", x)["w"], x["w"] + 1)


MULTIPROCESS_WORKER = textwrap.dedent(
    """
    import sys
    import jax
    from shardsearch.runtime.distributed import initialize_from_env
    initialize_from_env()
    import numpy as np
    import optax
    from jax.experimental import multihost_utils
    import shardsearch as ss
    sys.path.insert(0, "tests")
    from helpers import concrete_mlp_args, make_train_step
    from test_numerics import SLOW_COMPUTE

    optimizer = optax.adam(1e-2)
    train_step = make_train_step(optimizer)
    params, opt_state, batch = concrete_mlp_args(64, 32, layers=2, optimizer=optimizer)
    params, opt_state, _ = ss.auto(train_step, mesh=(2, 4), cluster=SLOW_COMPUTE)(params, opt_state, batch)
    ss.save_checkpoint(sys.argv[1], (params, opt_state))  # each process writes its own shards
    plan = ss.plan(train_step, params, opt_state, batch, mesh=(4, 2), cluster="h100-8")
    back = ss.restore_checkpoint(sys.argv[1], (params, opt_state), plan=plan, argnum=(0, 1))
    gather = lambda t: multihost_utils.process_allgather(t, tiled=True)  # global arrays -> host
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(gather(back)), jax.tree_util.tree_leaves(gather((params, opt_state)))))
    print("restored", same, back[0][0]["w"].is_fully_addressable, flush=True)
    """
)


@pytest.mark.slow
def test_two_processes_save_and_one_process_restores(tmp_path):
    """A checkpoint written by 2 processes x 4 devices under a (2, 4) plan restores, resharded,
    both in those processes under a (4, 2) plan and in one 8-device process."""
    from shardsearch.runtime.launch import launch

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    script = tmp_path / "worker.py"
    script.write_text(MULTIPROCESS_WORKER)
    out = io.StringIO()
    code = launch([sys.executable, str(script), str(tmp_path / "ckpt")], 2, local_devices=4, out=out, env=env, timeout_s=300)
    assert code == 0, out.getvalue()[-3000:]
    assert sorted(re.findall(r"\[(\d)\] restored (\w+) (\w+)", out.getvalue())) == [("0", "True", "False"), ("1", "True", "False")]

    optimizer = optax.adam(1e-2)
    train_step = make_train_step(optimizer)
    params, opt_state, batch = concrete_mlp_args(64, 32, layers=2, optimizer=optimizer)
    want = jax.jit(train_step)(params, opt_state, batch)[:2]
    plan = ss.plan(train_step, *want, batch, mesh=(4, 2), cluster="h100-8")
    restored = ss.restore_checkpoint(tmp_path / "ckpt", want, plan=plan, argnum=(0, 1))
    assert_trees_close(restored, want)
