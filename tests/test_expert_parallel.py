"""Mixture of experts: with more experts than devices, the search splits the experts
over the mesh and XLA moves the tokens with all-to-all (expert parallelism)."""

import pytest

import shardsearch as ss
from benchmarks.models import moe
from benchmarks.runner import make_mesh
from shardsearch.hlo import parse_collectives


@pytest.mark.slow
def test_more_experts_than_devices_is_expert_parallel_with_all_to_all():
    cfg = moe.MoEConfig("moe-16x", 256, 2, 4, 16, seq=128, vocab=1024, batch=32)  # 16 experts, 8 devices
    w = moe.make_workload(cfg)
    step = ss.auto(w.train_step, mesh=make_mesh((2, 4)), cluster="h100-8", cache=False)
    plan = step.plan_for(*w.args)
    experts = {p: s for p, s in zip(plan.in_paths, plan.flat_in_specs)
               if p.startswith("args[0]") and "['moe']['w" in p}
    # every expert kernel splits its expert dim over the 4-wide axis (maybe with data too)
    assert experts and all("model" in s[0] for s in experts.values()), experts
    kinds = {c.kind for c in parse_collectives(step.lower(*w.args).compile().as_text())}
    assert "all-to-all" in kinds, kinds
