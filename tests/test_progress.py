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
