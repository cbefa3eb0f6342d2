"""assign_stages: units to stages, the backward mirrored, updates on the owners' stages."""

import functools
import sys
from pathlib import Path

import optax
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from models import bert, gpt  # noqa: E402
from models.common import grad_step  # noqa: E402
from shardsearch.errors import StageError  # noqa: E402
from shardsearch.graph import ValueRef  # noqa: E402
from shardsearch.pipeline.assignment import SPLIT, StageKind  # noqa: E402
from shardsearch.pipeline.layers import layer_units  # noqa: E402
from shardsearch.pipeline.microbatch import Phase, split_microbatches  # noqa: E402
from shardsearch.pipeline.stages import assign_stages  # noqa: E402
from shardsearch.trace import trace  # noqa: E402

M = 4
RESIDUAL = gpt.BATCH * gpt.SEQ * gpt.WIDTH * 4 // M  # one microbatch of the residual stream, float32


@functools.lru_cache(maxsize=None)
def _traced(model: str):
    case = {"gpt": lambda: gpt.make(layers=4), "gpt_scan": lambda: gpt.make(layers=4, scan=True),
            "bert": bert.make}[model]()
    graph = trace(case.train_step, case.args)
    return graph, split_microbatches(graph), layer_units(graph)


def _assign(model: str, stages=2):
    graph, split, units = _traced(model)
    n = len(units)
    cuts = [round(k * n / stages) for k in range(stages + 1)]
    ranges = list(zip(cuts[:-1], cuts[1:]))
    return graph, split, units, assign_stages(graph, split, units, ranges, M)


def _arg(graph, needle):
    return next(i for i, p in enumerate(graph.in_paths) if needle in p)


def _check_flow(graph, split, a):
    """Per microbatch, values flow forward to later stages and backward to earlier ones."""
    for t in a.transfers:
        assert t.src != t.dst
        if t.kind is StageKind.FORWARD:
            assert t.src < t.dst
        if t.kind is StageKind.BACKWARD:
            assert t.src > t.dst
    for n, (s, k) in enumerate(zip(a.node_stage, a.node_kind)):
        assert s == SPLIT or 0 <= s < a.num_stages
        phase = split.phases[n]
        if phase in (Phase.MICRO, Phase.ACCUM):
            assert k in (StageKind.FORWARD, StageKind.BACKWARD) or (phase is Phase.ACCUM and k is StageKind.POST)
        else:
            assert k.value == phase.value


@pytest.mark.parametrize("model", ["gpt", "bert"])
def test_two_stages_exchange_only_the_residual_stream(model):
    graph, split, units, a = _assign(model)
    _check_flow(graph, split, a)
    # forward: one microbatch's activations; backward: their cotangent, nothing else
    assert a.boundary_bytes() == ((RESIDUAL, RESIDUAL),)
    # the tied embedding is kept on both stages: only its gradient partials cross, once a
    # step after the loop, each to the other stage
    embed = _arg(graph, "['Embed_0']['embedding']")
    assert a.arg_stages[embed] == (0, 1) and a.arg_copies(embed, graph.input_nodes[embed]) == (0, 1)
    once = {(t.kind, t.src, t.dst) for t in a.transfers if t.nbytes == graph.input_info(embed).nbytes}
    assert once == {(StageKind.POST, 0, 1), (StageKind.POST, 1, 0)}
    # the stage search prices one way of that exchange, at the boundary after the stage
    # holding the embedding's unit only (it goes straight to the head's stage)
    from shardsearch.pipeline.stage_costs import unit_step_bytes
    from shardsearch.pipeline.stages import unit_map

    table = graph.input_info(embed).nbytes
    step = unit_step_bytes(graph, unit_map(graph, split, units), len(units))
    assert table <= step[0, 1] and step[0].max() < 1.3 * table  # (and a few small values)
    assert step[1:].max() < 0.1 * table


def test_parameters_and_their_updates_live_on_the_stage_of_their_layer():
    graph, split, units, a = _assign("gpt")
    # units: embedding, 4 layers, final norm and loss; stage 0 = embedding + layers 0-1
    for k in range(4):
        owner = 0 if k < 2 else 1
        kernel = _arg(graph, f"args[0]['Block_{k}']['Dense_0']['kernel']")
        moment = _arg(graph, f"args[1][0].mu['Block_{k}']['Dense_0']['kernel']")
        assert a.arg_stages[kernel] == (owner,) and a.arg_stages[moment] == (owner,)
    # every new parameter and optimizer state is made on the stage its argument lives on
    for ref, arg in zip(graph.outputs, graph.output_aliases):
        if arg is not None and isinstance(ref, ValueRef) and a.arg_stages[arg]:
            assert a.node_stage[ref.node] == a.owner(arg), graph.in_paths[arg]


def test_backward_mirrors_the_forward():
    graph, split, units, a = _assign("gpt", stages=3)
    _check_flow(graph, split, a)
    work = {(s, k): 0 for s in range(3) for k in (StageKind.FORWARD, StageKind.BACKWARD)}
    for s, k in zip(a.node_stage, a.node_kind):
        if (s, k) in work:
            work[(s, k)] += 1
    for s in range(3):
        assert work[(s, StageKind.BACKWARD)] > 0 and work[(s, StageKind.FORWARD)] > 0
    assert [f for f, _ in a.boundary_bytes()] == [RESIDUAL, RESIDUAL]
    assert [b for _, b in a.boundary_bytes()] == [RESIDUAL, RESIDUAL]


def test_scan_over_layers_splits_its_iterations_and_stacked_parameters():
    graph, split, units, a = _assign("gpt_scan")
    _check_flow(graph, split, a)
    assert [s.iterations for s in a.loop_splits] == [((0, 2), (2, 4))] * 2
    stacked = _arg(graph, "['ScanBlock_0']['Dense_0']['kernel']")
    assert a.node_stage[graph.input_nodes[stacked]] == SPLIT and a.arg_stages[stacked] == (0, 1)
    assert a.layer_dims[graph.input_nodes[stacked]] == 0
    # the carry crosses each way once per microbatch (loop constants such as the causal
    # mask, hoisted out of the scan by flax, are sent forward too)
    carries = [t for t in a.transfers if graph.nodes[t.value.node].primitive == "scan_carry"]
    assert {(t.kind, t.src, t.dst, t.nbytes) for t in carries} == {
        (StageKind.FORWARD, 0, 1, RESIDUAL), (StageKind.BACKWARD, 1, 0, RESIDUAL)}
    assert a.boundary_bytes()[0][1] == RESIDUAL


def test_an_optimizer_reading_all_stacked_layers_at_once_is_refused():
    params, _, batch = gpt.make(layers=4, scan=True).args
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1))
    model = gpt.GPT(scan=True, layers=4)

    def loss_fn(p, b):
        logits = model.apply({"params": p}, b["tokens"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, b["labels"]).mean()

    step = grad_step(loss_fn, opt)
    graph = trace(step, (params, opt.init(params), batch))
    split = split_microbatches(graph)
    units = layer_units(graph)
    with pytest.raises(StageError, match="reads all layers"):
        assign_stages(graph, split, units, [(0, 3), (3, len(units))], M)
