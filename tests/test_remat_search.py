"""Rematerialization and gradient accumulation chosen by the search when memory binds
(shardsearch.remat, search._fit, search.accumulated): the rewritten step computes what
jax.jit computes, recomputes for real (less compiled memory), is chosen only when the
unconstrained plan does not fit, and survives a plan file."""

import jax
import numpy as np
import optax
from helpers import assert_trees_close
from models import gpt

import shardsearch as ss
from benchmarks.runner import make_mesh
from shardsearch.fidelity import compiled_peak_bytes
from shardsearch.remat import POLICIES, choices, remat_graph
from shardsearch.trace import eval_graph, trace

SGD = optax.sgd(1e-2, momentum=0.9)


def _jit_steps(step, args, n):
    state = args
    for _ in range(n):
        p, o, loss = jax.jit(step)(*state)
        state = (p, o, state[2])
    return state[:2], loss


def _run(step_fn, args, n):
    state = args
    for _ in range(n):
        p, o, loss = step_fn(*state)
        state = (p, o, state[2])
    return state[:2], loss


def _fits_equals_jit_and_round_trips(fitted, plan, case, mesh, budget, tmp_path):
    """Compiled within ``budget``, equal to jax.jit after 2 SGD steps, and a plan file keeps
    the remat choice: applying it recomputes the same layers, within the budget again."""
    assert compiled_peak_bytes(fitted.lower(*case.args).compile()) <= budget
    want, want_loss = _jit_steps(case.train_step, case.args, 2)
    got, loss = _run(fitted, case.args, 2)
    assert_trees_close(got, want)
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-4)
    path = tmp_path / "plan.json"
    plan.save(path)
    loaded = ss.Plan.load(path)
    assert loaded.remat == plan.remat
    again = loaded.apply(case.train_step, mesh=mesh)
    assert compiled_peak_bytes(again.lower(*case.args).compile()) <= budget
    got, _ = _run(again, case.args, 2)
    assert_trees_close(got, want)


def _small_gpt():
    return gpt.make(optimizer=SGD, layers=2, width=32, seq=64, heads=4, vocab=64, batch=8)


def test_recomputed_layers_equal_jit_and_free_their_activations():
    case = _small_gpt()
    graph = trace(case.train_step, case.args)
    fwd, plans = choices(graph)
    assert fwd is not None and len(fwd.layers) == 2 and [p.policy for p in plans] == list(POLICIES)
    flat = jax.tree_util.tree_leaves(case.args)
    want = jax.tree_util.tree_leaves(jax.jit(case.train_step)(*case.args))
    whole = compiled_peak_bytes(jax.jit(lambda *a: eval_graph(graph, a)).lower(*flat).compile())
    for plan in plans:
        rewritten = remat_graph(graph, plan)
        run = jax.jit(lambda *a, g=rewritten: eval_graph(g, a))
        for a, b in zip(run(*flat), want):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
        if plan.policy == "nothing_saveable":
            # the compiled step keeps less: XLA neither merged the copies with the
            # forward nor ran them before the backward needed them
            assert compiled_peak_bytes(run.lower(*flat).compile()) < 0.8 * whole


OPTIONS = dict(cache=False, compare=False, time_limit_s=5)


def test_remat_only_when_memory_binds(tmp_path):
    case = _small_gpt()
    mesh = make_mesh((2,))
    free = ss.auto(case.train_step, mesh=mesh, **OPTIONS)
    free_plan = free.plan_for(*case.args)
    met = ss.plan(case.train_step, *case.args, mesh=mesh, memory_budget=free_plan.predicted.peak_bytes * 1.01,
                  **OPTIONS)
    assert met.remat is None and met.pipeline is None
    assert met.fingerprint() == free_plan.fingerprint() and met.predicted.total_s == free_plan.predicted.total_s

    best = compiled_peak_bytes(free.lower(*case.args).compile())
    budget = 0.7 * best
    fitted = ss.auto(case.train_step, mesh=mesh, memory_budget=budget, **OPTIONS)
    plan = fitted.plan_for(*case.args)
    assert plan.remat is not None and plan.remat.layers == (0, 1)
    assert "Remat (chosen to fit the memory budget)" in plan.summary()
    _fits_equals_jit_and_round_trips(fitted, plan, case, mesh, budget, tmp_path)


def test_microbatches_when_nothing_else_fits():
    """With remat off and a budget under the least sharding's peak, the search splits the
    batch into the fewest microbatches that fit; the step still equals jax.jit."""
    case = _small_gpt()
    mesh = make_mesh((2,))
    free = ss.auto(case.train_step, mesh=mesh, **OPTIONS)
    best = compiled_peak_bytes(free.lower(*case.args).compile())
    budget = 0.2 * best
    fitted = ss.auto(case.train_step, mesh=mesh, memory_budget=budget, remat=False, **OPTIONS)
    plan = fitted.plan_for(*case.args)
    assert plan.pipeline is not None and plan.pipeline.num_microbatches > 1
    assert compiled_peak_bytes(fitted.lower(*case.args).compile()) <= budget
    want, want_loss = _jit_steps(case.train_step, case.args, 2)
    got, loss = _run(fitted, case.args, 2)
    assert_trees_close(got, want)
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-4)


def test_a_tight_budget_is_never_slower_than_the_fitting_sweep():
    """The search under a budget against a sweep of data parallel and FSDP, each with and
    without every layer recomputed (remat="nothing_saveable"; pinned through the search,
    no budget): of the sweep's plans that compile within the budget, none is predicted faster."""
    from benchmarks.standard_plans import DATA_PARALLEL, FSDP, case_of_test_model, pins_of
    from cost_model import MeshShape

    case = case_of_test_model("gpt", _small_gpt)
    mesh = make_mesh((2,))
    shape = MeshShape(tuple(mesh.axis_names), tuple(mesh.devices.shape))
    free = ss.auto(case.train_step, mesh=mesh, **OPTIONS)
    budget = 0.7 * compiled_peak_bytes(free.lower(*case.args).compile())
    fitting = []
    for name in (DATA_PARALLEL, FSDP):
        pins = pins_of(case.args, case.standard_specs(shape)[name])
        for remat in (False, "nothing_saveable"):
            step = ss.auto(case.train_step, mesh=mesh, pins=pins, remat=remat, **OPTIONS)
            if compiled_peak_bytes(step.lower(*case.args).compile()) <= budget:
                fitting.append((step.plan_for(*case.args).predicted.total_s, name, remat))
    assert fitting, "the sweep should have a plan within 0.7x of the best plan's memory"
    fitted = ss.auto(case.train_step, mesh=mesh, memory_budget=budget, **OPTIONS)
    assert compiled_peak_bytes(fitted.lower(*case.args).compile()) <= budget
    assert fitted.plan_for(*case.args).predicted.total_s <= min(fitting)[0] * 1.001, min(fitting)


def test_microbatches_recompute_their_layers_when_neither_fits_alone(tmp_path):
    """A budget (0.15x of the free plan's compiled memory, 4 layers at seq 256) that neither
    the whole batch with its layers recomputed nor microbatches alone meet: each
    microbatch recomputes its layers (the rewrite applied to the per-microbatch program).
    Compiled within the budget, equal to jax.jit, and kept by a plan file."""
    case = gpt.make(optimizer=SGD, layers=4, width=32, seq=256, heads=4, vocab=64, batch=8)
    mesh = make_mesh((2,))
    free = ss.auto(case.train_step, mesh=mesh, **OPTIONS)
    budget = 0.15 * compiled_peak_bytes(free.lower(*case.args).compile())
    fitted = ss.auto(case.train_step, mesh=mesh, memory_budget=budget, remat="nothing_saveable", **OPTIONS)
    plan = fitted.plan_for(*case.args)
    assert plan.remat is not None and plan.remat.in_microbatch and plan.remat.layers == (0, 1, 2, 3)
    assert plan.pipeline is not None and plan.pipeline.num_microbatches > 1
    assert "of each microbatch" in plan.summary()
    _fits_equals_jit_and_round_trips(fitted, plan, case, mesh, budget, tmp_path)
