"""Multi-process runs on jax.distributed: launcher, settings, plan agreement, and a GPT
trained by 2 local processes x 4 CPU devices matching one process with 8."""

import io
import os
import re
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

import shardsearch as ss
from shardsearch.apply import place_args
from shardsearch.cli import app
from shardsearch.errors import DistributedError
from shardsearch.runtime.distributed import (
    ENV_COORDINATOR,
    ENV_LOCAL_DEVICES,
    ENV_NUM_PROCESSES,
    ENV_PROCESS_ID,
    ProcessSettings,
    settings_from_env,
)
from shardsearch.runtime.launch import EXIT_TIMEOUT, launch
from shardsearch.trace import retrace

ROOT = Path(__file__).resolve().parents[1]
SHOW_ENV = (
    "import os; print(os.environ['SHARDSEARCH_PROCESS_ID'], os.environ['SHARDSEARCH_NUM_PROCESSES'], "
    "os.environ['SHARDSEARCH_COORDINATOR'], os.environ.get('SHARDSEARCH_LOCAL_DEVICES'), "
    "repr(os.environ.get('XLA_FLAGS')))"
)


def _env(**kw):
    return {ENV_COORDINATOR: "127.0.0.1:1234", ENV_NUM_PROCESSES: "2", ENV_PROCESS_ID: "1", **kw}


def _worker_env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


# ----------------------------------------------------------------------------- settings


def test_settings_from_env():
    assert settings_from_env({}) is None  # not launched: single process, nothing to do
    assert settings_from_env(_env()) == ProcessSettings("127.0.0.1:1234", 2, 1, None)
    assert settings_from_env(_env(**{ENV_LOCAL_DEVICES: "4"})).local_devices == 4


SLURM = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
         "SLURM_LOCALID": "0"}


@pytest.mark.parametrize("env, name", [(SLURM, "Slurm"), ({"OMPI_MCA_orte_hnp_uri": "1;tcp://10.0.0.1:1"}, "Open MPI"),
                                       ({"TPU_WORKER_HOSTNAMES": "a,b"}, "Cloud TPU (GKE)"),
                                       ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, "JAX_COORDINATOR_ADDRESS")])
def test_initialize_from_env_lets_jax_configure_itself_where_it_can(env, name, monkeypatch):
    from shardsearch.runtime import distributed

    calls = []
    monkeypatch.setattr(distributed.jax.distributed, "initialize", lambda *a, **kw: calls.append((a, kw)))
    assert distributed.detected_environment(env) == name
    settings = distributed.initialize_from_env(env)
    assert calls == [((), {})]  # no arguments: jax reads the launcher's variables itself
    assert settings.coordinator == f"detected by jax ({name})" and settings.num_processes == jax.process_count()
    partial = {k: v for k, v in SLURM.items() if k != "SLURM_PROCID"}
    assert distributed.detected_environment(partial) is None  # jax's detector needs them all


def test_initialize_from_env_says_when_it_does_nothing(monkeypatch):
    from shardsearch.runtime import distributed

    monkeypatch.setattr(distributed.jax.distributed, "initialize", lambda *a, **kw: pytest.fail("initialized"))
    with pytest.warns(distributed.NotDistributedWarning, match="runs alone.*Slurm") as record:
        assert distributed.initialize_from_env({}) is None
    assert record[0].filename == __file__  # the warning names the caller's line


@pytest.mark.parametrize(
    "env, named",
    [
        ({ENV_COORDINATOR: "127.0.0.1:1234", ENV_NUM_PROCESSES: "2"}, ENV_PROCESS_ID),
        (_env(**{ENV_PROCESS_ID: "2"}), ENV_PROCESS_ID),  # ids run 0..N-1
        (_env(**{ENV_NUM_PROCESSES: "two"}), ENV_NUM_PROCESSES),
        (_env(**{ENV_COORDINATOR: "localhost"}), ENV_COORDINATOR),  # no port
        (_env(**{ENV_LOCAL_DEVICES: "0"}), ENV_LOCAL_DEVICES),
    ],
)
def test_bad_settings_name_the_variable(env, named):
    with pytest.raises(DistributedError, match=named):
        settings_from_env(env)


# ----------------------------------------------------------------------------- launcher


def test_launch_gives_each_process_its_settings_and_prefixes_its_output():
    out = io.StringIO()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_dump_to=/nowhere"}
    code = launch([sys.executable, "-c", SHOW_ENV], 3, local_devices=4, out=out, env=env, timeout_s=60)
    assert code == 0
    lines = sorted(out.getvalue().splitlines())
    assert [line[:4] for line in lines] == ["[0] ", "[1] ", "[2] "]
    coordinators = set()
    for i, line in enumerate(lines):
        pid, num, coordinator, local, flags = line[4:].split(" ", 4)
        assert (pid, num, local) == (str(i), "3", "4")
        assert re.fullmatch(r"127\.0\.0\.1:\d+", coordinator)
        # the inherited fake-device count would override the per-process one: dropped
        assert flags == "'--xla_dump_to=/nowhere'"
        coordinators.add(coordinator)
    assert len(coordinators) == 1


def test_launch_stops_the_others_when_one_fails():
    worker = "import os, sys, time; pid = int(os.environ['SHARDSEARCH_PROCESS_ID']); time.sleep(60) if pid == 0 else sys.exit(3)"
    t0 = time.monotonic()
    code = launch([sys.executable, "-c", worker], 2, out=io.StringIO(), timeout_s=120)
    assert code == 3 and time.monotonic() - t0 < 30  # process 0 was stopped, not waited for


def test_launch_timeout():
    code = launch([sys.executable, "-c", "import time; time.sleep(60)"], 2, out=io.StringIO(), timeout_s=1)
    assert code == EXIT_TIMEOUT


def test_launch_needs_a_command_and_a_count():
    with pytest.raises(DistributedError, match="needs a command"):
        launch([], 2)
    with pytest.raises(DistributedError, match="num_processes=0"):
        launch([sys.executable, "-c", "pass"], 0)


def test_cli_launch_returns_the_failing_exit_code():
    worker = "import os, sys; print('hello'); sys.exit(int(os.environ['SHARDSEARCH_PROCESS_ID']) * 5)"
    result = CliRunner().invoke(app, ["launch", "-n", "2", "--", sys.executable, "-c", worker])
    assert result.exit_code == 5
    assert "[0] hello" in result.output and "[1] hello" in result.output


# ----------------------------------------------------------------------------- plans and placement


def _f(w, x):
    return jnp.tanh(x @ w).sum()


def test_fingerprint_names_the_choice_not_the_timing(tmp_path):
    w, x = jnp.ones((32, 64)), jnp.ones((128, 32))
    plan = ss.plan(_f, w, x, mesh=(2, 4), cluster="2x4-slow")
    again = ss.plan(_f, w, x, mesh=(2, 4), cluster="2x4-slow")
    assert plan.fingerprint() == again.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{16}", plan.fingerprint())
    plan.save(tmp_path / "plan.json")
    assert ss.Plan.load(tmp_path / "plan.json").fingerprint() == plan.fingerprint()
    other = ss.plan(_f, w, x, mesh=(8,), cluster="2x4-slow")
    assert other.fingerprint() != plan.fingerprint()


def test_place_args_places_host_data_and_passes_placed_arrays_through():
    w, x = np.ones((32, 64), np.float32), jnp.ones((128, 32))  # numpy, and a jax array on one device
    step = ss.auto(_f, mesh=(2, 4), cluster="2x4-slow")
    plan = step.plan_for(w, x)
    graph, _ = retrace(_f, (w, x))
    placed = place_args((w, x), graph, plan, step.mesh)
    for arr, spec in zip(placed, plan.in_specs):
        assert arr.sharding == jax.sharding.NamedSharding(step.mesh, spec)
    again = place_args(placed, graph, plan, step.mesh)
    assert all(a is b for a, b in zip(again, placed))  # already where the plan wants them


# ----------------------------------------------------------------------------- two processes

AGREE_WORKER = textwrap.dedent(
    """
    import warnings
    import jax
    import jax.numpy as jnp
    from shardsearch.runtime.distributed import initialize_from_env, agree_on_plan
    initialize_from_env()
    import shardsearch as ss
    from shardsearch.trace import retrace

    def f(w, x):
        return jnp.tanh(x @ w).sum()

    w, x = jnp.ones((32, 64)), jnp.ones((128, 32))
    # processes that planned for different clusters hold different plans
    own = ss.plan(f, w, x, mesh=(2, 4), cluster="h100-8" if jax.process_index() == 0 else "2x4-slow")
    graph, _ = retrace(f, (w, x))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        used = agree_on_plan(own, graph.in_tree, graph.out_tree)
    print("own", own.fingerprint(), "used", used.fingerprint(), "warned", len(caught), flush=True)
    out = used.apply(f)(w, x)  # host-side inputs placed per process; a global result
    print("result", float(out), out.is_fully_addressable, flush=True)
    """
)


def _lines(text: str, word: str) -> dict[str, list[str]]:
    """Process id -> the words after ``word`` on the line it printed with ``word``."""
    found = {}
    for line in text.splitlines():
        m = re.match(r"\[(\d)\] .*?\b" + word + r" (.*)$", line)
        if m:
            found[m.group(1)] = m.group(2).split()
    return found


def test_processes_that_planned_differently_run_process_0s_plan(tmp_path):
    script = tmp_path / "agree.py"
    script.write_text(AGREE_WORKER)
    out = io.StringIO()
    code = launch([sys.executable, str(script)], 2, local_devices=4, out=out, env=_worker_env(), timeout_s=300)
    assert code == 0, out.getvalue()[-3000:]
    own = _lines(out.getvalue(), "own")
    assert own["0"][0] != own["1"][0]  # the premise: the two plans differ
    assert own["0"][2] == own["1"][2] == own["0"][0]  # both use process 0's plan
    assert own["0"][4] == own["1"][4] == "1"  # and both were told
    result = _lines(out.getvalue(), "result")
    expected = float(_f(jnp.ones((32, 64)), jnp.ones((128, 32))))
    for pid in "01":
        assert float(result[pid][0]) == pytest.approx(expected, rel=1e-5)
        assert result[pid][1] == "False"  # the result spans both processes' devices


@pytest.mark.slow
def test_two_processes_train_gpt_like_one_process():
    """Acceptance (issue 7): 2 processes x 4 CPU devices, 3 steps of an auto-sharded GPT
    on the (2, 4) mesh; losses equal a single-process 8-device run; same plan everywhere."""
    from examples import multihost_gpt as example

    out = io.StringIO()
    command = [sys.executable, "-m", "examples.multihost_gpt", "--steps", "3"]
    code = launch(command, 2, local_devices=4, out=out, env=_worker_env(), timeout_s=400)
    assert code == 0, out.getvalue()[-3000:]

    train_step, params, opt_state, batch = example.make_problem()
    step = ss.auto(train_step, mesh=example.MESH_SHAPE, cluster=example.CLUSTER)
    fingerprint = step.plan_for(params, opt_state, batch).fingerprint()
    expected = example.train(step, params, opt_state, batch, 3)
    plain = example.train(jax.jit(train_step), params, opt_state, batch, 3)
    np.testing.assert_allclose(expected, plain, rtol=1e-4)

    plans, losses = _lines(out.getvalue(), "plan"), _lines(out.getvalue(), "losses")
    assert plans == {"0": [fingerprint], "1": [fingerprint]}  # the plan one process with 8 devices makes
    for pid in "01":
        np.testing.assert_allclose([float(v) for v in losses[pid]], expected, rtol=1e-6)
