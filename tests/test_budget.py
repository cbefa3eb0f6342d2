"""memory_budget is a promise: as bytes or strings, honoured by what XLA compiles, and free
when the best plan already meets it."""

import optax
import pytest
from helpers import abstract_mlp_args, make_train_step
from typer.testing import CliRunner

import shardsearch as ss
from benchmarks.runner import make_mesh
from shardsearch.cli import app
from shardsearch.fidelity import compiled_peak_bytes
from shardsearch.fit import parse_budget

GB, GIB = 10**9, 2**30


def test_budgets_as_numbers_and_strings():
    device = 80 * GB
    assert parse_budget(None, device) == device
    assert parse_budget(8e9, device) == parse_budget("8GB", device) == parse_budget("8 gb", device) == 8 * GB
    assert parse_budget("7.5GiB", device) == 7.5 * GIB
    assert parse_budget("512MiB", device) == 512 * 2**20
    assert parse_budget("80%", device) == 0.8 * device
    for bad in ("8 parsecs", "-1GB", "0", "lots", True, [8]):
        with pytest.raises(ss.OptionError, match=r"is not a memory size.*\"7\.5GiB\".*\"80%\""):
            parse_budget(bad, device)


def _mlp():
    optimizer = optax.adam(1e-3)
    return make_train_step(optimizer), abstract_mlp_args(64, 512, layers=2, optimizer=optimizer)


def test_a_budget_the_best_plan_meets_returns_that_plan():
    step, args = _mlp()
    free = ss.plan(step, *args, mesh=(2, 4), cache=False)
    met = ss.plan(step, *args, mesh=(2, 4), memory_budget=free.predicted.peak_bytes * 1.01, cache=False)
    assert met.fingerprint() == free.fingerprint()
    assert met.predicted.total_s == free.predicted.total_s and met.stats.status == free.stats.status


@pytest.mark.parametrize("fraction", [0.6, 0.25])
def test_binding_budgets_compile_within_them(fraction):
    """The best plan's compiled step is over these budgets; the plans returned under them
    compile within (by XLA's memory_analysis), at a price in predicted time."""
    step, args = _mlp()
    mesh = make_mesh((2, 4))
    free = ss.auto(step, mesh=mesh, cache=False)
    best = compiled_peak_bytes(free.lower(*args).compile())
    budget = fraction * best
    fitted = ss.auto(step, mesh=mesh, memory_budget=f"{budget / 2**20:.4f}MiB", cache=False)
    used = compiled_peak_bytes(fitted.lower(*args).compile())
    assert used <= budget < best
    assert fitted.plan_for(*args).predicted.total_s >= free.plan_for(*args).predicted.total_s


def test_the_command_takes_budgets_as_strings():
    runner = CliRunner()
    target = "examples/train_mlp.py:planning_target"
    res = runner.invoke(app, ["plan", target, "--memory-budget", "80%", "--no-cache"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["plan", target, "--memory-budget", "8 parsecs"])
    assert res.exit_code == 2 and "is not a memory size" in res.output
