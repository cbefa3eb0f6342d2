"""The predicted per-device peak against memory_analysis() on small representative steps
(the full table over every suite and test model: python -m benchmarks.memory_fidelity,
benchmarks/results/memory_fidelity.md)."""

import sys
from pathlib import Path

import pytest

from benchmarks.memory_fidelity import _model_cases, _suite_cases, measure
from cost_model import Cluster


@pytest.mark.parametrize("name", ["models/gpt", "mlp-tiny"])
def test_small_steps_are_predicted_within_ten_percent(name):
    # a GPT step with AdamW (tests/models) and the suites' tiny MLP with Adam, on h100-8's
    # plan for a (2, 4) mesh: compiled once with no argument donated and once with the
    # parameters and optimizer state donated (the new state written over the old), for
    # h100-8's GPUs (deviceless: the bar for a GPU cluster)
    from shardsearch.target import plugin_installed

    if not plugin_installed():
        pytest.skip('the GPU program needs pip install "shardsearch[gpu-aot]"')
    sys.path.insert(0, str(Path(__file__).parent))
    case = (_suite_cases({name}) + _model_cases({name}))[0]
    rows = measure(case, Cluster.load("h100-8"), (2, 4), target="gpu")
    assert [r.donated for r in rows] == [False, True]
    for r in rows:
        assert abs(r.error) <= 0.10, r


def _adam_mlp(batch):
    import optax

    from helpers import abstract_mlp_args, make_train_step

    optimizer = optax.adam(1e-3)
    return make_train_step(optimizer), abstract_mlp_args(batch, 512, layers=6, optimizer=optimizer)


@pytest.mark.parametrize("batch, shape", [(16, (2, 4)), (8192, (4, 1))])
def test_updates_follow_their_gradients_and_combined_all_reduces(batch, shape):
    # batch 16 on (2, 4): the plan splits the hidden dim; XLA runs each parameter's update
    # as soon as its gradient is made (in jaxpr order all six gradients would be live: the
    # suites' mlp-tp was +17% donated). Batch 8192 on (4, 1): data parallel; XLA combines
    # the 12 gradient all-reduces and the loss's into one bucket, copied into one buffer
    # and all-reduced there, while every gradient is still held (GPU program)
    import shardsearch as ss
    from benchmarks.runner import make_mesh
    from shardsearch.fidelity import compiled_peak_bytes
    from shardsearch.memory.combine import combined_buckets
    from shardsearch.memory.schedule import memory_order
    from shardsearch.target import plugin_installed, target_mesh
    from shardsearch.trace import trace

    step, args = _adam_mlp(batch)
    plan = ss.plan(step, *args, mesh=make_mesh(shape), cluster="h100-8", cache=False)
    graph = trace(step, args)
    buckets = combined_buckets(graph, plan.flat_in_specs, plan.node_out_specs, plan.mesh, plan.node_operand_specs)
    assert [len(b) for b in buckets] == ([] if batch == 16 else [13])
    order = memory_order(graph, buckets)
    position = {node: i for i, node in enumerate(order)}
    assert sorted(order) == list(range(len(graph.nodes)))
    assert all(position[r.node] < position[n.id] for n in graph.nodes for r in n.inputs if hasattr(r, "node"))
    if not plugin_installed():
        pytest.skip('the GPU program needs pip install "shardsearch[gpu-aot]"')
    mesh = target_mesh("h100-8", shape)
    for donate in ((), (0, 1)):
        compiled = compiled_peak_bytes(plan.apply(step, mesh=mesh, donate_argnums=donate).lower(*args).compile())
        predicted = plan.predicted.peak_donated_bytes if donate else plan.predicted.peak_bytes
        assert abs(predicted - compiled) <= 0.10 * compiled, (donate, predicted, compiled)


def test_a_scans_stacks_live_through_its_loop_and_its_operands_until_it_ends():
    # XLA runs a scan as a while loop whose state holds the stacked outputs (written slice
    # by slice from the first iteration on) and its operands (until the last iteration)
    import jax
    import jax.numpy as jnp

    from shardsearch.graph import ValueRef
    from shardsearch.memory.breakdown import scan_starts
    from shardsearch.trace import trace

    def step(w, xs):
        def body(h, x):
            y = jnp.tanh(h @ w + x)
            return y, y * 2.0

        h, ys = jax.lax.scan(body, jnp.zeros((4, 8)), xs)
        return (h.sum() + ys.sum()) * 1.0

    graph = trace(step, (jax.ShapeDtypeStruct((8, 8), jnp.float32), jax.ShapeDtypeStruct((3, 4, 8), jnp.float32)))
    (loop,) = graph.loops
    starts, in_stack, until = scan_starts(graph)
    assert starts == {s: min(loop.members) for s in loop.stacks} and loop.stacks
    assert {r for r in loop.ys if isinstance(r, ValueRef)} <= in_stack
    assert until and all(t == max(loop.members) for t in until.values())
    assert all(r.node not in loop.members for r in until)
