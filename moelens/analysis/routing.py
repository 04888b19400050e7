"""The analysis input: a :class:`~moelens.store.arrays.RunRouting`, loaded from a database or built from arrays.

:func:`load_run` reads a per-token run through the one loader, :func:`moelens.analysis.runs.load_any`
(which pushes run / layer / document selection down to DuckDB and types stats-mode runs as
:class:`~moelens.store.aggregates.RunAggregates`). :func:`from_arrays` builds the same object from
numpy arrays, for tests, notebooks and routing that comes from elsewhere (serving engines'
routed-experts arrays).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import numpy as np

from moelens.analysis.runs import load_any, require_routing
from moelens.errors import ConfigError
from moelens.store.arrays import RunRouting

__all__ = ["RunRouting", "load_run", "from_arrays", "doc_index"]


def load_run(db: Any, run_id: str | None = None, *, layers: Iterable[int] | None = None, weights: bool = False) -> RunRouting:
    """Load a run's per-token routing (expert ids; gate weights only when asked) from a trace database.

    Loads through :func:`moelens.analysis.runs.load_any`; raises
    :class:`~moelens.errors.ConfigError` for a layer the run did not trace (listing those it did) and
    :class:`~moelens.errors.UnavailableError` for a stats-mode run (it has no per-token routes).
    """
    return require_routing(load_any(db, run_id, layers=layers, weights=weights), "this analysis")


def from_arrays(experts: np.ndarray, *, num_experts: int | None = None, doc_id: Sequence[int] | None = None,
                pos: Sequence[int] | None = None, token_id: Sequence[int] | None = None,
                documents: Any = None, layers: Sequence[int] | None = None, weights: np.ndarray | None = None,
                run_id: str = "arrays", config: dict[str, Any] | None = None) -> RunRouting:
    """A :class:`RunRouting` from ``experts[L, T, k]`` (or ``[T, k]`` for one layer).

    ``doc_id`` defaults to one document; ``pos`` to the position within each document;
    ``documents`` may be a polars frame or a list of dicts with ``doc_id`` and any of
    ``domain``, ``language``, ``source``, ``meta`` (dict or JSON string).
    """
    import polars as pl

    e = np.asarray(experts)
    if e.ndim == 2:
        e = e[None]
    if e.ndim != 3:
        raise ConfigError(f"experts must have shape [layers, tokens, k] or [tokens, k], got {e.shape}.")
    L, T, k = e.shape
    E = int(num_experts if num_experts is not None else (int(e.max()) + 1 if e.size else 1))
    if e.size and (e.max() >= E or e.min() < -1):
        raise ConfigError(f"expert ids must lie in [-1, {E}); found [{int(e.min())}, {int(e.max())}].")
    doc = np.zeros(T, np.int64) if doc_id is None else np.asarray(doc_id, dtype=np.int64)
    if len(doc) != T:
        raise ConfigError(f"doc_id has {len(doc)} entries for {T} tokens.")
    order = np.lexsort((np.arange(T), doc))
    if pos is None:
        sorted_doc = doc[order]
        starts = np.r_[0, np.flatnonzero(sorted_doc[1:] != sorted_doc[:-1]) + 1]
        run_start = np.repeat(starts, np.diff(np.r_[starts, T]))
        p = np.empty(T, np.int32)
        p[order] = np.arange(T) - run_start
    else:
        p = np.asarray(pos, dtype=np.int32)
    order = np.lexsort((p, doc))
    tok = np.zeros(T, np.int32) if token_id is None else np.asarray(token_id, dtype=np.int32)
    ids = np.unique(doc)
    if documents is None:
        documents = [{"doc_id": int(d)} for d in ids]
    if not isinstance(documents, pl.DataFrame):
        rows = []
        for d in documents:
            meta = d.get("meta") or {}
            rows.append({"doc_id": int(d["doc_id"]), "domain": d.get("domain"), "language": d.get("language"),
                         "n_tokens": 0, "source": d.get("source"),
                         "meta": meta if isinstance(meta, str) else json.dumps(meta)})
        documents = pl.DataFrame(rows, schema={"doc_id": pl.Int64, "domain": pl.String, "language": pl.String,
                                               "n_tokens": pl.Int32, "source": pl.String, "meta": pl.String})
    documents = documents.sort("doc_id")
    counts = np.bincount(np.searchsorted(documents["doc_id"].to_numpy(), doc), minlength=documents.height)
    documents = documents.with_columns(pl.Series("n_tokens", counts.astype(np.int32)))
    missing = np.setdiff1d(ids, documents["doc_id"].to_numpy())
    if len(missing):
        raise ConfigError(f"documents has no row for doc_id {int(missing[0])}.")
    lay = np.arange(L, dtype=np.int64) if layers is None else np.asarray(layers, dtype=np.int64)
    w = None if weights is None else np.asarray(weights, dtype=np.float32).reshape(L, T, k)[:, order]
    cfg = {"routing": {"scoring": "softmax", "logits_kind": "logits"}, **(config or {})}
    return RunRouting(run_id, E, k, lay, doc[order], p[order], tok[order], e[:, order].astype(np.int16), w,
                      documents, cfg, None)


def doc_index(routing: RunRouting) -> np.ndarray:
    """``[T]`` index of each token's document in ``routing.documents`` (cached on the object)."""
    cached = getattr(routing, "_doc_index", None)
    if cached is None or len(cached) != routing.num_tokens:
        cached = routing.doc_index()
        try:
            object.__setattr__(routing, "_doc_index", cached)
        except AttributeError:  # pragma: no cover - slots
            pass
    return cached
