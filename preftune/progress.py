"""The progress bars: training's (loss, reward accuracy, margin, pairs/s and time left; a plain line per log step off a
terminal), and one per pass over data that is not training (reference, scoring, generation)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, total: int, start: int, enabled: bool):
        self.console = Console(stderr=True)
        self.live = enabled and self.console.is_terminal
        self.enabled = enabled
        self.total = total
        self.bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                            TimeRemainingColumn(), console=self.console, disable=not self.live)
        self.task = self.bar.add_task("train", total=total, completed=start, stats="")

    def __enter__(self) -> "TrainProgress":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def update(self, step: int, m: dict[str, float]) -> None:
        if "mean_token_accuracy" in m:  # SFT
            stats = (f"loss {m['loss']:.4f}  token acc {m['mean_token_accuracy']:.3f}  ppl {m.get('perplexity', float('nan')):.2f}  "
                     f"{m.get('pairs_per_second', 0):.1f} examples/s")
        elif "kl" in m:  # KTO: no pairs, so no accuracy; its KL reference point instead
            stats = (f"loss {m['loss']:.4f}  kl {m['kl']:.3f}  margin {m.get('rewards/margins', float('nan')):+.3f}  "
                     f"{m.get('pairs_per_second', 0):.1f} examples/s")
        else:
            stats = (f"loss {m.get('loss', float('nan')):.4f}  acc {m.get('rewards/accuracies', float('nan')):.2f}  "
                     f"margin {m.get('rewards/margins', float('nan')):+.3f}  {m.get('pairs_per_second', 0):.1f} pairs/s")
        self.bar.update(self.task, completed=step, stats=stats)
        if self.enabled and not self.live:
            print(f"step {step}/{self.total}  {stats}", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if self.enabled:
            self.console.print(text)


@contextlib.contextmanager
def stage(name: str, total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`; draws a bar for `name` on stderr while the block runs (off a terminal: a line at the start and
    at the end)."""
    console = Console(stderr=True)
    live = enabled and console.is_terminal
    bar = Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                   disable=not live, transient=False)
    if enabled and not live and total:
        print(f"{name}: {total} to do", file=sys.stderr, flush=True)
    with bar:
        task = bar.add_task(name, total=total)
        yield lambda n: bar.advance(task, n)
    if enabled and not live and total:
        print(f"{name}: done", file=sys.stderr, flush=True)
