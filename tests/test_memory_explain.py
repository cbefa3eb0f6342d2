"""Explaining memory (shardsearch.memory.explain, reporting/memory.py): one breakdown of the
predicted per-device peak, that sums to it and reads the same in plan.summary(), `explain`
and MemoryBudgetError."""

import re

import optax
import pytest

import shardsearch as ss
from cost_model import MeshShape
from helpers import abstract_mlp_args, make_train_step
from shardsearch.memory import KINDS
from shardsearch.memory.explain import ACTIVATIONS, COPIES, GRADIENTS, TEMPORARIES, cut_for, fmt_memory
from shardsearch.memory.breakdown import INPUTS, OPT_STATE, PARAMS
from shardsearch.reporting.memory import PEAK_LABEL, peak_line

UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


@pytest.fixture(scope="module")
def adam_mlp():
    optimizer = optax.adam(1e-3)
    args = abstract_mlp_args(64, 256, layers=2, optimizer=optimizer)
    return make_train_step(optimizer), args, ss.plan(make_train_step(optimizer), *args, mesh=(2, 4))


def _kinds_in(text: str) -> dict[str, float]:
    """``kind 1.5 MiB, kind 2 B, ...`` back into bytes per kind."""
    out = {}
    for item in text.split(", "):
        m = re.fullmatch(r"(.+) ([\d.]+) (B|KiB|MiB|GiB)", item)
        assert m and m.group(1) in KINDS, item
        out[m.group(1)] = float(m.group(2)) * UNITS[m.group(3)]
    return out


def test_the_breakdown_sums_to_the_predicted_peak(adam_mlp):
    _, _, plan = adam_mlp
    plain, donated = plan.memory_at_peak
    assert not plain.donated and donated.donated
    assert plain.peak_bytes == pytest.approx(plan.predicted.peak_bytes)
    assert donated.peak_bytes == pytest.approx(plan.predicted.peak_donated_bytes)
    for m in plan.memory_at_peak:
        assert sum(b for _, b in m.by_kind) == pytest.approx(m.peak_bytes)
        assert [k for k, _ in m.by_kind] == [k for k in KINDS if k in dict(m.by_kind)]  # one order everywhere
        assert [b for _, _, b, _ in m.top] == sorted((b for _, _, b, _ in m.top), reverse=True)
    # donated, the new state reuses the old state's buffers: only the loss has a result buffer of its own
    assert dict(plain.by_kind)["results"] > 2**18 and dict(donated.by_kind)["results"] == 4
    assert dict(donated.by_kind)[ACTIVATIONS] > 0  # what the forward pass keeps for the backward pass


def test_summary_explain_and_error_word_the_breakdown_alike(adam_mlp, tmp_path):
    step, args, plan = adam_mlp
    summary, explained = plan.summary(), plan.explain()
    for m in plan.memory_at_peak:
        assert peak_line(m) in summary and peak_line(m) in explained
        parsed = _kinds_in(peak_line(m).split(" = ", 1)[1])
        assert sum(parsed.values()) == pytest.approx(m.peak_bytes, rel=0.01)  # units as printed
    assert f"{PEAK_LABEL} (no argument donated): {fmt_memory(plan.predicted.peak_bytes)}" in summary
    # explain's per-kind table and its contributors, each with the plan choice that cuts it
    for kind, nbytes in plan.memory_at_peak[0].by_kind:
        assert re.search(rf"\n  {re.escape(kind)} +{re.escape(fmt_memory(nbytes))} ", explained)
    for kind, name, nbytes, cut in plan.memory_at_peak[0].top:
        assert re.search(rf"{re.escape(name)} +{re.escape(kind)} +{re.escape(fmt_memory(nbytes))}  {re.escape(cut)}",
                         explained)
    # a plan file keeps the breakdown: the same text after a round trip
    plan.save(tmp_path / "p.json")
    assert ss.Plan.load(tmp_path / "p.json").memory_at_peak == plan.memory_at_peak
    # the error for a budget nothing meets: the same kinds, units and order, summing to its least
    with pytest.raises(ss.MemoryBudgetError) as err:
        ss.plan(step, *args, mesh=(2, 4), memory_budget=10_000)
    msg = str(err.value)
    kinds = msg.split(") = ", 1)[1].split(". Raise", 1)[0]
    parsed = _kinds_in(kinds)
    assert list(parsed) == [k for k in KINDS if k in parsed]
    assert sum(parsed.values()) == pytest.approx(err.value.least_bytes, rel=0.01)
    assert f"the least it can take is {fmt_memory(err.value.least_bytes)}" in msg


def test_each_kind_names_the_plan_choice_that_cuts_it():
    mesh = MeshShape(("data", "model"), (2, 4))
    assert cut_for(PARAMS, ((), ("model",)), mesh) == "ZeRO-3 / FSDP split over data"
    assert cut_for(PARAMS, (("data",), ("model",)), mesh).startswith("more devices")
    assert cut_for(OPT_STATE, ((), ()), mesh) == "ZeRO-1 split over data+model"
    assert cut_for(GRADIENTS, (("model",), ()), mesh).startswith("ZeRO-2 split over data")
    batch_split = cut_for(ACTIVATIONS, (("data",), ()), mesh)
    assert "remat" in batch_split and "microbatches" in batch_split and "split over model" in batch_split
    all_split = cut_for(ACTIVATIONS, (("data",), ("model",)), mesh)
    assert "remat" in all_split and "split" not in all_split
    assert "microbatches" in cut_for(INPUTS, ((), ()), mesh) and "microbatches" in cut_for(TEMPORARIES, None, mesh)
    assert "remat" in cut_for(COPIES, None, mesh)
    assert [fmt_memory(b) for b in (12, 3 * 2**10, 5.5 * 2**20, 2.25 * 2**30)] == ["12 B", "3.0 KiB", "5.5 MiB",
                                                                                   "2.25 GiB"]
