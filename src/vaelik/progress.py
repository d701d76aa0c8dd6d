"""A progress bar over examples for the long commands (eval, convergence, results).

Shows examples done out of the total, the rate and the time left, on standard error, through
``rich`` (the library Lightning's own progress bar uses). Off when not ``enabled``, for example
on every process but the first of a distributed run.
"""

from __future__ import annotations

import contextlib
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
def example_progress(total: int, description: str, enabled: bool = True) -> Iterator[Callable]:
    """Yield ``advance(n)``, to call after each batch of ``n`` examples; draw the bar meanwhile."""
    if not enabled:
        yield lambda n: None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("examples"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
