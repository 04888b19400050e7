"""Read a stats-mode run back as dense numpy arrays: :class:`RunAggregates`.

A ``--mode stats`` run keeps no per-token rows, only the ``stats_*`` views (expert counts per
layer and per label value, co-activation of ordered expert pairs, router-entropy histograms, token
counts). :func:`load_aggregates` reads them into arrays aligned by layer, the counterpart of
:func:`moelens.store.arrays.load_routing` for per-token runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from moelens.store.db import Store, fetch_arrow

__all__ = ["RunAggregates", "LabelCounts", "load_aggregates", "is_aggregate_run"]


@dataclass(frozen=True)
class LabelCounts:
    """One label kind of a stats run: ``counts[V, L, E]`` routed choices and ``tokens[V, L]`` per value."""

    values: tuple[str, ...]  # most tokens first
    counts: np.ndarray
    tokens: np.ndarray


@dataclass
class RunAggregates:
    """A stats-mode run's aggregates. ``counts[l, e]``: tokens with expert ``e`` among their slots at
    ``layers[l]``; ``coactivation[l]``: ordered-pair counts with the expert's count on the diagonal."""

    run_id: str
    num_experts: int
    top_k: int
    layers: np.ndarray  # [L]
    counts: np.ndarray  # [L, E] int64
    tokens: np.ndarray  # [L] int64 recorded tokens
    coactivation: np.ndarray  # [L, E, E] int64
    entropy: dict[int, list[tuple[float, float, int]]]  # layer -> (lo, hi, count) histogram bins
    labels: dict[str, LabelCounts]
    documents: Any  # polars DataFrame: doc_id, domain, language, n_tokens, source, meta
    config: dict[str, Any] = field(default_factory=dict)
    status: str = "complete"
    has_coactivation: bool = True  # False when the source recorded no co-activation (counts-only imports)

    @property
    def num_tokens(self) -> int:
        return int(self.documents["n_tokens"].sum()) if self.documents.height else 0


def is_aggregate_run(config: dict[str, Any]) -> bool:
    """A run that stored aggregates only: ``--mode stats``, or an import whose source has no per-token rows."""
    if (config.get("identity") or {}).get("mode") == "stats":
        return True
    source = config.get("source") or {}
    return source.get("per_token") is False


def load_aggregates(db: str | os.PathLike | Store, run_id: str | None = None, *,
                    layers: Iterable[int] | None = None) -> RunAggregates:
    """Load a stats-mode run's aggregates (every layer it recorded, or ``layers``)."""
    store = db if isinstance(db, Store) else Store(db, read_only=True)
    try:
        return _load(store, run_id, layers)
    finally:
        if not isinstance(db, Store):
            store.close()


def _load(store: Store, run_id: str | None, layers: Iterable[int] | None) -> RunAggregates:
    import polars as pl

    info = store.require_run(run_id)
    con, rid, E = store.con, info.run_id, info.num_experts
    recorded = [r[0] for r in con.execute("SELECT DISTINCT layer FROM stats_tokens WHERE run_id = ? ORDER BY layer",
                                          [rid]).fetchall()]
    wanted = None if layers is None else {int(x) for x in layers}
    layer_list = np.array([x for x in recorded if wanted is None or x in wanted], dtype=np.int64)
    index = {int(layer): i for i, layer in enumerate(layer_list)}
    L = len(layer_list)
    counts = np.zeros((L, E), np.int64)
    tokens = np.zeros(L, np.int64)
    per_label: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}

    def cell(kind: str, value: str) -> tuple[np.ndarray, np.ndarray]:
        if value not in per_label.setdefault(kind, {}):
            per_label[kind][value] = (np.zeros((L, E), np.int64), np.zeros(L, np.int64))
        return per_label[kind][value]

    for layer, kind, value, expert, count in con.execute(
            "SELECT layer, label_kind, label, expert, count FROM stats_expert_counts WHERE run_id = ?", [rid]).fetchall():
        i = index.get(layer)
        if i is None or not 0 <= expert < E:
            continue
        if kind == "all":
            counts[i, expert] += count
        elif value is not None:
            cell(kind, value)[0][i, expert] += count
    for layer, kind, value, n in con.execute(
            "SELECT layer, label_kind, label, tokens FROM stats_tokens WHERE run_id = ?", [rid]).fetchall():
        i = index.get(layer)
        if i is None:
            continue
        if kind == "all":
            tokens[i] += n
        elif value is not None:
            cell(kind, value)[1][i] += n
    coact = np.zeros((L, E, E), np.int64)
    pairs = con.execute("SELECT layer, expert_a, expert_b, count FROM stats_coactivation WHERE run_id = ?",
                        [rid]).fetchall()
    for layer, a, b, count in pairs:
        i = index.get(layer)
        if i is not None and 0 <= a < E and 0 <= b < E:
            coact[i, a, b] += count
    entropy: dict[int, list[tuple[float, float, int]]] = {}
    for layer, lo, hi, count in con.execute(
            "SELECT layer, lo, hi, count FROM stats_entropy WHERE run_id = ? AND label_kind = 'all' ORDER BY layer, bin",
            [rid]).fetchall():
        if layer in index:
            entropy.setdefault(int(layer), []).append((float(lo), float(hi), int(count)))
    labels = {}
    for kind, by_value in per_label.items():
        values = sorted(by_value, key=lambda v: (-int(by_value[v][1].sum()), v))
        labels[kind] = LabelCounts(tuple(values), np.stack([by_value[v][0] for v in values]),
                                   np.stack([by_value[v][1] for v in values]))
    documents = pl.from_arrow(fetch_arrow(
        con, "SELECT doc_id, domain, language, n_tokens, source, meta FROM documents WHERE run_id = $run ORDER BY doc_id",
        {"run": rid}))
    return RunAggregates(rid, E, info.top_k, layer_list, counts, tokens, coact, entropy, labels, documents,
                         info.config, info.status, has_coactivation=bool(pairs))
