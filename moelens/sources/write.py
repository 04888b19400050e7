"""Store an :class:`~moelens.sources.base.ImportedRun`: the run, its documents, labels and routing.

The order of work keeps a bad input from touching the database: the run was validated when it
was read, the documents file is read and matched here before the database is opened, an
existing database is first opened read-only to check the run id. Only then is the run created
(``Store.create_run``, gate-weight columns only if the source has weights) and written through
the trace writer (:class:`moelens.store.TraceWriter`); counts-only runs go to the ``_stats_*``
tables as a stats-mode run. A failure while writing removes the partial run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moelens.errors import ConfigError, DataError, DataNotFoundError, RunMismatchError
from moelens.sources.base import ImportedRun

__all__ = ["write", "ImportSummary", "read_documents", "apply_documents"]

_COLUMNS = ("domain", "language", "source")


@dataclass
class ImportSummary:
    run_id: str
    out: str
    kind: str
    documents: int
    tokens: int
    routes: int
    seconds: float
    per_token: bool


def read_documents(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Label rows from a JSONL file: each line ``{"doc_id" | "request_id" | "rid": ..., "domain"?,
    "language"?, "source"?, <any other key>: ...}`` (other keys go to the document's ``meta``)."""
    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(f"no documents file at {p}.")
    rows = []
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{p}:{n}: not JSON ({error.msg}).") from None
            if not isinstance(row, dict) or not ({"doc_id", "request_id", "rid"} & row.keys()):
                raise DataError(f"{p}:{n}: each line needs a doc_id (or the request_id / rid of an engine request).")
            row["_line"] = f"{p.name}:{n}"
            rows.append(row)
    return rows


def apply_documents(run: ImportedRun, rows: list[dict[str, Any]]) -> int:
    """Attach label rows to ``run``'s documents (by ``doc_id``, else the request id in their meta);
    returns the documents labelled. Unknown ids raise :class:`~moelens.errors.DataError`."""
    if not run.spec.per_token:
        raise ConfigError("a counts-only dump keeps no per-request documents to label; label per-token imports only.")
    by_id = {d.doc_id: d for d in run.docs}
    by_request: dict[str, Any] = {}
    for d in run.docs:
        engine = d.meta.get("engine") or {}
        for key in ("request_id", "rid"):
            if key in engine:
                by_request.setdefault(str(engine[key]), []).append(d)
    done = 0
    for row in rows:
        where = row.pop("_line", "documents file")
        if "doc_id" in row:
            doc = by_id.get(int(row["doc_id"]))
            targets = [doc] if doc is not None else []
            name = f"doc_id {row['doc_id']}"
        else:
            rid = str(row.get("request_id", row.get("rid")))
            targets = by_request.get(rid, [])
            name = f"request {rid!r}"
        if not targets:
            raise DataError(f"{where}: {name} is not among the {len(run.docs)} imported documents.")
        for doc in targets:
            for key, value in row.items():
                if key in ("doc_id", "request_id", "rid"):
                    continue
                if key in _COLUMNS:
                    setattr(doc, key, None if value is None else str(value))
                else:
                    doc.meta[key] = value
            done += 1
    return done


def _default_run_id(run: ImportedRun) -> str:
    stem = run.spec.dataset.split(",")[0] or run.spec.kind
    for suffix in (".jsonl", ".json", ".pt", ".safetensors"):
        stem = stem[: -len(suffix)] if stem.endswith(suffix) else stem
    return f"{run.spec.kind}:{stem}"


def _check_target(out: str, run_id: str, overwrite: bool) -> bool:
    """Whether ``run_id`` must be replaced; raises if it exists and ``overwrite`` is off (read-only look)."""
    if not Path(out).exists():
        return False
    from moelens.store import Store

    with Store(out, read_only=True) as store:
        if store.get_run(run_id) is None:
            return False
    if not overwrite:
        raise RunMismatchError(f"run {run_id!r} is already in {out}; choose another --run-id or pass --overwrite.")
    return True


def write(run: ImportedRun, out: str | os.PathLike, *, run_id: str | None = None,
          documents: str | os.PathLike | list[dict[str, Any]] | None = None, overwrite: bool = False,
          progress: bool = False) -> ImportSummary:
    """Write ``run`` into the DuckDB file ``out`` as a new run; returns an :class:`ImportSummary`.

    ``documents``: a JSONL file (or rows) of labels, see :func:`read_documents`.
    """
    out = str(out)
    run_id = run_id or _default_run_id(run)
    if documents is not None:
        rows = read_documents(documents) if isinstance(documents, (str, os.PathLike)) else [dict(r) for r in documents]
        apply_documents(run, rows)
    replace = _check_target(out, run_id, overwrite)
    from moelens.store import Store, TraceWriter

    spec = run.spec
    started = time.perf_counter()
    store = Store(out)
    try:
        if replace:
            store.delete_run(run_id)
        config = {"source": spec.source(),
                  "identity": {"mode": "routes" if spec.per_token else "stats", "source": spec.kind},
                  "import": {"dataset": spec.dataset, "moelens": "moelens.sources"}}
        info = store.create_run(run_id=run_id, model=spec.model or spec.kind, dataset=spec.dataset, dtype=None,
                                revision=None, plan_meta=spec.plan_meta(), config=config, logits_width=None,
                                weights=spec.weights)
        try:
            routes = _write_rows(store, info, run, progress, TraceWriter)
            if run.zero_rows_unrecorded:  # counted while the batches were built
                source = {**config["source"], "engine": {**spec.engine, "unrecorded_rows": run.unrecorded_rows}}
                store.set_status(run_id, "complete", source=source)
            else:
                store.set_status(run_id, "complete")
        except BaseException:
            store.delete_run(run_id)
            raise
    finally:
        store.close()
    docs = len(run.docs) if spec.per_token else len(run.count_documents)
    return ImportSummary(run_id, out, spec.kind, docs, run.num_tokens, routes, time.perf_counter() - started,
                         spec.per_token)


def _write_rows(store: Any, info: Any, run: ImportedRun, progress: bool, TraceWriter: Any) -> int:
    from moelens.progress import TraceProgress
    from moelens.store import WriteBatch

    writer = TraceWriter(store, info, table_k=run.spec.top_k)
    try:
        if run.spec.per_token:
            with TraceProgress(total=len(run.docs), enabled=progress, label=f"import {run.spec.kind}") as bar:
                for batch in run.batches():
                    writer.submit(batch)
                    bar.advance(len(batch.documents), len(batch.token_doc))
        else:
            writer.submit(WriteBatch(documents=run.count_documents, stats=_stats_tables(info.run_id, run)))
    finally:
        writer.close()
    return writer.routes_written if run.spec.per_token else int(run.counts.sum())


def _stats_tables(run_id: str, run: ImportedRun) -> dict[str, Any]:
    """The ``_stats_*`` rows of a counts-only run: expert counts and tokens per layer (label ``all``)."""
    import pyarrow as pa

    layers = np.array(run.spec.layers, dtype=np.int32)
    L, E = run.counts.shape
    ll, ee = np.meshgrid(layers, np.arange(E, dtype=np.int32), indexing="ij")
    nz = run.counts.reshape(-1) != 0
    n = int(nz.sum())
    counts = pa.table({"run_id": pa.array([run_id] * n, pa.string()), "layer": pa.array(ll.reshape(-1)[nz]),
                       "label_kind": pa.array(["all"] * n, pa.string()), "label": pa.nulls(n, pa.string()),
                       "expert": pa.array(ee.reshape(-1)[nz]), "count": pa.array(run.counts.reshape(-1)[nz])})
    tokens = pa.table({"run_id": pa.array([run_id] * L, pa.string()), "layer": pa.array(layers),
                       "label_kind": pa.array(["all"] * L, pa.string()), "label": pa.nulls(L, pa.string()),
                       "tokens": pa.array(run.layer_tokens.astype(np.int64))})
    return {"expert_counts": counts, "tokens": tokens}
