"""The one loader of run data, typed by kind, and what a run's source can give.

A run comes back as :class:`~moelens.store.arrays.RunRouting` (per-token routes: a traced run or
an engine import with per-token rows) or :class:`~moelens.store.aggregates.RunAggregates` (a
``--mode stats`` run or a counts-only import). The CLI, ``moelens.open``, the report and the
dashboard all load through :func:`load_any`; what they compute is then dispatched on the type.

:class:`Source` reads the provenance recorded in ``runs.config["source"]`` (a run without it is a
transformers trace with everything). Analyses that need what a source lacks raise
:class:`~moelens.errors.UnavailableError` (or report ``"unavailable: <reason>"``) instead of
computing on zeros (the reasons: :func:`moelens.analysis.sections.unavailable`): gate weights an
engine did not return, token ids or text, per-token rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Union

from moelens.analysis.labels import available_labels
from moelens.errors import ConfigError, UnavailableError, option
from moelens.store import schema
from moelens.store.aggregates import RunAggregates, is_aggregate_run, load_aggregates
from moelens.store.arrays import RunRouting, load_routing
from moelens.store.db import Store, fetch_arrow

__all__ = ["RunData", "Source", "load_any", "require_routing", "traced_layers", "run_table", "INCOMPLETE"]

RunData = Union[RunRouting, RunAggregates]

INCOMPLETE = ("the run is incomplete (status {status!r}): it was interrupted or is still being written; "
              "its figures cover the documents committed so far")


@dataclass(frozen=True)
class Source:
    """Where a run's routing came from and what it carries (``runs.config["source"]``)."""

    kind: str = "transformers"
    weights: bool = True
    token_text: bool = True
    token_ids: bool = True
    per_token: bool = True
    engine: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, config: dict[str, Any] | None) -> "Source":
        raw = (config or {}).get("source") or {}
        per_token = raw.get("per_token", True) is not False and not is_aggregate_run(config or {})
        return cls(kind=str(raw.get("kind", "transformers")), weights=raw.get("weights", True) is not False,
                   token_text=raw.get("token_text", True) is not False, token_ids=raw.get("token_ids", True) is not False,
                   per_token=per_token, engine=dict(raw.get("engine") or {}))


def traced_layers(store: Any, run_id: str, aggregates: bool) -> list[int]:
    if aggregates:
        sql = "SELECT DISTINCT layer FROM stats_tokens WHERE run_id = ? ORDER BY layer"
    else:
        sql = "SELECT DISTINCT layer FROM sites WHERE run_id = ? AND is_primary ORDER BY layer"
    return [r[0] for r in store.con.execute(sql, [run_id]).fetchall()]


def load_any(db: Any, run_id: str | None = None, *, layers: Iterable[int] | None = None, weights: bool = False,
             token_text: bool = False) -> RunData:
    """Load a run as :class:`RunRouting` or :class:`RunAggregates`, whichever it is.

    ``weights`` / ``token_text`` are loaded only when asked and only when the source recorded them
    (``routing.weights`` is ``None`` otherwise). Raises :class:`~moelens.errors.ConfigError` for a
    layer the run did not record (listing those it did).
    """
    store = db if isinstance(db, Store) else Store(db, read_only=True)
    try:
        info = store.require_run(run_id)
        aggregates = is_aggregate_run(info.config)
        if layers is not None:
            layers = sorted({int(x) for x in layers})
            traced = traced_layers(store, info.run_id, aggregates)
            missing = [x for x in layers if x not in traced]
            if missing:
                raise ConfigError(f"layer {missing[0]} is not a traced MoE layer; traced layers: "
                                  f"{', '.join(str(x) for x in traced) or 'none'}.")
        if aggregates:
            return load_aggregates(store, info.run_id, layers=layers)
        source = Source.of(info.config)
        return load_routing(store, info.run_id, layers=layers, weights=weights and source.weights,
                            token_text=token_text and source.token_text)
    finally:
        if not isinstance(db, Store):
            store.close()


def require_routing(run: RunData, what: str) -> RunRouting:
    """``run`` as per-token routing, or :class:`~moelens.errors.UnavailableError` naming ``what`` needs it."""
    if isinstance(run, RunRouting):
        return run
    raise UnavailableError(
        f"run {run.run_id!r} is a stats-mode run: it keeps aggregates (expert counts, co-activation, entropy"
        f" histograms), not per-token routes, and {what} needs per-token routes; trace it with"
        f" {option('mode', 'routes')} for that.")


def _table_bytes(store: Any, table: str, tables: set[str]) -> int:
    if table not in tables:
        return 0
    blocks = store.con.execute(f"SELECT count(DISTINCT block_id) FROM pragma_storage_info('{table}') "
                               "WHERE block_id >= 0").fetchall()[0][0]
    size = store.con.execute("SELECT block_size FROM pragma_database_size()").fetchall()[0][0]
    return int(blocks or 0) * int(size or 0)


def run_table(store: Any):
    """One row per run of the database: status, kind, source, size and labels (``moelens runs``).

    ``disk_bytes`` counts the blocks of the run's own tables (routes, logits, confidence) plus its
    share of the ``tokens`` table; ``labels`` are the labels an analysis can split it by
    (identifier-like columns left out).
    """
    import polars as pl

    tables = store._tables()  # noqa: SLF001 - the store's own listing
    token_bytes = _table_bytes(store, "tokens", tables)
    total_tokens = store.con.execute("SELECT count(*) FROM tokens").fetchall()[0][0] or 0
    rows = []
    for run_id in store.run_ids():
        info = store.get_run(run_id)
        model, created = store.con.execute("SELECT model, created_at FROM runs WHERE run_id = ?", [run_id]).fetchall()[0]
        docs = pl.from_arrow(fetch_arrow(store.con, "SELECT doc_id, domain, language, n_tokens, source, meta "
                                                    "FROM documents WHERE run_id = $run", {"run": run_id}))
        aggregates = is_aggregate_run(info.config)
        if aggregates:
            labels = [r[0] for r in store.con.execute(
                "SELECT DISTINCT label_kind FROM stats_tokens WHERE run_id = ? AND label_kind <> 'all' ORDER BY 1",
                [run_id]).fetchall()]
        else:
            labels = [name for name, kind in available_labels(_Documents(run_id, docs)).items() if kind == "document"]
        n_tokens = int(docs["n_tokens"].sum()) if docs.height else 0
        run_tokens = store.con.execute("SELECT count(*) FROM tokens WHERE run_id = ?", [run_id]).fetchall()[0][0]
        own = sum(_table_bytes(store, table(info.run_key), tables)
                  for table in (schema.route_table, schema.logits_table, schema.confidence_table))
        share = token_bytes * run_tokens / total_tokens if total_tokens else 0
        rows.append({"run_id": run_id, "status": info.status, "mode": "stats" if aggregates else "routes",
                     "source": Source.of(info.config).kind, "model": model, "num_experts": info.num_experts,
                     "top_k": info.top_k, "layers": len(traced_layers(store, run_id, aggregates)),
                     "documents": int(docs.height), "tokens": n_tokens, "disk_bytes": int(own + share),
                     "labels": labels, "created_at": created})
    schema_ = {"run_id": pl.String, "status": pl.String, "mode": pl.String, "source": pl.String, "model": pl.String,
               "num_experts": pl.Int64, "top_k": pl.Int64, "layers": pl.Int64, "documents": pl.Int64,
               "tokens": pl.Int64, "disk_bytes": pl.Int64, "labels": pl.List(pl.String), "created_at": pl.Datetime}
    return pl.DataFrame(rows, schema=schema_)


@dataclass
class _Documents:
    """The two attributes :func:`~moelens.analysis.labels.available_labels` reads."""

    run_id: str
    documents: Any
