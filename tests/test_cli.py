"""The `shardsearch` command, driven end to end on the example."""

import json

from typer.testing import CliRunner

from shardsearch.cli import app

runner = CliRunner()
TARGET = "examples/train_mlp.py:planning_target"


def test_plan_then_explain(tmp_path):
    out = tmp_path / "plan.json"
    res = runner.invoke(app, ["plan", TARGET, "--mesh", "8x8", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "mesh [data=8 x model=8]" in res.output  # planned for 64 devices with 8 at hand
    data = json.loads(out.read_text())
    assert data["format"] == "shardsearch-plan" and data["mesh"]["axis_sizes"] == [8, 8]
    res = runner.invoke(app, ["explain", str(out)])
    assert res.exit_code == 0 and data["program_hash"] in res.output


def test_bad_input_exits_2_with_a_message(tmp_path):
    res = runner.invoke(app, ["plan", TARGET, "--cluster", "nope"])
    assert res.exit_code == 2 and "unknown cluster 'nope'" in res.output
    res = runner.invoke(app, ["plan", TARGET, "--mesh", "2by4"])
    assert res.exit_code == 2 and "not a mesh shape" in res.output
    res = runner.invoke(app, ["explain", str(tmp_path / "missing.json")])
    assert res.exit_code == 2 and "not a readable shardsearch plan" in res.output


def test_presets_lists_the_profiles():
    res = runner.invoke(app, ["presets"])
    assert res.exit_code == 0
    assert all(name in res.output for name in ("h100-8", "a100-8", "2x4-slow"))
