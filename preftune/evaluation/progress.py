"""A progress bar per evaluation stage (scoring, generation), on stderr; silent when disabled."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


@contextlib.contextmanager
def stage(name: str, total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`; draws a bar for `name` while the block runs."""
    console = Console(stderr=True)
    bar = Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                   disable=not (enabled and console.is_terminal), transient=False)
    with bar:
        task = bar.add_task(name, total=total)
        yield lambda n: bar.advance(task, n)
