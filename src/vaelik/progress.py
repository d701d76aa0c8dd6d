"""A progress bar over examples for the long commands (eval, convergence, results).

Shows examples done out of the total, the time spent and the time left, on standard error:
a live ``rich`` bar in a terminal (the library Lightning's own progress bar uses), and a plain
line at most once a minute, and at the end, when standard error is a file (a ``nohup`` log).
Off when not ``enabled``, for example on every process but the first of a distributed run.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextlib.contextmanager
def example_progress(
    total: int, description: str, enabled: bool = True, done: int = 0
) -> Iterator[Callable]:
    """Yield ``advance(n)``, to call after each batch of ``n`` examples; draw the bar meanwhile,
    starting at ``done`` of ``total`` (examples found already done, say in a results store)."""
    if not enabled:
        yield lambda n: None
        return
    console = Console(stderr=True)
    if not console.is_terminal or console.is_dumb_terminal:
        yield PlainProgress(total, description, done=done).advance
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("examples"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    with bar:
        task = bar.add_task(description, total=total, completed=done)
        yield lambda n: bar.advance(task, n)


class PlainProgress:
    """Progress as plain lines, for a log file: ``label: done/total examples, 0:02:10, 0:05:00
    left``, at most every ``interval_s`` seconds and once at the end."""

    def __init__(
        self, total: int, description: str, interval_s: float = 60.0, done: int = 0
    ) -> None:
        self.total, self.description, self.interval_s = total, description, interval_s
        self.done = self.found = done  # found: done before this process started
        self.start = self.last = time.monotonic()
        if done:  # where it starts, said once (nothing more is said when nothing is left)
            print(f"{description}: {done}/{total} examples", file=sys.stderr, flush=True)

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last < self.interval_s and self.done < self.total:
            return
        self.last = now
        elapsed = now - self.start
        new = self.done - self.found
        left = elapsed * (self.total - self.done) / new if new else float("nan")
        print(
            f"{self.description}: {self.done}/{self.total} examples, {clock(elapsed)},"
            f" {clock(left)} left",
            file=sys.stderr,
            flush=True,
        )


def clock(seconds: float) -> str:
    """``h:mm:ss``, or ``?`` when unknown."""
    if seconds != seconds:  # NaN
        return "?"
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
