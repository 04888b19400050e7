"""Store an :class:`~moelens.sources.base.ImportedRun`: the run, its documents, labels and routing.

:class:`ImportSource` hands an import to the same run loop as a trace
(:func:`moelens.pipeline.run.run_source`): the run was validated when it was read, the documents
file is read and matched in ``prepare`` before the database is opened, and the run's identity (the
engine, the input, E, k and layers) is checked against an existing run of the same id. Only then is
the run created (gate-weight columns only if the source has weights) and written through the trace
writer; counts-only runs go to the ``_stats_*`` tables as a stats-mode run. An interrupted import
keeps what it committed and resumes like a trace.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from moelens.errors import ConfigError, DataError, DataNotFoundError
from moelens.pipeline.types import RunSpec
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


class ImportSource:
    """An :class:`ImportedRun` as a source of :func:`moelens.pipeline.run.run_source`.

    Its batches are deterministic (documents in order, grouped the same way each time), so a resumed
    import skips the batches already committed and never writes a row twice.
    """

    def __init__(self, run: ImportedRun, labels: list[dict[str, Any]] | None = None) -> None:
        self.run, self.labels = run, labels
        self.kind = run.spec.kind

    @property
    def identity(self) -> dict[str, Any]:
        spec = self.run.spec
        return {"mode": "routes" if spec.per_token else "stats", "source": spec.kind, "dataset": spec.dataset,
                "num_experts": spec.num_experts, "top_k": spec.top_k, "layers": list(spec.layers)}

    def prepare(self) -> RunSpec:
        if self.labels is not None:
            apply_documents(self.run, self.labels)
        spec = self.run.spec
        return RunSpec(model=spec.model or spec.kind, dataset=spec.dataset, dtype=None, revision=None,
                       plan_meta=spec.plan_meta(), table_k=spec.top_k, weights=spec.weights,
                       config={"source": spec.source(),
                               "import": {"dataset": spec.dataset, "moelens": "moelens.sources"}})

    @property
    def total(self) -> int:
        return len(self.run.docs) if self.run.spec.per_token else len(self.run.count_documents)

    @property
    def notes(self) -> list[str]:
        n = self.run.unrecorded_rows
        return [f"{n:,} token rows of an MoE layer held only zeros (the engine's fill): stored as not recorded"] if n \
            else []

    def final_config(self) -> dict[str, Any]:
        if not self.run.zero_rows_unrecorded:
            return {}
        source = self.run.spec.source()
        return {"source": {**source, "engine": {**source["engine"], "unrecorded_rows": self.run.unrecorded_rows}}}

    def stream(self, done: set[int], done_tokens: int, progress: Any, run_id: str) -> Iterator[Any]:
        from moelens.store import WriteBatch

        if not self.run.spec.per_token:
            if not done:
                yield WriteBatch(documents=self.run.count_documents, stats=_stats_tables(run_id, self.run))
                progress(len(self.run.count_documents), self.run.num_tokens)
            return
        for batch in self.run.batches():
            ids = [int(d["doc_id"]) for d in batch.documents]
            if all(i in done for i in ids):
                continue
            yield batch
            progress(len(ids), len(batch.token_doc))


def write(run: ImportedRun, out: str | os.PathLike, *, run_id: str | None = None,
          documents: str | os.PathLike | list[dict[str, Any]] | None = None, overwrite: bool = False,
          progress: bool = False) -> ImportSummary:
    """Write ``run`` into the DuckDB file ``out`` (resumable, like a trace); returns an :class:`ImportSummary`.

    ``documents``: a JSONL file (or rows) of labels, see :func:`read_documents`. A run of the same id
    made from other input raises :class:`~moelens.errors.RunMismatchError` unless ``overwrite``.
    """
    from moelens.pipeline.run import run_source

    labels = None
    if documents is not None:
        labels = read_documents(documents) if isinstance(documents, (str, os.PathLike)) else [dict(r) for r in documents]
    source = ImportSource(run, labels)
    summary = run_source(source, str(out), run_id=run_id or _default_run_id(run), identity=source.identity,
                         overwrite=overwrite, progress=progress)
    routes = summary.routes if run.spec.per_token else int(run.counts.sum())
    return ImportSummary(summary.run_id, str(out), run.spec.kind, summary.documents or summary.resumed,
                         summary.tokens, routes, summary.seconds, run.spec.per_token)


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
