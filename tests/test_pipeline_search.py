"""The search's stage decision: pipeline="auto" | None | S, on a slow link and on one node."""

import functools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import shardsearch as ss  # noqa: E402
from cost_model import Cluster, MeshShape  # noqa: E402
from models import gpt  # noqa: E402
from shardsearch.config import SearchConfig  # noqa: E402
from shardsearch.errors import OptionError  # noqa: E402
from shardsearch.pipeline.choose import choose_pipeline  # noqa: E402
from shardsearch.pipeline.floor import pipeline_floor  # noqa: E402
from shardsearch.pipeline.layers import layer_units  # noqa: E402
from shardsearch.pipeline.microbatch import split_microbatches  # noqa: E402
from shardsearch.pipeline.stage_costs import UnitPricer, submesh_shape  # noqa: E402
from shardsearch.pipeline.stage_search import Links, Schedule, search_stages, submesh_choices  # noqa: E402
from shardsearch.pipeline.stages import unit_map  # noqa: E402
from shardsearch.trace import trace  # noqa: E402

# Two nodes of four slow devices joined by a thin link: the gradient all-reduce across
# nodes costs more than the step's compute, and a pipeline's activations are cheap to send.
SLOW = Cluster.from_dict({
    "name": "two-slow-nodes", "devices_per_node": 4, "peak_flops": 1e11, "memory_bytes": 1e10,
    "hbm_bandwidth": 1e12, "intra_node": {"bandwidth": 1e11, "latency": 1e-6},
    "inter_node": {"bandwidth": 2e8, "latency": 1e-6}})
OPTIONS = dict(mesh=(2, 4), compare=False, cache=False, time_limit_s=10)


@functools.lru_cache(maxsize=None)
def _plan(cluster: str, **options):
    case = gpt.make(layers=4, width=64, batch=16)
    return ss.plan(case.train_step, *case.args, cluster=SLOW if cluster == "slow" else cluster,
                   **OPTIONS, **options)


@pytest.mark.slow
def test_auto_pipelines_across_a_slow_link(tmp_path):
    plan = _plan("slow", pipeline="auto")
    p = plan.pipeline
    assert p is not None and p.num_stages == 2
    assert [s.devices for s in p.stages] == [(0, 1, 2, 3), (4, 5, 6, 7)]  # one stage per node
    assert [s.shape for s in p.stages] == [(1, 4), (1, 4)]
    assert p.stages[0].layers[0] == 0 and p.stages[0].layers[1] == p.stages[1].layers[0]
    assert p.num_microbatches in (4, 8, 16) and p.schedule is Schedule.ONE_F_ONE_B
    assert 0 < p.bubble < 0.5
    # the residual stream crosses, one microbatch of it each way (the tied embedding's
    # gradient partial goes back once a step, not per microbatch)
    residual = 16 * gpt.SEQ * 64 * 4 // p.num_microbatches
    assert p.transfers == ((residual, residual),)
    assert plan.pipeline_why.startswith("pipelined: 2 stages on 1x4 submeshes")
    text = plan.summary()
    assert "2 stages on 1x4 submeshes" in text and "bubble" in text and plan.pipeline_why in text
    plan.save(tmp_path / "plan.json")
    again = ss.Plan.load(tmp_path / "plan.json")
    assert again.pipeline == p  # stages, their programs' plans and the assignment, exactly
    assert again.pipeline_why == plan.pipeline_why


@pytest.mark.slow
def test_auto_declines_on_one_fast_node_and_says_so():
    plan = _plan("h100-8")  # pipeline="auto" is the default
    assert plan.pipeline is None
    assert plan.pipeline_why.startswith("no pipeline: one node with fast links")
    assert plan.pipeline_why in plan.summary()


@pytest.mark.slow
def test_pinned_stages_microbatches_and_schedule():
    plan = _plan("slow", pipeline=2, num_microbatches=4, schedule="gpipe")
    p = plan.pipeline
    assert p.num_stages == 2 and p.num_microbatches == 4 and p.schedule is Schedule.GPIPE


def test_pipeline_options():
    assert SearchConfig().pipeline == "auto"  # the default: stages where the cost model says they pay
    cfg = SearchConfig.from_options({"pipeline": "auto", "num_microbatches": "auto", "schedule": "GPipe"})
    assert cfg.pipeline == "auto" and cfg.num_microbatches == 1 and cfg.schedule is Schedule.GPIPE
    for bad in ({"pipeline": "sometimes"}, {"pipeline": 0}, {"schedule": "zigzag"}, {"num_microbatches": "many"}):
        with pytest.raises(OptionError):
            SearchConfig.from_options(bad)


def test_submesh_shapes_are_blocks_of_the_mesh():
    mesh = MeshShape(("data", "model"), (2, 4))
    assert [submesh_shape(mesh, k).axis_sizes for k in (1, 2, 4, 8)] == [(1, 1), (1, 2), (1, 4), (2, 4)]
    assert submesh_shape(mesh, 3) is None
    assert submesh_shape(MeshShape(("a", "b"), (4, 2)), 4).axis_sizes == (2, 2)


def test_identical_layers_share_one_solve():
    """Pricing 6 layers takes as many intra-op solves as pricing 2: the repeated layers'
    subgraphs are the same program, solved once per submesh."""
    counts = []
    for layers in (2, 6):
        case = gpt.make(layers=layers, width=32)
        graph = trace(case.train_step, case.args)
        split, units = split_microbatches(graph), layer_units(graph)
        mesh = MeshShape(("data", "model"), (2, 4))
        pricer = UnitPricer(graph, split, units, unit_map(graph, split, units), mesh=mesh,
                            cluster=Cluster.load("2x4-slow"), config=SearchConfig(time_limit_s=5))
        subs = submesh_choices(8, 4)[:2]
        costs = pricer.stage_costs(4, subs, [0.0] * (len(units) + 1))
        counts.append(pricer.solves)
        # a range of layers costs the sum of its layers
        assert costs.time[1, 3, 0] == pytest.approx(costs.time[1, 2, 0] + costs.time[2, 3, 0])
        # the early exit's floor is below every pipeline the DP can price (on any submeshes)
        got = search_stages(costs, num_devices=8, devices_per_node=4, links=Links.of(pricer.cluster),
                            num_microbatches=4, submeshes=subs)
        assert got is not None and pipeline_floor(graph, split.phases, pricer.cluster, mesh, [4]) <= got.step_s
    assert counts[0] == counts[1]


def test_a_stage_holding_a_tied_tables_copy_counts_its_memory():
    """The tied table is kept on the embedding's and the head's stages (``stages._copies``),
    with its momentum and update: the units price it once, on its owner (the embedding),
    and a stage with the head but not the embedding adds the copy's bytes (its update
    planned as the head hands values on: the table, its momentum, the two gradient
    partials, the new values: 6 tables, each split at most 4 ways on a 1x4 submesh); a
    stage with both holds one."""
    from shardsearch.pipeline.stage_search import Submesh
    from test_pipeline_runtime import embed_head_step

    fn, args = embed_head_step(tied=True)
    graph = trace(fn, args)
    split, units = split_microbatches(graph), layer_units(graph)
    mesh, sub = MeshShape(("data", "model"), (2, 4)), MeshShape(("data", "model"), (1, 4))
    pricer = UnitPricer(graph, split, units, unit_map(graph, split, units), mesh=mesh,
                        cluster=Cluster.load("2x4-slow"), config=SearchConfig(time_limit_s=5))
    u = len(units)
    assert set(pricer.copies().values()) == {(0, u - 1)}  # the embedding's unit owns it, the head's reads it
    costs = pricer.stage_costs(4, [Submesh(1, 4)], [0.0] * (u + 1))
    own = [pricer.unit_cost(i, 4, sub).static_bytes for i in range(u)]
    [(owner, held)] = pricer.copy_bytes(4, sub)
    table, copy = args[0]["embed"].nbytes, held.get(u - 1, 0.0)
    assert owner == 0 and list(held) == [u - 1] and 6 * table / 4 <= copy <= 8 * table
    assert costs.static_bytes[1, u, 0] == pytest.approx(sum(own[1:]) + copy)  # the head's stage: a copy
    assert costs.static_bytes[u - 1, u, 0] == pytest.approx(own[-1] + copy)
    assert costs.static_bytes[0, u, 0] == pytest.approx(sum(own))  # the owner's stage: the table once
    assert costs.static_bytes[0, u - 1, 0] == pytest.approx(sum(own[:-1]))


def test_auto_declines_without_pricing_stages_where_none_can_pay():
    """The default pipeline="auto" costs next to nothing where no pipeline can pay: on one
    node with fast links nothing is traced again, and across nodes the operators' rooflines
    bound every pipeline's step (no unit is planned)."""
    case = gpt.make(layers=2, width=32)
    graph = trace(case.train_step, case.args)
    mesh, config = MeshShape(("data", "model"), (2, 4)), SearchConfig()
    kw = dict(mesh=mesh, memory_budget=None, config=config)
    one_node = choose_pipeline(graph, whole_s=1.0, whole_compute_s=0.5, cluster=Cluster.load("h100-8"), **kw)
    assert not one_node.pipelined and one_node.why.startswith("no pipeline: one node with fast links")
    slow = Cluster.load("2x4-slow")
    floor = pipeline_floor(graph, split_microbatches(graph).phases, slow, mesh, [4, 8, 16])
    declined = choose_pipeline(graph, whole_s=floor / 0.95, cluster=slow, **kw)
    assert not declined.pipelined and declined.solves == 0
    assert declined.why.startswith("no pipeline: none could beat the plan over the whole mesh")
    assert choose_pipeline(graph, whole_s=floor / 0.95, cluster=slow, **{**kw, "config": SearchConfig(
        pipeline=2, num_microbatches=4)}).solves > 0  # a pinned stage count prices them anyway


@pytest.mark.slow
def test_auto_pipeline_runs_and_matches_jit():
    """What the search pipelines runs on the stage runtime and computes what jax.jit does."""
    import jax
    import numpy as np
    import optax

    from models.common import grad_step

    params, _, batch = gpt.make(layers=4, width=64, batch=16).args
    model, opt = gpt.GPT(layers=4, width=64), optax.sgd(0.05, momentum=0.9)

    def loss_fn(p, b):
        logits = model.apply({"params": p}, b["tokens"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, b["labels"]).mean()

    step = grad_step(loss_fn, opt)
    auto = ss.auto(step, cluster=SLOW, pipeline="auto", **OPTIONS)
    got = want = (params, opt.init(params))
    for _ in range(3):
        *got, loss = auto(*got, batch)
        *want, want_loss = jax.jit(step)(*want, batch)
    assert auto.plan_for(params, opt.init(params), batch).pipeline.num_stages == 2
    np.testing.assert_allclose(loss, want_loss, rtol=1e-4)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_identical_stage_programs_are_solved_once_and_transfers_are_priced(monkeypatch):
    """8 layers in 8 stages: the middle stages' programs are one problem each (solved
    once), and the plan's step counts what crosses the boundaries as the stage DP does."""
    import shardsearch.search as search
    from pipeline_helpers import assign_even
    from shardsearch.pipeline.pipelined import even_stages
    from shardsearch.pipeline.stage_plan import plan_stages
    from shardsearch.pipeline.stage_search import step_time
    from shardsearch.trace import program_hash

    case = gpt.make(layers=8, width=32)
    graph = trace(case.train_step, case.args)
    split, mesh = split_microbatches(graph), MeshShape(("data", "model"), (2, 4))
    solves = []
    plan_graph = search.plan_graph
    monkeypatch.setattr(search, "plan_graph", lambda *a, **k: solves.append(1) or plan_graph(*a, **k))
    plan = plan_stages(graph, program_hash(graph), split, assign_even(graph, split, 8, 4), 4, Schedule.ONE_F_ONE_B,
                       even_stages(mesh, 8), mesh=mesh, cluster=SLOW, memory_budget=None,
                       config=SearchConfig(cache=False, compare=False, time_limit_s=10))
    programs = sum(len(s.programs) for s in plan.pipeline.stages)
    assert programs == 32 and len(solves) < 24
    stage_s = [s.micro_s + s.step_s / 4 for s in plan.pipeline.stages]
    assert plan.predicted.total_s > step_time(stage_s, [], 4)  # the activations' transfers are in it
