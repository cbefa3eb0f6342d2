"""The memory model (shardsearch.memory) and memory budgets honored by the search."""

import dataclasses

import jax
import jax.numpy as jnp
import optax
import pytest

import shardsearch as ss
from benchmarks.baselines import Baseline, compile_baseline
from benchmarks.models import gpt
from benchmarks.runner import make_mesh
from cost_model import MeshShape
from helpers import abstract_mlp_args, make_train_step
from shardsearch.fidelity import compiled_peak_bytes
from shardsearch.memory import (Home, Span, assign, forward_end, kept_for_backward, lifetimes, live_at,
                                memory_breakdown, peak_point)
from shardsearch.trace import trace

MESH_2 = MeshShape(("data",), (2,))


def _chain(x):
    a = x * 2.0
    b = a + 1.0
    return (b * a).sum()


def test_an_elementwise_chain_fuses_into_one_kernel():
    # nodes: 0 input x, 1 a = x*2, 2 b = a+1, 3 b*a, 4 sum (the result): XLA computes the
    # chain inside the reduction's kernel, so no temporary is ever written
    g = trace(_chain, (jax.ShapeDtypeStruct((8, 16), jnp.float32),))
    assert [n.primitive for n in g.nodes] == ["input", "mul", "add", "mul", "reduce_sum"]
    assert not lifetimes(g)
    tensor = 8 * 16 * 4
    whole = memory_breakdown(g, [((), ())], {}, MESH_2)
    assert whole.peak_bytes == tensor + 4 and whole.temp_bytes == 0
    split = ((("data",), ()),)
    assert memory_breakdown(g, split, {}, MESH_2).peak_bytes == tensor / 2 + 4
    # an operand read in another layout is a copy that is written (a collective's result)
    copied = memory_breakdown(g, split, {1: split, 2: split, 3: split}, MESH_2,
                              node_operand_specs={3: {0: ((), ())}})
    assert copied.peak_bytes == tensor / 2 + 4 + tensor


def test_values_several_kernels_read_are_kept_unless_cheap_to_recompute():
    def f(x, w):
        h = jnp.tanh(x)  # read by two matmuls: written once, kept for both
        mask = jnp.broadcast_to(jnp.arange(16.0), (8, 16))  # recomputed by each kernel
        return ((h * mask) @ w).sum() + ((h + mask) @ w).sum() + (h @ w).sum()

    g = trace(f, (jax.ShapeDtypeStruct((8, 16), jnp.float32), jax.ShapeDtypeStruct((16, 4), jnp.float32)))
    kept = {g.nodes[v.ref.node].primitive for v in lifetimes(g)}
    assert "tanh" in kept and not kept & {"broadcast_in_dim", "iota"}


def test_temporaries_share_result_buffers_until_the_results_are_written():
    # a result buffer of 100 bytes written at 8: temporaries live before that may use it,
    # one after another; the others go to the heap, whose peak is what is left
    home = Home(100.0, ((8, 10),))
    temps = [Span(0, 2, 100.0), Span(3, 5, 60.0), Span(1, 4, 50.0), Span(6, 9, 80.0)]
    placed = assign(11, temps, [home])
    assert placed.home_of == (0, 0, -1, -1)  # largest first; the 50 overlaps both
    assert placed.heap_peak == 80.0 and placed.heap_peak_at in (6, 7, 8, 9)
    # a donated argument's buffer is free between its last read and the result
    donated = Home(100.0, ((0, 3), (8, 10)))
    assert assign(11, [Span(4, 7, 90.0), Span(2, 5, 90.0)], [donated]).home_of == (0, -1)
    # the result may overwrite an operand of its size that it reads last (in place)
    in_place = Home(100.0, ((8, 10),), shares=8)
    assert assign(11, [Span(5, 8, 100.0)], [in_place]).home_of == (0,)
    assert assign(11, [Span(5, 8, 100.0)], [home]).home_of == (-1,)


def test_breakdown_of_a_train_step_sorts_the_arguments():
    optimizer = optax.adam(1e-3)
    args = abstract_mlp_args(16, 32, layers=2, optimizer=optimizer)
    g = trace(make_train_step(optimizer), args)
    leaves = lambda t: sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(t))  # noqa: E731
    replicated = [((),) * len(g.input_info(i).shape) for i in range(len(g.input_nodes))]
    b = memory_breakdown(g, replicated, {}, MESH_2)
    assert b.params_bytes == leaves(args[0])
    assert b.opt_state_bytes == leaves(args[1])  # moments + step count: read after the forward pass
    assert b.inputs_bytes == leaves(args[2])
    assert b.outputs_bytes == leaves(args[:2]) + 4  # new state + the loss
    assert b.peak_bytes >= leaves(args) + b.outputs_bytes  # every result exists at the end
    assert b.activations_bytes > 0
    # donated state is written in place: the new state needs no buffers of its own
    donated = memory_breakdown(g, replicated, {}, MESH_2, donated=frozenset(range(len(g.input_nodes) - 2)))
    assert donated.outputs_bytes == 4 and donated.peak_bytes < b.peak_bytes


def test_activations_kept_for_the_backward_pass():
    def loss(w, x):
        return jnp.tanh(jnp.tanh(x @ w) @ w).sum()

    args = (jax.ShapeDtypeStruct((32, 32), jnp.float32), jax.ShapeDtypeStruct((256, 32), jnp.float32))
    g = trace(jax.value_and_grad(loss), args)
    # jax names the backward pass's equations transpose(...): a fact of the test only
    backward = [n.id for n in g.nodes if n.payload is not None
                and "transpose" in str(getattr(n.payload.source_info, "name_stack", ""))]
    t = forward_end(g)
    assert backward and t < min(backward)
    kept = kept_for_backward(g)
    assert {g.nodes[v.ref.node].primitive for v in kept} >= {"tanh"}
    assert all(v.ref.node <= t and v.last >= min(backward) for v in kept)  # the backward pass reads them
    # activations dominate this step: its memory peaks as the backward pass starts,
    # with every kept activation live (what the search's memory proxy counts)
    t_peak = peak_point(g)
    assert t_peak <= min(backward) + 1
    assert set(kept) <= set(live_at(t_peak, lifetimes(g)))


def test_plan_predicts_the_breakdown_and_keeps_it_in_files(tmp_path):
    optimizer = optax.adam(1e-3)
    args = abstract_mlp_args(64, 64, layers=2, optimizer=optimizer)
    plan = ss.plan(make_train_step(optimizer), *args, mesh=(2, 4))
    p = plan.predicted
    resident = p.params_bytes + p.opt_state_bytes + p.inputs_bytes
    assert p.params_bytes > 0 and p.opt_state_bytes > 0 and p.inputs_bytes > 0
    assert p.peak_bytes >= resident + p.outputs_bytes
    assert p.peak_donated_bytes < p.peak_bytes
    plan.save(tmp_path / "plan.json")
    assert ss.Plan.load(tmp_path / "plan.json").predicted == p


def test_unreachable_budget_names_the_smallest_budget_and_largest_tensors():
    optimizer = optax.adam(1e-3)
    args = abstract_mlp_args(64, 256, layers=2, optimizer=optimizer)
    with pytest.raises(ss.MemoryBudgetError) as err:
        ss.plan(make_train_step(optimizer), *args, mesh=(2, 4), memory_budget=10_000)
    msg = str(err.value)
    assert "memory_budget=10000 bytes" in msg and "Raise memory_budget to at least" in msg
    assert err.value.least_bytes > 10_000 and f"at least {int(err.value.least_bytes + 1)} bytes" in msg
    # what the least plan's peak is made of, in KiB/MiB, and what would cut it
    assert "parameters" in msg and "optimizer state" in msg and " KiB" in msg and "more devices" in msg
    # the largest buffers, named by argument path, dtype and shape
    assert "['w'] float32[256, 256]" in msg


# A wide, shallow GPT: the state dominates, so data parallelism (which replicates it)
# needs far more memory per device than a plan that splits it.
WIDE_GPT = gpt.GPTConfig("gpt-wide", hidden=512, layers=2, heads=8, seq=32, vocab=256, batch=8)


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.5, 0.4, 0.25])
def test_memory_budget_below_data_parallel_is_honored_by_the_compiled_program(fraction):
    # 0.5 and 0.4: the cheapest plan fits (it splits the state); 0.25 binds: the search
    # prices memory (solve/lagrange.py). The compiled program keeps the all-gathered
    # weights from the forward to the backward pass: the budget row counts those copies.
    workload = gpt.make_workload(WIDE_GPT)
    mesh = make_mesh((2, 4))
    data_parallel = compiled_peak_bytes(compile_baseline(workload, mesh, Baseline.DATA_PARALLEL))
    budget = fraction * data_parallel
    # sharding alone (remat=False): the search's remat and microbatches are tests/test_remat_search's
    step = ss.auto(workload.train_step, mesh=mesh, memory_budget=budget, time_limit_s=60, cache=False, remat=False)
    plan = step.plan_for(*workload.args)
    used = compiled_peak_bytes(step.lower(*workload.args).compile())
    print(f"data parallel {data_parallel / 2**20:.1f} MiB, budget {budget / 2**20:.1f} MiB, "
          f"plan {used / 2**20:.1f} MiB per device (predicted {plan.predicted.peak_bytes / 2**20:.1f}), "
          f"{plan.stats.status}, {plan.stats.objective:.4g} s, bound {plan.stats.bound:.4g} s")
    assert used <= budget
    assert plan.stats.bound <= plan.stats.objective


def test_unreachable_budget_for_a_gpt_states_what_would_fit():
    workload = gpt.make_workload(WIDE_GPT)
    # the MLP weights are the largest tensors: named by argument path, dtype and shape
    with pytest.raises(ss.MemoryBudgetError, match=r"Raise memory_budget to at least \d+ bytes.*largest buffers"
                                                   r".*args\[\d\].*\['layers'\]\[\d\]\['mlp'\]\['fc[12]'\] float32\["):
        ss.plan(workload.train_step, *workload.args, mesh=(2, 4), memory_budget=1e6)


def test_breakdown_fields_are_optional_in_predicted():
    # plans written before the memory model have only the four original fields
    fields = {f.name for f in dataclasses.fields(ss.Predicted) if f.default is dataclasses.MISSING}
    assert fields == {"compute_s", "comm_s", "total_s", "peak_bytes"}
