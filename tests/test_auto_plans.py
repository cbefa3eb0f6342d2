"""The plans the search picks for MLP stacks, judged by the HLO XLA compiles.

Shapes are planned from ShapeDtypeStructs (nothing allocated) on an 8-GPU preset.
"""

import math

import jax
import optax
import pytest

import shardsearch as ss
from helpers import abstract_mlp_args, collectives, make_train_step

ROW, COL = "row", "col"


def plan_and_hlo(batch, hidden, mesh, cluster="h100-8", layers=6, memory_budget=None):
    optimizer = optax.adam(1e-3)
    args = abstract_mlp_args(batch, hidden, layers=layers, optimizer=optimizer)
    step = ss.auto(make_train_step(optimizer), mesh=mesh, cluster=cluster, memory_budget=memory_budget)
    plan = step.plan_for(*args)
    return plan, step.lower(*args).compile().as_text(), args


def specs_by_path(plan):
    return dict(zip(plan.in_paths, plan.flat_in_specs))


def kernel_splits(plan, axis, layers=6):
    """'col' / 'row' / the raw spec of each layer's kernel."""
    specs = specs_by_path(plan)
    out = []
    for i in range(layers):
        s = specs[f"args[0][{i}]['w']"]
        out.append({((), (axis,)): COL, ((axis,), ()): ROW}.get(s, s))
    return out


def the_split_axis(mesh):
    return "data" if mesh[0] > 1 else "model"


@pytest.mark.parametrize("mesh", [(4, 1), (1, 4)])
def test_many_rows_narrow_layers_is_data_parallel(mesh):
    plan, hlo, args = plan_and_hlo(8192, 512, mesh)
    axis = the_split_axis(mesh)
    specs = specs_by_path(plan)
    params = {p: s for p, s in specs.items() if p.startswith("args[0]")}
    assert all(not any(d) for d in params.values()), params  # every parameter replicated
    assert specs["args[2][0]"] == ((axis,), ())  # the batch split
    assert specs["args[2][1]"] == ((axis,), ())
    param_shapes = {tuple(x.shape) for x in jax.tree_util.tree_leaves(args[0])}
    found = collectives(hlo)
    assert found, "data parallel must all-reduce the gradients"
    for c in found:  # the only non-scalar collectives are gradient all-reduces
        assert c.kind == "all-reduce", c
        # XLA's combiner may fold the scalar loss into the same all-reduce
        assert all(dims in param_shapes or dims == () for _, dims in c.shapes), c


@pytest.mark.parametrize("mesh", [(4, 1), (1, 4)])
def test_few_rows_wide_layers_is_megatron(mesh):
    batch, hidden = 128, 4096
    plan, hlo, _ = plan_and_hlo(batch, hidden, mesh)
    axis = the_split_axis(mesh)
    splits = kernel_splits(plan, axis)
    # Megatron: kernels alternate column-split / row-split, starting either way
    assert splits in ([COL, ROW] * 3, [ROW, COL] * 3), splits
    found = collectives(hlo)
    assert found
    for c in found:  # activations all-reduced; no weight or weight-gradient collective
        assert c.kind == "all-reduce", c
        assert all(dims == (batch, hidden) for _, dims in c.shapes), c
    # once per column/row pair forward, once per pair backward (the first layer's input
    # gradient is never computed): at most 2 per pair
    assert sum(len(c.shapes) for c in found) <= 2 * 3


def test_two_slow_nodes_split_batch_across_and_megatron_inside():
    """Mesh (2, 4) over two 4-GPU nodes on 25 Gb/s Ethernet: 'data' crosses nodes.

    Big batch and wide layers: the batch is split across the nodes, the kernels
    Megatron-split inside each node, and only weight-sized data crosses the network.
    The step needs about 190 GB per device whatever the plan (compiled), so the test
    gives the devices 400 GB: it is about which data crosses the slow network.
    """
    batch, hidden, layers = 262144, 65536, 2
    plan, hlo, _ = plan_and_hlo(batch, hidden, (2, 4), cluster="2x4-slow", layers=layers, memory_budget=400e9)
    specs = specs_by_path(plan)
    assert specs["args[2][0]"][0][:1] == ("data",)  # batch split across the nodes (major axis)
    on_model = [tuple(tuple(a for a in d if a == "model") for d in specs[f"args[0][{i}]['w']"]) for i in range(layers)]
    assert on_model == [((), ("model",)), (("model",), ())]  # column, then row
    cross = [c for c in collectives(hlo) if c.crosses_nodes(8, 4)]
    assert cross, "the gradients of a data-parallel split must be reduced across nodes"
    for c in cross:  # no activation crosses the slow network: weight shards at most
        for _, dims in c.shapes:
            assert math.prod(dims) <= hidden * hidden // 4, c


def test_a_step_whose_activations_do_not_fit_is_made_to_fit_by_accumulation():
    """The same step on 80 GB devices: sharding alone leaves the activations of a 262144-row
    batch over the budget, so the search splits the batch into microbatches (never a plan
    over the budget)."""
    optimizer = optax.adam(1e-3)
    args = abstract_mlp_args(262144, 65536, layers=2, optimizer=optimizer)
    plan = ss.plan(make_train_step(optimizer), *args, mesh=(2, 4), cluster="2x4-slow", cache=False)
    assert plan.pipeline is not None and plan.pipeline.num_microbatches > 1
    assert plan.predicted.peak_bytes <= 74.5 * 2**30


def test_a_step_no_plan_fits_raises_with_the_least_it_needs():
    """Parameters and Adam state alone over 80 GB per device when split 8 ways: no plan fits,
    and the user is told what the least is, what it is made of, and what would bring it down."""
    optimizer = optax.adam(1e-3)
    args = abstract_mlp_args(8192, 131072, layers=4, optimizer=optimizer)
    with pytest.raises(ss.MemoryBudgetError, match=r"fits memory_budget=74\.5.* GiB .*least it can take is .* GiB") as err:
        ss.plan(make_train_step(optimizer), *args, mesh=(2, 4), cluster="2x4-slow", cache=False)
    assert err.value.least_bytes > 80e9


def test_tiny_model_stays_replicated():
    # two rows per device: with one (batch 8) each device's dots are vector x matrix, which
    # XLA's GPU compiler runs as multiply + reduce fusions priced without the gemm's launch
    # floor (costs/dot_strength), and data parallel is then priced 20x cheaper (5 vs 102 us)
    plan, hlo, _ = plan_and_hlo(16, 16, (2, 4))
    assert all(not any(d) for d in plan.flat_in_specs)
    assert collectives(hlo, scalars=True) == []
