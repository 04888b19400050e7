"""The writer: batches of finished documents go to DuckDB through Arrow, off the forward path.

:class:`TraceWriter` owns a background thread with its own cursor. Each submitted
:class:`WriteBatch` holds complete documents only (their document rows, tokens and routes) and is
written in one transaction, so an interrupted run (Ctrl-C, ``kill -9``) keeps every committed
document and no partial one; a resumed run skips the committed documents, so no row is written
twice. Errors in the thread are re-raised in the caller at the next ``submit`` or at ``close``.
"""

from __future__ import annotations

import json
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from moelens.store import schema
from moelens.store.db import RunInfo, Store
from moelens.store.packing import pack_experts, pack_weights

__all__ = ["WriteBatch", "TraceWriter", "routes_arrow"]

_STOP = object()


@dataclass
class WriteBatch:
    """Rows for a set of complete documents. Arrays are aligned row by row within each group."""

    documents: list[dict[str, Any]]  # doc_id, domain, language, n_tokens, source, meta (dict)
    token_doc: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    token_pos: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    token_id: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))  # -1: unknown (stored NULL)
    token_text: list[str | None] | None = None
    route_doc: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    route_pos: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    route_site: np.ndarray = field(default_factory=lambda: np.empty(0, np.int16))
    experts: np.ndarray = field(default_factory=lambda: np.empty((0, 1), np.int16))  # [n, k], -1 dropped
    weights: np.ndarray = field(default_factory=lambda: np.empty((0, 1), np.float32))  # [n, k]
    logits: np.ndarray | None = None  # [n, E] float32, rows aligned with the routes
    confidence: np.ndarray | None = None  # [n, 3] float32 entropy, margin, lse; rows aligned with the routes
    stats: dict[str, pa.Table] | None = None  # stats mode: name in schema.STATS_TABLES -> partial rows

    @property
    def num_routes(self) -> int:
        return int(self.experts.shape[0] * self.experts.shape[1])


def _pad(array: np.ndarray, width: int, fill: float) -> np.ndarray:
    if array.shape[1] == width:
        return array
    out = np.full((array.shape[0], width), fill, dtype=array.dtype)
    out[:, : array.shape[1]] = array
    return out


def _route_keys(batch: WriteBatch) -> dict[str, pa.Array]:
    """The (doc_id, pos, site) columns that route-aligned tables (routes, logits, confidence) share."""
    return {"doc_id": pa.array(batch.route_doc.astype(np.int32, copy=False)),
            "pos": pa.array(batch.route_pos.astype(np.int32, copy=False)),
            "site": pa.array(batch.route_site.astype(np.int16, copy=False))}


def routes_arrow(batch: WriteBatch, table_k: int, weights: bool = True) -> pa.Table:
    """The physical route rows of ``batch`` for a run table sized for ``table_k`` choices
    (``weights=False``: a table without weight words; ``batch.weights`` is ignored)."""
    experts = pack_experts(_pad(batch.experts.astype(np.int16, copy=False), table_k, -1))
    columns = _route_keys(batch)
    for i, name in enumerate(schema.expert_columns(table_k)):
        columns[name] = pa.array(np.ascontiguousarray(experts[:, i]))
    if not weights:
        return pa.table(columns)
    weights = pack_weights(_pad(batch.weights.astype(np.float32, copy=False), table_k, 0.0))
    for i, name in enumerate(schema.weight_columns(table_k)):
        columns[name] = pa.array(np.ascontiguousarray(weights[:, i]))
    return pa.table(columns)


def _token_ids(ids: np.ndarray) -> pa.Array:
    """Token ids as int32, ``-1`` (a source that gives no id for the token) as NULL."""
    ids = ids.astype(np.int32, copy=False)
    missing = ids < 0
    return pa.array(ids, mask=missing) if missing.any() else pa.array(ids)


class TraceWriter:
    """Writes :class:`WriteBatch` objects for one run in a background thread."""

    def __init__(self, store: Store, run: RunInfo, *, table_k: int, max_pending: int = 4) -> None:
        self.store, self.run, self.table_k = store, run, table_k
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self.rows_written = 0
        self.routes_written = 0
        # Arrow encoding of the next batch overlaps the insert of the previous one
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moelens-encode")
        self._thread = threading.Thread(target=self._loop, name="moelens-writer", daemon=True)
        self._thread.start()

    def submit(self, batch: WriteBatch) -> None:
        self._raise_if_failed()
        self._queue.put((batch, self._encoder.submit(self._encode, batch)))

    def close(self) -> None:
        """Flush everything submitted, stop the threads, re-raise an error they had."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._encoder.shutdown(wait=True)
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _loop(self) -> None:
        cursor = self.store.con.cursor()
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                if self._error is None:
                    batch, encoded = item
                    try:
                        self._insert(cursor, batch, encoded.result())
                    except BaseException as error:  # noqa: BLE001 - handed to the caller
                        self._error = error
        finally:
            cursor.close()

    def _encode(self, batch: WriteBatch) -> dict[str, pa.Table]:
        """The batch's Arrow tables (runs in the encoder thread)."""
        run_id = self.run.run_id
        docs = pa.table({
            "run_id": pa.array([run_id] * len(batch.documents), pa.string()),
            "doc_id": pa.array([d["doc_id"] for d in batch.documents], pa.int64()),
            "domain": pa.array([d.get("domain") for d in batch.documents], pa.string()),
            "language": pa.array([d.get("language") for d in batch.documents], pa.string()),
            "n_tokens": pa.array([d["n_tokens"] for d in batch.documents], pa.int32()),
            "source": pa.array([d.get("source") for d in batch.documents], pa.string()),
            "meta": pa.array([json.dumps(d.get("meta") or {}, ensure_ascii=False, default=str)
                              for d in batch.documents], pa.string()),
        })
        tokens = pa.table({
            "run_id": pa.array([run_id] * len(batch.token_doc), pa.string()),
            "doc_id": pa.array(batch.token_doc.astype(np.int64, copy=False)),
            "pos": pa.array(batch.token_pos.astype(np.int32, copy=False)),
            "token_id": _token_ids(batch.token_id),
            "token": pa.array(batch.token_text if batch.token_text is not None else [None] * len(batch.token_doc),
                              pa.string()),
        })
        tables = {"documents": docs, "tokens": tokens,
                  "routes": routes_arrow(batch, self.table_k, getattr(self.run, "weights", True))}
        if batch.logits is not None and len(batch.logits):
            tables["logits"] = pa.table({
                **_route_keys(batch),
                "logits": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.ascontiguousarray(batch.logits, dtype=np.float32).reshape(-1)), batch.logits.shape[1]),
            })
        if batch.confidence is not None and len(batch.confidence):
            tables["confidence"] = pa.table({
                **_route_keys(batch),
                **{name: pa.array(np.ascontiguousarray(batch.confidence[:, i], dtype=np.float32))
                   for i, name in enumerate(("entropy", "margin", "lse"))},
            })
        return tables

    def _insert(self, cursor: Any, batch: WriteBatch, tables: dict[str, pa.Table]) -> None:
        """One transaction: every row of the batch, or none (runs in the writer thread)."""
        key = self.run.run_key
        targets = {"documents": "documents", "tokens": "tokens", "routes": schema.route_table(key),
                   "logits": schema.logits_table(key), "confidence": schema.confidence_table(key)}
        cursor.execute("BEGIN")
        try:
            for name, table in tables.items():
                cursor.register(f"_ml_{name}", table)
                cursor.execute(f"INSERT INTO {targets[name]} SELECT * FROM _ml_{name}")
            for name, table in (batch.stats or {}).items():
                cursor.register("_ml_stats", table)
                cursor.execute(f"INSERT INTO _stats_{name} SELECT * FROM _ml_stats")
                cursor.unregister("_ml_stats")
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        finally:
            for name in tables:
                try:
                    cursor.unregister(f"_ml_{name}")
                except Exception:  # noqa: BLE001
                    pass
        self.rows_written += len(batch.route_doc)
        self.routes_written += batch.num_routes
