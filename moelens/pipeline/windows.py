"""Documents to windows to batches: the pure part of the trace pipeline (no model, no store).

A document longer than ``max_length`` tokens is traced in windows of at most ``max_length``
tokens. Windows start every ``stride`` tokens (``stride = max_length``: consecutive, no overlap);
each window records only the tokens that no earlier window recorded - its *new* part, as in
sliding-window perplexity - so every token is recorded exactly once, with
``max_length - stride`` tokens of carried context at least (except in the first window).
Positions stay absolute within the document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

__all__ = ["Window", "window_spans", "document_windows", "Batcher", "cut_context"]


@dataclass(frozen=True)
class Window:
    """Tokens ``[start, start + len(ids))`` of a document; routes are recorded from ``record_from`` on."""

    doc_id: int
    start: int
    ids: np.ndarray
    record_from: int

    @property
    def end(self) -> int:
        return self.start + len(self.ids)


def window_spans(n_tokens: int, max_length: int, stride: int | None = None) -> list[tuple[int, int, int]]:
    """``[(start, end, record_from)]`` of the windows of a document of ``n_tokens`` tokens.

    >>> window_spans(10, 4)
    [(0, 4, 0), (4, 8, 4), (8, 10, 8)]
    >>> window_spans(10, 6, stride=3)
    [(0, 6, 0), (3, 9, 6), (6, 10, 9)]
    """
    stride = max_length if stride is None else stride
    if not 1 <= stride <= max_length:
        raise ValueError(f"stride must be in [1, max_length={max_length}], got {stride}")
    spans, start, recorded = [], 0, 0
    while True:
        end = min(start + max_length, n_tokens)
        spans.append((start, end, recorded))
        recorded = end
        if end >= n_tokens:
            return spans
        start += stride


def document_windows(doc_id: int, ids: np.ndarray, max_length: int, stride: int | None = None) -> list[Window]:
    return [Window(doc_id, s, ids[s:e], r) for s, e, r in window_spans(len(ids), max_length, stride)]


def cut_context(n_tokens: int, max_length: int, stride: int | None = None) -> int:
    """Tokens recorded with less context than a full-document run gives them (0 when one window holds all).

    A token at position ``p`` recorded in the window starting at ``s > 0`` sees ``p - s`` earlier tokens
    instead of ``p``.
    """
    return sum(e - r for s, e, r in window_spans(n_tokens, max_length, stride) if s > 0)


class Batcher:
    """Groups windows into batches of ``batch_size``, in document order, across documents."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._windows: list[Window] = []

    def add(self, windows: Iterable[Window]) -> Iterator[list[Window]]:
        """Queue ``windows``; yield every full batch."""
        self._windows.extend(windows)
        while len(self._windows) >= self.batch_size:
            batch, self._windows = self._windows[:self.batch_size], self._windows[self.batch_size:]
            yield batch

    def flush(self) -> Iterator[list[Window]]:
        """Yield the last, partial batch (if any)."""
        if self._windows:
            batch, self._windows = self._windows, []
            yield batch
