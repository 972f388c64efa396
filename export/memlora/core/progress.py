"""Progress bars (rich) that switch off cleanly in tests and pipes."""
from __future__ import annotations

import contextlib
from typing import Iterator


class _Quiet:
    """Same calls as rich.progress.Progress, doing nothing."""

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass

    def advance(self, *a, **k):
        pass


@contextlib.contextmanager
def steps(show: bool = True) -> Iterator:
    """A rich progress display for long work, or a silent stand-in."""
    if not show:
        yield _Quiet()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=False) as progress:
        yield progress
