"""Capture modes: turn what collectors hand over into write batches of finished documents.

A document can span several windows and batches; a mode keeps it pending until its last window
has run, then hands it to the writer with everything that belongs to it, so that a commit never
holds part of a document. :class:`RoutesMode` writes every routing decision with the document's
tokens after each batch; :class:`StatsMode` writes the aggregates accumulated on the device
together with exactly the documents they cover, every ``flush_documents`` documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from moelens.pipeline.plan import RunPlan
from moelens.pipeline.types import RoutePiece, RouteRows
from moelens.pipeline.windows import Window
from moelens.store import WriteBatch

__all__ = ["PendingDocument", "RoutesMode", "StatsMode", "documents_only"]

Progress = Callable[[int, int], None]  # (documents finished, their tokens)


@dataclass
class PendingDocument:
    """A document whose windows are still being traced."""

    row: dict[str, Any]  # doc_id, domain, language, n_tokens, source, meta
    ids: np.ndarray
    texts: list[str | None] | None
    windows_left: int
    pieces: list[RoutePiece] = field(default_factory=list)


def documents_only(rows: list[dict[str, Any]]) -> WriteBatch:
    return WriteBatch(documents=rows)


class _Mode:
    def __init__(self, plan: RunPlan, progress: Progress) -> None:
        self.plan, self.progress = plan, progress
        self.pending: dict[int, PendingDocument] = {}

    def add(self, doc: PendingDocument) -> None:
        self.pending[int(doc.row["doc_id"])] = doc

    def _finish_windows(self, windows: Sequence[Window]) -> list[int]:
        """Count the batch's windows off their documents; the ids of the documents now complete."""
        for w in windows:
            self.pending[w.doc_id].windows_left -= 1
        return sorted({w.doc_id for w in windows if self.pending[w.doc_id].windows_left == 0})


class RoutesMode(_Mode):
    """Every routing decision: each finished document's tokens and routes, after each batch."""

    def after_batch(self, windows: Sequence[Window], collector: Any) -> list[WriteBatch]:
        rows = collector.finish_batch()
        self._assign(windows, rows)
        finished = self._finish_windows(windows)
        return [self._batch(finished)] if finished else []

    def close(self, collector: Any) -> list[WriteBatch]:
        return []

    def _assign(self, windows: Sequence[Window], rows: RouteRows) -> None:
        """Route rows (flattened batch rows) to their windows' documents, at absolute positions,
        keeping only each window's new part (``pos >= record_from``)."""
        kept, width = self.plan.site_ids, self.plan.logits_width
        step = next((s for s in rows.steps if s.batch == len(windows)), None)
        seq = step.seq if step is not None else max(len(w.ids) for w in windows)
        for r in rows.routes:
            if r.site not in kept:
                continue
            b, s = r.rows // seq, r.rows % seq
            for bi in np.unique(b):
                window = windows[int(bi)]
                pos = s + window.start
                sel = (b == bi) & (pos >= window.record_from)
                if not sel.any():
                    continue
                logits = r.logits[sel] if r.logits is not None else None
                if logits is not None and logits.shape[1] < width:
                    logits = np.pad(logits, ((0, 0), (0, width - logits.shape[1])), constant_values=np.nan)
                confidence = r.confidence[sel] if r.confidence is not None else None
                self.pending[window.doc_id].pieces.append(
                    RoutePiece(pos[sel].astype(np.int32), r.site, r.experts[sel], r.weights[sel], logits, confidence))

    def _batch(self, finished: list[int]) -> WriteBatch:
        k = self.plan.table_k
        rows, tok_doc, tok_pos, tok_id, tok_text = [], [], [], [], []
        r_doc, r_pos, r_site, r_e, r_w, r_l, r_c = [], [], [], [], [], [], []
        n_tokens = 0
        for d in finished:
            doc = self.pending.pop(d)
            rows.append(doc.row)
            n = len(doc.ids)
            n_tokens += n
            tok_doc.append(np.full(n, d, np.int64))
            tok_pos.append(np.arange(n, dtype=np.int32))
            tok_id.append(doc.ids.astype(np.int32))
            tok_text.extend(doc.texts if doc.texts is not None else [None] * n)
            for p in doc.pieces:
                r_doc.append(np.full(len(p.pos), d, np.int64))
                r_pos.append(p.pos)
                r_site.append(np.full(len(p.pos), p.site, np.int16))
                r_e.append(_pad_cols(p.experts, k, -1))
                r_w.append(_pad_cols(p.weights, k, 0.0))
                if p.logits is not None:
                    r_l.append(p.logits)
                if p.confidence is not None:
                    r_c.append(p.confidence)
        self.progress(len(rows), n_tokens)
        return WriteBatch(
            documents=rows, token_doc=np.concatenate(tok_doc), token_pos=np.concatenate(tok_pos),
            token_id=np.concatenate(tok_id), token_text=tok_text,
            route_doc=_cat(r_doc, np.int64), route_pos=_cat(r_pos, np.int32), route_site=_cat(r_site, np.int16),
            experts=np.concatenate(r_e) if r_e else np.empty((0, k), np.int16),
            weights=np.concatenate(r_w) if r_w else np.empty((0, k), np.float32),
            logits=np.concatenate(r_l) if r_l else None, confidence=np.concatenate(r_c) if r_c else None)


class StatsMode(_Mode):
    """Bounded aggregates: committed with the documents they cover, never with part of a document."""

    flush_documents = 256

    def __init__(self, plan: RunPlan, progress: Progress) -> None:
        super().__init__(plan, progress)
        self.done: list[dict[str, Any]] = []

    def after_batch(self, windows: Sequence[Window], collector: Any) -> list[WriteBatch]:
        for d in self._finish_windows(windows):
            doc = self.pending.pop(d)
            self.done.append(doc.row)
            self.progress(1, len(doc.ids))
        # the device aggregates may leave only when no document is half-way through its windows
        flush = bool(self.done) and not self.pending and len(self.done) >= self.flush_documents
        return self._flush(collector) if flush else []

    def close(self, collector: Any) -> list[WriteBatch]:
        return self._flush(collector) if self.done else []

    def _flush(self, collector: Any) -> list[WriteBatch]:
        aggregates = collector.finish_batch(flush=True)
        batch = WriteBatch(documents=self.done, stats=aggregates.tables)
        self.done = []
        return [batch]


def _pad_cols(a: np.ndarray, width: int, fill: float) -> np.ndarray:
    if a.shape[1] == width:
        return a
    out = np.full((a.shape[0], width), fill, dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out


def _cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)
