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
    # parameters and optimizer state donated (the new state written over the old)
    sys.path.insert(0, str(Path(__file__).parent))
    case = (_suite_cases({name}) + _model_cases({name}))[0]
    rows = measure(case, Cluster.load("h100-8"), (2, 4))
    assert [r.donated for r in rows] == [False, True]
    for r in rows:
        assert abs(r.error) <= 0.10, r
