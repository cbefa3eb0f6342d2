"""What a search says while it runs: stage lines when verbose, else a quiet spinner.

A search of a small model takes a fraction of a second and prints nothing. One that
runs longer than ``delay_s`` on a terminal shows a one-line rich spinner with the
current stage (tracing, solving a core of N nodes, ...), gone when the plan is ready.
Off a terminal (CI logs, pipes) only ``verbose=True`` prints.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console


class StageLog:
    def __init__(self, verbose: bool, *, delay_s: float = 1.0, console: Console | None = None):
        self.verbose = verbose
        self.delay_s = delay_s
        self.console = console or Console(stderr=True)
        self.start = time.perf_counter()
        self.status = None

    def __call__(self, msg: str) -> None:
        if self.verbose:
            print(f"[shardsearch] {msg}", file=sys.stderr, flush=True)
        elif self.console.is_terminal and time.perf_counter() - self.start >= self.delay_s:
            text = f"shardsearch: {msg}"
            if self.status is None:
                self.status = self.console.status(text)
                self.status.start()
            else:
                self.status.update(text)

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None
