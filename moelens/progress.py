"""Progress display for long runs: documents done, tokens per second and time left (Rich)."""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["TraceProgress"]


class TraceProgress:
    """A Rich progress bar over documents; a no-op when disabled or when stderr is not a terminal."""

    def __init__(self, *, total: int, done: int = 0, enabled: bool = True, label: str = "trace") -> None:
        self.total, self.done = total, done
        self.tokens = 0
        self._start = time.perf_counter()
        self._progress: Any = None
        self._task: Any = None
        self.enabled = enabled and sys.stderr.isatty()
        self.label = label

    def __enter__(self) -> "TraceProgress":
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("docs"), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                TextColumn("ETA"), TimeRemainingColumn(), transient=False)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.label, total=self.total, completed=self.done, rate="")
        return self

    def advance(self, documents: int, tokens: int) -> None:
        self.done += documents
        self.tokens += tokens
        if self._progress is not None:
            elapsed = max(time.perf_counter() - self._start, 1e-9)
            self._progress.update(self._task, completed=self.done, rate=f"{self.tokens / elapsed:,.0f} tok/s")

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
