"""Plans as artifacts: save -> load -> apply, validation of plan files, export as code."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import shardsearch as ss
from helpers import assert_trees_close, concrete_mlp_args, make_train_step
from test_numerics import SLOW_COMPUTE

is_spec = lambda x: isinstance(x, PartitionSpec)  # noqa: E731


@pytest.fixture(scope="module")
def mlp():
    """A 2-layer MLP train step, its arguments, and its plan for a (4, 2) mesh named ('rows', 'cols')."""
    optimizer = optax.adam(1e-3)
    train_step = make_train_step(optimizer)
    args = concrete_mlp_args(64, 32, layers=2, optimizer=optimizer)
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("rows", "cols"))
    step = ss.auto(train_step, mesh=mesh, cluster=SLOW_COMPUTE)
    return train_step, args, mesh, step, step.plan_for(*args)


def _collectives(step, args):
    from benchmarks.judge import parse_collectives

    text = step.lower(*args).compile().as_text()
    return sorted((c.kind, c.shapes, str(c.groups(8))) for c in parse_collectives(text))


def test_save_load_apply_compiles_the_same_collectives(mlp, tmp_path):
    train_step, args, mesh, step, plan = mlp
    plan.save(tmp_path / "plan.json")
    loaded = ss.Plan.load(tmp_path / "plan.json")
    assert loaded.flat_in_specs == plan.flat_in_specs and loaded.node_out_specs == plan.node_out_specs
    again = loaded.apply(train_step)  # no mesh given: the plan's own axis names are kept
    assert again.plan_for(*args) == plan
    assert any(any(spec) for spec in plan.flat_in_specs)  # something is sharded, so collectives exist
    want = _collectives(step, args)
    assert want and _collectives(again, args) == want
    assert_trees_close(again(*args), jax.jit(train_step)(*args))


def test_plan_for_one_mesh_refuses_another(mlp, tmp_path):
    train_step, args, _, _, _ = mlp
    plan = ss.plan(train_step, *args, mesh=(2, 4), cluster=SLOW_COMPUTE)
    plan.save(tmp_path / "plan.json")
    loaded = ss.Plan.load(tmp_path / "plan.json")
    with pytest.raises(ss.PlanError, match=r"made for mesh .*\(2, 4\).* applied on mesh .*\(4, 2\).*plan again"):
        loaded.apply(train_step, mesh=(4, 2))
    with pytest.raises(ss.PlanError, match=r"made for mesh"):
        loaded.apply(train_step, mesh=jax.make_mesh((4, 2), ("data", "model")))


def test_plan_for_other_arguments_names_the_argument_that_differs(mlp):
    train_step, args, _, _, plan = mlp
    params, opt_state, (x, y) = args
    step = plan.apply(train_step)
    with pytest.raises(ss.PlanError, match=r"argument args\[2\]\[0\] is float32\[128, 32\] here but float32\[64, 32\]"):
        step.plan_for(params, opt_state, (jnp.ones((128, 32)), jnp.ones((128, 32))))


def test_plan_for_fewer_arguments_names_the_extra_one():
    def f(ws, x):
        return sum(jnp.tanh(x @ w).sum() for w in ws)

    ws, x = [jnp.ones((16, 16))] * 2, jnp.ones((32, 16))
    plan = ss.plan(f, ws, x, mesh=(2, 4), cluster=SLOW_COMPUTE)
    with pytest.raises(ss.PlanError, match=r"the plan has 3 argument leaves, this call 4; this call's args\[0\]\[2\] is not in the plan"):
        plan.apply(f).plan_for(ws + ws[:1], x)


def test_plan_for_another_function_with_the_same_arguments(mlp):
    _, args, _, _, plan = mlp
    other = make_train_step(optax.sgd(1e-2))
    with pytest.raises(ss.PlanError, match=r"train_step\(\*args\): same arguments, but the function body differs"):
        plan.apply(other).plan_for(*args)


def _corrupt(d, what):
    d = json.loads(json.dumps(d))
    if what == "missing operators":
        del d["operators"]
    elif what == "old version":
        d["version"] = 0
    elif what == "string version":
        d["version"] = "1"
    elif what == "unknown axis":
        d["arguments"][0]["spec"] = [["expert"]]
    elif what == "axis used twice":
        d["arguments"][1]["spec"] = [["rows"], ["rows"]]
    elif what == "negative mesh size":
        d["mesh"]["axis_sizes"] = [4, -2]
    elif what == "spec not a list":
        d["results"][0]["spec"] = "rows"
    elif what == "bad shape":
        d["arguments"][0]["shape"] = "64x32"
    elif what == "stats field missing":
        del d["stats"]["status"]
    elif what == "mesh a list":
        d["mesh"] = [4, 2]
    return d


@pytest.mark.parametrize(
    "what, why",
    [
        ("missing operators", r"missing key 'operators'"),
        ("old version", r"version 0 is not supported \(this shardsearch reads 1\)"),
        ("string version", r"version '1' is not supported"),
        ("unknown axis", r"args\[0\]\[0\]\['b'\]: spec \[\['expert'\]\] names mesh axes \['expert'\] that the plan's mesh \['rows', 'cols'\] lacks"),
        ("axis used twice", r"uses a mesh axis twice"),
        ("negative mesh size", r"axis_sizes must be 2 positive integers, got \[4, -2\]"),
        ("spec not a list", r"a spec must be a list of lists of mesh-axis names, got 'rows'"),
        ("bad shape", r"shape must be a list of sizes"),
        ("stats field missing", r"'stats' lacks the fields \['status'\]"),
        ("mesh a list", r"'mesh' must be a JSON object, got list"),
    ],
)
def test_malformed_plan_files_say_what_and_how_to_fix(mlp, tmp_path, what, why):
    from shardsearch.apply.plan_io import plan_to_dict

    path = tmp_path / "plan.json"
    path.write_text(json.dumps(_corrupt(plan_to_dict(mlp[4]), what)))
    with pytest.raises(ss.PlanError, match=r"plan.json is not a readable shardsearch plan \(.*" + why + r".*re-create it with plan.save"):
        ss.Plan.load(path)


@pytest.mark.parametrize("text", ["not json {", "[1, 2]", "", '{"format": "a-tensorboard-log", "version": 1}'])
def test_files_that_are_not_plans(tmp_path, text):
    path = tmp_path / "plan.json"
    path.write_text(text)
    with pytest.raises(ss.PlanError, match=r"plan.json is not a readable shardsearch plan"):
        ss.Plan.load(path)
    with pytest.raises(ss.PlanError, match=r"missing.json is not a readable shardsearch plan \(.*No such file"):
        ss.Plan.load(tmp_path / "missing.json")


def test_plan_from_a_newer_shardsearch_asks_for_an_upgrade(mlp, tmp_path):
    from shardsearch.apply.plan_io import plan_to_dict

    d = plan_to_dict(mlp[4])
    d["version"] = 7
    (tmp_path / "plan.json").write_text(json.dumps(d))
    with pytest.raises(ss.PlanError, match=r"format version 7, newer than this shardsearch reads \(1\); upgrade shardsearch"):
        ss.Plan.load(tmp_path / "plan.json")


def test_version_1_file_without_argument_shapes_still_applies(mlp, tmp_path):
    from shardsearch.apply.plan_io import plan_to_dict

    train_step, args, _, _, plan = mlp
    d = plan_to_dict(plan)
    for a in d["arguments"]:
        del a["shape"], a["dtype"]
    (tmp_path / "plan.json").write_text(json.dumps(d))
    loaded = ss.Plan.load(tmp_path / "plan.json")
    assert loaded.in_avals == () and loaded.flat_in_specs == plan.flat_in_specs
    step = loaded.apply(train_step)
    assert step.plan_for(*args).in_specs == plan.in_specs
    with pytest.raises(ss.PlanError, match=r"the argument shapes or the function changed .*does not record argument shapes"):
        step.plan_for(args[0], args[1], (jnp.ones((128, 32)), jnp.ones((128, 32))))


def _exec_source(source: str, name: str):
    scope: dict = {}
    exec(source, scope)  # the source a user pastes, run as written
    return scope[name]


@pytest.mark.parametrize("argnum", [0, 1, 2])
def test_partition_spec_source_rebuilds_the_spec_tree(mlp, argnum):
    _, args, mesh, _, plan = mlp
    source = plan.partition_spec_source(argnum, name="layout")
    assert source.startswith("from ") and "\nlayout = " in source
    specs = _exec_source(source, "layout")
    want = plan.in_specs[argnum]
    assert jax.tree_util.tree_structure(specs, is_leaf=is_spec) == jax.tree_util.tree_structure(want, is_leaf=is_spec)
    assert jax.tree_util.tree_leaves(specs, is_leaf=is_spec) == jax.tree_util.tree_leaves(want, is_leaf=is_spec)
    # usable as written: place the argument with it
    placed = jax.device_put(args[argnum], jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), specs, is_leaf=is_spec))
    assert jax.tree_util.tree_structure(placed) == jax.tree_util.tree_structure(args[argnum])


def test_partition_spec_source_of_a_loaded_plan_and_bad_arguments(mlp, tmp_path):
    train_step, args, _, _, plan = mlp
    plan.save(tmp_path / "plan.json")
    loaded = ss.Plan.load(tmp_path / "plan.json")
    with pytest.raises(ss.PlanError, match=r"read from a file.*plan.apply\(fn\).plan_for\(\*args\)"):
        loaded.partition_spec_source(0)
    rebuilt = loaded.apply(train_step).plan_for(*args)
    assert rebuilt.partition_spec_source(0) == plan.partition_spec_source(0)
    with pytest.raises(ss.PlanError, match=r"argnum=3 names no argument with arrays in this plan \(its arguments with arrays: 0, 1, 2\)"):
        plan.partition_spec_source(3)
    custom = {"w": object()}
    odd = dataclasses.replace(plan, in_specs=(custom,))
    with pytest.raises(ss.PlanError, match=r"\['w'\] is a object, not a dict, list, tuple.*sharding_rules\(0\)"):
        odd.partition_spec_source(0)


@pytest.mark.parametrize("argnum", [0, 1, 2])
def test_sharding_rules_reproduce_the_plan_layout(mlp, tmp_path, argnum):
    _, args, mesh, _, plan = mlp
    plan.save(tmp_path / "plan.json")
    rules = ss.Plan.load(tmp_path / "plan.json").sharding_rules(argnum)  # no pytree needed
    assert all(isinstance(rx, str) and isinstance(spec, PartitionSpec) for rx, spec in rules)
    got = ss.apply_rules(args[argnum], rules, mesh)
    want = jax.tree_util.tree_map(lambda s: NamedSharding(ss.AutoSharded(None, mesh=mesh).mesh, s), plan.in_specs[argnum], is_leaf=is_spec)
    assert jax.tree_util.tree_leaves(got) == jax.tree_util.tree_leaves(want)
    # usable on abstract arguments too (plan a big model, place it later)
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), args[argnum])
    assert jax.tree_util.tree_leaves(ss.apply_rules(abstract, rules, mesh)) == jax.tree_util.tree_leaves(got)


def test_layers_with_one_layout_share_a_rule_that_fits_a_deeper_model(mlp):
    plan = mlp[4]
    spec_w, spec_b = (("rows",), ("cols",)), (("cols",),)
    paths = [f"args[0][{i}]['{k}']" for i in range(3) for k in "bw"]
    odd = ((), ("cols",))  # layer 1's weight differs from layers 0 and 2
    specs = [spec_b, spec_w, spec_b, odd, spec_b, spec_w]
    crafted = dataclasses.replace(plan, in_paths=tuple(paths), flat_in_specs=tuple(specs), in_specs=None)
    rules = crafted.sharding_rules(0)
    assert rules == [
        (r"\[\d+\]\['b'\]", PartitionSpec("cols")),
        (r"\[0\]\['w'\]", PartitionSpec("rows", "cols")),
        (r"\[1\]\['w'\]", PartitionSpec(None, "cols")),
        (r"\[2\]\['w'\]", PartitionSpec("rows", "cols")),
    ]
    deeper = [{"b": jax.ShapeDtypeStruct((8,), jnp.float32)} for _ in range(12)]
    shardings = ss.apply_rules(deeper, rules, mlp[2])
    assert {s.spec for s in jax.tree_util.tree_leaves(shardings)} == {PartitionSpec("cols")}


def test_apply_rules_errors_name_the_leaf_and_the_fix():
    tree = {"w": jax.ShapeDtypeStruct((6, 8), jnp.float32), "b": jax.ShapeDtypeStruct((8,), jnp.float32)}
    with pytest.raises(ss.PlanError, match=r"no rule matches the leaf \['b'\] \(shape \(8,\)\).*\(r'\.\*', PartitionSpec\(\)\) last"):
        ss.apply_rules(tree, [(r"\['w'\]", PartitionSpec())], (2, 4))
    rules = [(r"\['w'\]", PartitionSpec("model")), (r".*", PartitionSpec())]
    with pytest.raises(ss.PlanError, match=r"gives \['w'\] \(shape \(6, 8\)\) the spec .*dimension 0 \(size 6\) is not divisible by the 4 devices"):
        ss.apply_rules(tree, rules, (2, 4))
    with pytest.raises(ss.PlanError, match=r"the mesh has no axis 'expert' \(axes: data, model\)"):
        ss.apply_rules(tree, [(r".*", PartitionSpec("expert"))], (2, 4))
    with pytest.raises(ss.PlanError, match=r"has 3 entries and the array only 1 dimensions"):
        ss.apply_rules(tree, [(r"\['w'\]", PartitionSpec()), (r".*", PartitionSpec(None, None, None))], (2, 4))
    ok = ss.apply_rules(tree, [(r"\['w'\]", PartitionSpec("data", "model")), (r".*", PartitionSpec())], (2, 4))
    assert ok["w"].spec == PartitionSpec("data", "model") and ok["b"].spec == PartitionSpec()
