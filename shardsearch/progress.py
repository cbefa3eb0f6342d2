"""What a search says while it runs, and where its warnings point.

A search of a small model takes a fraction of a second and prints nothing. One that
runs longer than ``delay_s`` on a terminal or in a notebook shows a one-line rich
spinner with the current stage (tracing, solving a core of N nodes, ...) and the time
so far, gone when the plan is ready; it appears after ``delay_s`` even while one long
stage (a solve) is running. Off a terminal (CI logs, pipes) nothing is shown unless
``verbose=True``, which prints every stage line once to stderr (a line identical to one
already printed, as a fixed point's second solve of the same problem says, is skipped).

Warnings name the user's line: ``warn_user`` points them at the first frame outside
shardsearch (and the jax frames it calls through), not at shardsearch's own code.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings

from rich.console import Console

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _inside_library(filename: str) -> bool:
    path = os.path.abspath(filename)
    return path.startswith(_PACKAGE_DIR + os.sep) or f"{os.sep}jax{os.sep}" in path or "<frozen" in filename


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the caller's own line (the first frame outside
    shardsearch and jax), so the filter and the printed location are the user's."""
    frame, level = sys._getframe(1), 2  # stacklevel 2 is the frame that called warn_user
    while frame is not None and _inside_library(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level if frame is not None else 2)


class StageLog:
    """Call it with each stage's message; ``close()`` when the search ends."""

    def __init__(self, verbose: bool, *, delay_s: float = 2.0, console: Console | None = None):
        self.verbose = verbose
        self.delay_s = delay_s
        self.console = console or Console(stderr=True)
        self.start = time.perf_counter()
        self.status = None
        self.message = "starting"
        self.printed: set[str] = set()
        self._lock = threading.Lock()
        self._timer = None
        if not verbose and (self.console.is_terminal or self.console.is_jupyter):
            self._timer = threading.Timer(delay_s, self._show)
            self._timer.daemon = True
            self._timer.start()

    def _text(self) -> str:
        return f"shardsearch: {self.message}"

    def _start_display(self) -> None:
        """A transient spinner, the stage and the time so far (the lock is held)."""
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.status = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                               console=self.console, transient=True)
        self._task = self.status.add_task(self._text(), total=None, start=True)
        self.status.start()

    def _show(self) -> None:
        with self._lock:
            if self.status is None and self._timer is not None:
                self._start_display()

    def __call__(self, msg: str) -> None:
        if self.verbose:
            if msg not in self.printed:
                self.printed.add(msg)
                print(f"[shardsearch] {msg}", file=sys.stderr, flush=True)
            return
        with self._lock:
            self.message = msg
            if self.status is None and self._timer is not None and time.perf_counter() - self.start >= self.delay_s:
                self._start_display()
            elif self.status is not None:
                self.status.update(self._task, description=self._text())

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self.status is not None:
                self.status.stop()
                self.status = None
