"""Microbatching from the traced program (pipeline/microbatch.py): which operators run per
microbatch, which results are accumulated, what is refused; and the accumulated step
(pipeline/accumulate.py, run here with plain jax.jit on one device) computes what jit does."""

import jax
import jax.numpy as jnp
import optax
import pytest

from helpers import assert_trees_close, concrete_mlp_args, make_train_step
from models import bert, gpt
from models.common import grad_step
from shardsearch.errors import MicrobatchError
from shardsearch.graph import ValueRef
from shardsearch.pipeline.accumulate import accumulation_graph
from shardsearch.pipeline.microbatch import OutKind, Phase, Reduction, micro_graph, split_microbatches
from shardsearch.trace import eval_graph, trace

SGD = optax.sgd(0.1, momentum=0.9)


def accumulated(fn, args, m):
    """``fn`` as m microbatches in one scan, jitted on one device, and its split."""
    graph = trace(fn, args)
    split = split_microbatches(graph)
    acc = accumulation_graph(graph, split, m)
    run = jax.jit(lambda *a: jax.tree_util.tree_unflatten(acc.out_tree, eval_graph(acc, jax.tree_util.tree_leaves(a))))
    return run, graph, split


def assert_matches_jit(fn, args, m, rtol=1e-4, atol=1e-6):
    run, graph, split = accumulated(fn, args, m)
    assert_trees_close(run(*args), jax.jit(fn)(*args), rtol=rtol, atol=atol)
    return graph, split


def mlp_step_args(batch=16):
    return make_train_step(SGD), concrete_mlp_args(batch, 8, layers=2, optimizer=SGD)


def test_mlp_phases_follow_the_data_parallel_rules():
    fn, args = mlp_step_args()
    graph = trace(fn, args)
    split = split_microbatches(graph)
    assert split.batch_size == 16 and split.batch_args == (8, 9)  # x, y: params and momenta are carried
    dots = [n for n in graph.nodes if n.primitive == "dot_general"]
    kinds = {split.phases[n.id] for n in dots}
    assert kinds == {Phase.MICRO, Phase.ACCUM}  # forward / input grads per microbatch; weight grads accumulate
    for n in dots:
        if split.phases[n.id] is Phase.ACCUM:
            assert split.reductions[n.id] is Reduction.SUM
            assert ValueRef(n.id) not in split.batch_dims  # a weight gradient has no batch dim
    for i, n in enumerate(graph.input_nodes):  # arguments are made before the loop
        assert split.phases[n] is Phase.PRE
    # the update: params + updates and the momentum are once per step, after the loop
    outs = [graph.nodes[r.node] for r in graph.outputs[:8]]
    assert all(split.phases[n.id] is Phase.POST for n in outs)
    assert split.counts() == (1, 2, 4, 8, 16)


@pytest.mark.parametrize("m", [1, 4, 8])
def test_mlp_accumulated_matches_jit(m):
    fn, args = mlp_step_args()
    assert_matches_jit(fn, args, m)


def test_micro_graph_runs_at_microbatch_shapes():
    fn, args = mlp_step_args()
    graph = trace(fn, args)
    split = split_microbatches(graph)
    micro = micro_graph(graph, split, 4)
    sliced = [i for i in micro.inputs if i.dim is not None]
    assert [graph.input_nodes.index(i.value.node) for i in sliced] == [8, 9]
    for nid, inp in zip(micro.graph.input_nodes, micro.inputs):
        want = graph.info(inp.value).shape
        got = micro.graph.nodes[nid].outputs[0].shape
        assert got == ((want[0] // 4,) + want[1:] if inp.dim == 0 else want)
    for old, new in micro.node_map.items():
        for k, out in enumerate(graph.nodes[old].outputs):
            d = split.batch_dims.get(ValueRef(old, k))
            if d is not None:
                assert micro.graph.nodes[new].outputs[k].shape[d] == out.shape[d] // 4
    # every gradient and the loss leave the loop as a sum over microbatches
    assert [o.kind for o in micro.outputs] == [OutKind.ACCUM] * 5
    with pytest.raises(MicrobatchError, match="num_microbatches=3 does not divide"):
        micro_graph(graph, split, 3)


@pytest.mark.parametrize("make", [lambda: gpt.make(optimizer=SGD), lambda: gpt.make(scan=True, optimizer=SGD),
                                  lambda: bert.make(optimizer=SGD)], ids=["gpt", "gpt_scan", "bert"])
def test_models_accumulate_every_gradient(make):
    case = make()  # (numerics of these models: tests/test_accumulate.py)
    graph = trace(case.train_step, case.args)
    split = split_microbatches(graph)
    params = len(jax.tree_util.tree_leaves(case.args[0]))
    micro = micro_graph(graph, split, 4)
    # a partial result per parameter gradient and the loss, nothing stacked back to the batch
    assert sum(o.kind is OutKind.ACCUM for o in micro.outputs) >= params + 1
    assert not any(o.kind is OutKind.STACK for o in micro.outputs)


def masked_mean_step(optimizer=SGD):
    def loss_fn(params, batch):
        h = jnp.tanh(batch["x"] @ params["w"])
        err = jnp.sum((h - batch["y"]) ** 2, axis=-1)
        return (err * batch["mask"]).sum() / jnp.maximum(batch["mask"].sum(), 1.0)

    step = grad_step(loss_fn, optimizer)

    k = jax.random.split(jax.random.PRNGKey(1), 3)
    params = {"w": jax.random.normal(k[0], (8, 8))}
    batch = {"x": jax.random.normal(k[1], (16, 8)), "y": jax.random.normal(k[2], (16, 8)),
             "mask": (jnp.arange(16) % 3 != 0).astype(jnp.float32)}
    return step, (params, optimizer.init(params), batch)


def test_masked_mean_counts_tokens_over_the_whole_batch_once():
    step, args = masked_mean_step()
    graph, split = assert_matches_jit(step, args, 4)
    mask_node = graph.input_nodes[-3]  # batch leaves: mask, x, y (sorted keys)
    count = [n for n in graph.nodes if n.primitive == "reduce_sum" and n.inputs[0] == ValueRef(mask_node)]
    assert count and all(split.phases[n.id] is Phase.PRE for n in count)
    assert not any(split.phases[n.id] is Phase.ACCUM for n in count)


def dropout_step():
    def loss_fn(params, batch):
        h = batch["x"] @ params["w"]
        keep = jax.random.bernoulli(batch["key"], 0.7, h.shape)
        h = jnp.where(keep, h / 0.7, 0.0)
        return jnp.mean((h - batch["y"]) ** 2)

    step = grad_step(loss_fn, SGD)

    k = jax.random.split(jax.random.PRNGKey(2), 3)
    params = {"w": jax.random.normal(k[0], (8, 8))}
    batch = {"x": jax.random.normal(k[1], (16, 8)), "y": jax.random.normal(k[2], (16, 8)),
             "key": jax.random.PRNGKey(7)}
    return step, (params, SGD.init(params), batch)


@pytest.mark.parametrize("m", [2, 8])
def test_dropout_bits_are_drawn_for_the_whole_batch_and_sliced(m):
    step, args = dropout_step()
    graph, split = assert_matches_jit(step, args, m)
    bits = [n for n in graph.nodes if n.primitive == "random_bits"]
    assert bits and all(split.phases[n.id] is Phase.PRE for n in bits)
    assert split.slices  # the mask is read one microbatch at a time


def index_by_iota_step():
    """Picks each example's label logit with x[jnp.arange(B), labels]: a batch iota as gather indices."""

    def loss_fn(params, batch):
        logits = batch["x"] @ params["w"]
        picked = logits[jnp.arange(logits.shape[0]), batch["labels"]]
        return -jnp.mean(picked - jax.nn.logsumexp(logits, axis=-1))

    step = grad_step(loss_fn, SGD)

    k = jax.random.split(jax.random.PRNGKey(3), 3)
    params = {"w": jax.random.normal(k[0], (8, 5))}
    batch = {"x": jax.random.normal(k[1], (16, 8)), "labels": jax.random.randint(k[2], (16,), 0, 5)}
    return step, (params, SGD.init(params), batch)


def test_a_batch_iota_indexing_the_microbatch_stays_local():
    step, args = index_by_iota_step()
    graph, split = assert_matches_jit(step, args, 4)
    assert split.local_iotas
    micro = micro_graph(graph, split, 4)
    for n in split.local_iotas:
        assert micro.graph.nodes[micro.node_map[n]].params["shape"][graph.nodes[n].params["dimension"]] == 4


def batch_norm_step(after_layer=True):
    def loss_fn(params, batch):
        h = batch["x"] @ params["w"] if after_layer else batch["x"]
        h = (h - h.mean(axis=0)) / jnp.sqrt(h.var(axis=0) + 1e-5)  # statistics of the whole batch
        out = h @ params["v"]
        return jnp.mean((out - batch["y"]) ** 2)

    step = grad_step(loss_fn, SGD)

    k = jax.random.split(jax.random.PRNGKey(4), 4)
    params = {"w": jax.random.normal(k[0], (8, 8)), "v": jax.random.normal(k[3], (8, 8))}
    batch = {"x": jax.random.normal(k[1], (16, 8)), "y": jax.random.normal(k[2], (16, 8))}
    return step, (params, SGD.init(params), batch)


def test_batch_norm_after_a_layer_is_refused_naming_the_operator():
    step, args = batch_norm_step()
    graph = trace(step, args)
    with pytest.raises(MicrobatchError) as err:
        split_microbatches(graph)
    msg = str(err.value)
    assert "reduce_sum (float32[16,8] -> float32[8])" in msg and "test_microbatch.py" in msg
    assert "reduces over the batch dimension" in msg and "unpipelined" in msg


def test_normalizing_the_raw_inputs_by_batch_statistics_is_computed_once_and_allowed():
    step, args = batch_norm_step(after_layer=False)
    graph, split = assert_matches_jit(step, args, 4)
    stats = [n for n in graph.nodes if n.primitive == "reduce_sum" and split.phases[n.id] is Phase.PRE]
    assert stats  # the statistics of the inputs: over the whole batch, before the loop


def test_no_batch_argument_is_refused():
    fn = lambda p, s: (p * 2, s + 1)  # noqa: E731  every argument is returned as new state
    graph = trace(fn, (jnp.ones((4, 4)), jnp.ones(())))
    with pytest.raises(MicrobatchError, match="no batch input"):
        split_microbatches(graph)


def test_per_example_results_are_stacked_back():
    def step(w, x):
        per_example = jnp.sum((x @ w) ** 2, axis=1)
        return w * 0.5, per_example, per_example.sum()  # w is carried: the sum is no data-only statistic

    args = (jnp.ones((4, 8)), jnp.arange(64.0).reshape(16, 4) / 64)
    graph, split = assert_matches_jit(step, args, 4)
    micro = micro_graph(graph, split, 4)
    assert sorted(o.kind.value for o in micro.outputs) == ["accum", "stack"]
