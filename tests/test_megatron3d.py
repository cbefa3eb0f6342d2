"""The hand Megatron 3-D baseline: even layer ranges, a stage per node, Megatron layouts
pinned inside each stage, on the same pipeline runtime as shardsearch's plans."""

import pytest

from benchmarks.megatron3d import default_microbatches, plan_3d, uniform_ranges
from benchmarks.models import get_workload
from cost_model import Cluster, MeshShape
from shardsearch.errors import StageError
from shardsearch.pipeline.layers import LayerUnits, Unit


def _units(kinds):
    return LayerUnits(tuple(Unit(10 * k, 10 * k + 10, kind) for k, kind in enumerate(kinds)),
                      (1,) * (len(kinds) - 1), "repeats")


def test_layers_dealt_evenly_with_embedding_first_and_head_last():
    units = _units([7, 0, 0, 0, 0, 9])  # embedding, 4 layers, head
    assert uniform_ranges(units, 2) == ((0, 3), (3, 6))
    assert uniform_ranges(units, 4) == ((0, 2), (2, 3), (3, 4), (4, 6))
    assert uniform_ranges(_units([0] * 8), 8) == tuple((k, k + 1) for k in range(8))
    with pytest.raises(StageError, match="4 repeated layers cannot be dealt out to 8 stages"):
        uniform_ranges(units, 8)


def test_four_microbatches_per_stage_as_the_batch_allows():
    assert default_microbatches(32, 2) == 8
    assert default_microbatches(16, 8) == 16
    assert default_microbatches(12, 4) == 12
    assert default_microbatches(6, 4) == 6


def test_a_stage_per_node_with_megatron_layouts_pinned():
    w = get_workload("mlp", "mlp-tiny")
    plan = plan_3d(w, MeshShape(("data", "model"), (2, 4)), Cluster.load("2x4-slow"), time_limit_s=10)
    p = plan.pipeline
    assert [s.devices for s in p.stages] == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert p.num_microbatches == 8 and p.schedule.value == "1f1b"
    # each stage's forward reads its kernels tensor-parallel over the node: column then row
    for stage in p.stages:
        fwd = stage.programs["forward"]
        kernels = [spec for path, spec in zip(fwd.in_paths, fwd.flat_in_specs)
                   if path.rstrip(">").endswith("['w']")]  # micro<args[0][1]['w']>
        assert kernels and all(spec in (((), ("model",)), (("model",), ())) for spec in kernels)
        assert ((), ("model",)) in kernels and (("model",), ()) in kernels
