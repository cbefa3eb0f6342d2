"""Recomputation on the GPU target: a whole-batch remat plan (every layer, nothing_saveable)
compiled for the cluster's GPUs saves roughly the memory its plan predicts against the
same step without remat (issue 13, part 3; benchmarks/results/memory.md, GPT-39B rows).
FSDP pinned, with sharded_updates: each weight gradient is reduce-scattered and its
update runs on the shard (without it the update ran on the gathered weight, XLA kept that
copy live to the step's end, and the saving was 26 MiB compiled against 68 predicted).

Needs jax's CUDA plugin (pip install -e ".[test,gpu-aot]"); skips without it."""

import optax
import pytest

import shardsearch as ss
from benchmarks.baselines import Baseline, baseline_specs
from benchmarks.models import gpt
from benchmarks.runner import make_mesh
from benchmarks.standard_plans import pins_of
from cost_model import MeshShape
from shardsearch.fidelity import compiled_peak_bytes
from shardsearch.target import plugin_installed, target_mesh

needs_plugin = pytest.mark.skipif(not plugin_installed(), reason='needs pip install "shardsearch[gpu-aot]"')


@needs_plugin
def test_whole_batch_remat_saves_what_the_plan_predicts_on_the_gpu():
    cfg = gpt.GPTConfig("g", hidden=512, heads=8, seq=256, vocab=1024, layers=4, batch=16)
    w = gpt.make_workload(cfg, optax.sgd(1e-3))
    mesh = make_mesh((8,))
    pins = pins_of(w.args, baseline_specs(w, MeshShape(tuple(mesh.axis_names), (8,)), Baseline.FSDP))
    gpus = target_mesh("h100-8", (8,))
    predicted, compiled = {}, {}
    for remat in (False, "nothing_saveable"):
        plan = ss.plan(w.train_step, *w.args, mesh=mesh, cluster="h100-8", pins=pins, remat=remat,
                       cache=False, compare=False, pipeline=None, sharded_updates=True)
        assert (plan.remat is not None) == bool(remat)
        predicted[remat] = plan.predicted.peak_bytes
        program = plan.apply(w.train_step, mesh=gpus).lower(*w.args).compile()
        assert "reduce-scatter" in program.as_text()  # the weight gradients, for the sharded updates
        compiled[remat] = compiled_peak_bytes(program)
    saved_predicted = predicted[False] - predicted["nothing_saveable"]
    saved_compiled = compiled[False] - compiled["nothing_saveable"]
    assert saved_predicted > 0.25 * predicted[False]  # the case is one where remat matters
    assert saved_compiled >= 0.7 * saved_predicted, (saved_compiled / 2**20, saved_predicted / 2**20)
