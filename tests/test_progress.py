"""Progress output: a spinner on a terminal once a search is slow, lines when verbose."""

import io

from rich.console import Console

from shardsearch.progress import StageLog


def _terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=100), out


def test_a_slow_search_on_a_terminal_shows_its_stage_and_clears_it():
    console, out = _terminal()
    log = StageLog(False, delay_s=0.0, console=console)
    log("solve: 90 nodes, 207 edges")
    log.close()
    assert "shardsearch: solve: 90 nodes" in out.getvalue()
    assert log.status is None


def test_a_fast_search_or_a_pipe_prints_nothing(capsys):
    console, out = _terminal()
    quick = StageLog(False, delay_s=60.0, console=console)
    quick("tracing")
    quick.close()
    piped = StageLog(False, delay_s=0.0, console=Console(file=io.StringIO(), force_terminal=False))
    piped("tracing")
    piped.close()
    assert out.getvalue() == "" and capsys.readouterr().err == ""


def test_verbose_prints_every_stage_to_stderr(capsys):
    log = StageLog(True)
    log("traced 10 nodes")
    assert capsys.readouterr().err == "[shardsearch] traced 10 nodes\n"


SLOW_SEARCH = """
import time, warnings
import jax.numpy as jnp
import shardsearch as ss

def step(x):
    time.sleep(2.6)  # runs while the search traces: a search that takes longer than 2 s
    return (x * 2.0).sum()

ss.plan(step, jnp.ones((8, 8)), mesh=(1,), cache=False)
print("planned")
"""


def _run_slow_search(on_terminal: bool) -> str:
    """The slow search in a fresh process, its stderr on a pseudo-terminal or a pipe."""
    import os
    import pty
    import subprocess
    import sys

    env = {**os.environ, "TERM": "xterm", "COLUMNS": "100"}
    env.pop("CI", None)
    if not on_terminal:
        res = subprocess.run([sys.executable, "-c", SLOW_SEARCH], capture_output=True, text=True, env=env, timeout=120)
        assert res.returncode == 0, res.stderr
        return res.stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SEARCH], stdout=subprocess.DEVNULL, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the process closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=120) == 0
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_a_search_over_two_seconds_shows_progress_on_a_terminal_and_nothing_on_a_pipe():
    shown = _run_slow_search(on_terminal=True)
    assert "shardsearch: tracing" in shown  # shown while the one long stage still runs
    piped = _run_slow_search(on_terminal=False)
    assert "shardsearch" not in piped and "tracing" not in piped


def test_verbose_never_prints_a_line_twice(capsys):
    log = StageLog(True)
    for msg in ("solve: 12 nodes", "re-pricing", "solve: 12 nodes", "solve: OPTIMAL"):
        log(msg)
    err = capsys.readouterr().err.splitlines()
    assert err == ["[shardsearch] solve: 12 nodes", "[shardsearch] re-pricing", "[shardsearch] solve: OPTIMAL"]


def test_warnings_point_at_the_callers_line(tmp_path, monkeypatch):
    """A warning raised deep in the search names the line that called shardsearch (here a
    cached plan file that cannot be read back), not shardsearch's own code."""
    import jax.numpy as jnp
    import pytest

    import shardsearch as ss

    monkeypatch.setenv("SHARDSEARCH_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SHARDSEARCH_NO_CACHE")
    step = lambda x: (x * 2.0).sum()  # noqa: E731
    ss.plan(step, jnp.ones((8, 8)), mesh=(2, 4), compare=False)
    [cached] = list(tmp_path.glob("*.plan.json"))
    cached.write_text("not json")
    with pytest.warns(UserWarning, match="ignoring the cached plan") as record:
        ss.plan(step, jnp.ones((8, 8)), mesh=(2, 4), compare=False)  # the line the warning names
    assert record[0].filename == __file__, record[0].filename
    assert "ss.plan(step" in open(__file__).read().splitlines()[record[0].lineno - 1]
