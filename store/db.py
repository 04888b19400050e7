"""Open a trace database safely: lock, corruption and schema-version checks; run bookkeeping.

:class:`Store` wraps one DuckDB connection (injectable for tests). Opening checks everything a
user can get wrong before anything is written: another process holding the file, a file that is
not a DuckDB database (or is damaged), a DuckDB database that moelens did not write, and a
moelens database of another schema version. Each raises a typed one-line error.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import duckdb

from moelens._version import __version__
from moelens.errors import (CorruptDatabaseError, DatabaseLockedError, RunNotFoundError, SchemaVersionError,
                            StoreError)
from moelens.store import schema

__all__ = ["Store", "RunInfo", "translate_duckdb_error", "fetch_arrow"]


def fetch_arrow(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | list[Any] | None = None):
    """Run ``sql`` and return a pyarrow Table without an extra copy (DuckDB 1.x and 2.x)."""
    rel = con.sql(sql, params=params) if params else con.sql(sql)
    for name in ("to_arrow_table", "fetch_arrow_table", "arrow"):
        method = getattr(rel, name, None)
        if method is not None:
            return method()
    raise RuntimeError("this DuckDB version cannot return Arrow tables")  # pragma: no cover


def translate_duckdb_error(error: BaseException, path: str | os.PathLike) -> StoreError | None:
    """Map DuckDB's errors about the file itself to typed moelens errors (None for others)."""
    text = str(error)
    if "Could not set lock" in text or "Conflicting lock" in text:
        pid = text.split("(PID ", 1)[1].split(")", 1)[0] if "(PID " in text else "?"
        return DatabaseLockedError(
            f"{path} is open for writing by another process (PID {pid});"
            " wait for it to finish or write to another --out file.")
    if ("not a valid DuckDB database" in text or "Corrupt database" in text or "checksum" in text
            or "Could not read enough bytes" in text or "Serialization" in type(error).__name__):
        return CorruptDatabaseError(
            f"{path} is not a readable DuckDB database (damaged or another format);"
            " move it aside and trace into a new file.")
    if "newer version of DuckDB" in text or "older version of DuckDB" in text or "storage version" in text:
        return CorruptDatabaseError(
            f"{path} was written by an incompatible DuckDB version; export it with that version or trace anew.")
    return None


@contextlib.contextmanager
def _translated(path: str | os.PathLike) -> Iterator[None]:
    try:
        yield
    except duckdb.Error as error:
        typed = translate_duckdb_error(error, path)
        if typed is None:
            raise
        raise typed from error


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    run_key: int
    status: str
    top_k: int
    num_experts: int
    config: dict[str, Any]
    weights: bool = True  # the run's route table holds gate weights (False: engine imports without them)


class Store:
    """A moelens trace database.

    Args:
        path: database file; created (with the schema) unless ``read_only``.
        read_only: open without write access (several readers may share the file).
        connection: use this DuckDB connection instead of opening ``path`` (tests, notebooks).
        upgrade: bring a database of an older schema version to the current one (in place, one
            transaction; see :data:`moelens.store.schema.MIGRATIONS`). Without it an older
            database raises :class:`SchemaVersionError` naming the command that upgrades it.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, read_only: bool = False,
                 connection: duckdb.DuckDBPyConnection | None = None, upgrade: bool = False) -> None:
        self.path = str(path) if path is not None else ":memory:"
        self.read_only = read_only
        self.upgrade = upgrade and not read_only
        self.upgraded_from: int | None = None
        self.dataset: dict[str, Any] | None = None  # the manifest, when ``path`` is a Parquet dataset folder
        if connection is None and path is not None and Path(path).is_dir():
            self._open_dataset(path)
            return
        if connection is None:
            if read_only and path is not None and not Path(path).exists():
                raise StoreError(f"no database at {path}; trace into it first (`moelens trace ... --out {path}`).")
            with _translated(self.path):
                connection = duckdb.connect(self.path, read_only=read_only)
        self.con = connection
        try:
            with _translated(self.path):
                self._check_or_create()
        except BaseException:
            self.close()
            raise

    def _open_dataset(self, path: str | os.PathLike) -> None:
        """Views over a Parquet dataset folder (:mod:`moelens.store.dataset`) on an in-memory connection."""
        from moelens.store.dataset import open_dataset

        if not self.read_only:
            raise StoreError(f"{path} is a Parquet dataset, which moelens reads but does not write; trace or import "
                             "into a .duckdb file and export it again.")
        self.con = duckdb.connect(":memory:")
        try:
            self.dataset = open_dataset(self.con, path)
        except BaseException:
            self.close()
            raise

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _tables(self) -> set[str]:
        return {r[0] for r in self.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}

    def _check_or_create(self) -> None:
        tables = self._tables()
        if "moelens_meta" in tables:
            row = self.con.execute("SELECT value FROM moelens_meta WHERE key = 'schema_version'").fetchone()
            found = int(row[0]) if row else -1
            if found == schema.SCHEMA_VERSION:
                return
            if found in schema.MIGRATIONS and self.upgrade:
                self._upgrade(found)
                return
            if found in schema.MIGRATIONS:
                raise SchemaVersionError(
                    f"{self.path} has moelens schema version {found}; this moelens ({__version__}) reads version"
                    f" {schema.SCHEMA_VERSION}. Upgrade it in place with `moelens upgrade {self.path}`"
                    " (keeps every run; older moelens versions cannot read it afterwards).")
            raise SchemaVersionError(
                f"{self.path} has moelens schema version {found} but this moelens ({__version__}) reads version"
                f" {schema.SCHEMA_VERSION}; trace into a new file or open it with the moelens that wrote it.")
        if tables:
            raise StoreError(f"{self.path} is a DuckDB database but not a moelens trace database"
                             f" (it has tables {sorted(tables)[:3]}...); choose another --out file.")
        if self.read_only:
            raise StoreError(f"{self.path} is empty; trace into it first.")
        self.con.execute("BEGIN")
        for ddl in schema.BASE_DDL:
            self.con.execute(ddl)
        self.con.execute("INSERT INTO moelens_meta VALUES ('schema_version', ?), ('created_by', ?)",
                         [str(schema.SCHEMA_VERSION), f"moelens {__version__}"])
        self._refresh_views()
        self.con.execute("COMMIT")

    def _upgrade(self, found: int) -> None:
        """Apply every migration from ``found`` to the current version in one transaction."""
        self.con.execute("BEGIN")
        try:
            for version in range(found, schema.SCHEMA_VERSION):
                for statement in schema.MIGRATIONS[version]:
                    self.con.execute(statement)
            for ddl in schema.BASE_DDL:  # views and macros of the current version
                self.con.execute(ddl)
            self.con.execute("UPDATE moelens_meta SET value = ? WHERE key = 'schema_version'",
                             [str(schema.SCHEMA_VERSION)])
            self._refresh_views()
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.upgraded_from = found

    # -- runs -------------------------------------------------------------------------------
    def run_ids(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT run_id FROM runs ORDER BY created_at, run_id").fetchall()]

    def get_run(self, run_id: str) -> RunInfo | None:
        row = self.con.execute(
            "SELECT run_id, run_key, status, top_k, num_experts, config FROM runs WHERE run_id = ?", [run_id]
        ).fetchone()
        if row is None:
            return None
        return RunInfo(row[0], int(row[1]), row[2], int(row[3]), int(row[4]), json.loads(row[5] or "{}"),
                       self._has_weight_words(int(row[1]), row[0]))

    def _has_weight_words(self, run_key: int, run_id: str | None = None) -> bool:
        """Whether the run's route table stores gate weights (schema version 3 allows tables without)."""
        if self.dataset is not None:
            return bool(self.dataset["runs"].get(run_id, {}).get("weights", True))
        return bool(self.con.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ?"
            " AND column_name = 'w0'", [schema.route_table(run_key)]).fetchone()[0])

    def require_run(self, run_id: str | None) -> RunInfo:
        """The run ``run_id``, or the only run when ``None``; typed errors otherwise."""
        ids = self.run_ids()
        if run_id is None:
            if len(ids) == 1:
                run_id = ids[0]
            elif not ids:
                raise RunNotFoundError(f"{self.path} holds no runs yet; trace into it first.")
            else:
                raise RunNotFoundError(f"{self.path} holds {len(ids)} runs; choose one with --run"
                                       f" (e.g. --run {ids[-1]}).")
        info = self.get_run(run_id)
        if info is None:
            raise RunNotFoundError(f"no run {run_id!r} in {self.path}; runs: {', '.join(ids) or 'none'}.")
        return info

    def create_run(self, *, run_id: str, model: str, dataset: str, dtype: str, revision: str | None,
                   plan_meta: dict[str, Any], config: dict[str, Any], logits_width: int | None,
                   confidence: bool = False, weights: bool = True) -> RunInfo:
        """Create the run's rows, its physical tables and refresh the views (one transaction).

        ``weights=False`` creates a route table without weight words: the source records no gate
        weights and the views show ``weight`` NULL (schema version 3).
        """
        key_row = self.con.execute("SELECT coalesce(max(run_key), 0) + 1 FROM runs").fetchone()
        run_key = int(key_row[0])
        k = int(plan_meta["top_k"])
        full_config = {**config, "routing": plan_meta}
        self.con.execute("BEGIN")
        try:
            self.con.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id, run_key, model, plan_meta["family"], revision, dtype, plan_meta["num_layers"],
                 plan_meta["moe_layers"], plan_meta["num_experts"], k, plan_meta["num_shared_experts"],
                 plan_meta["scoring"], dataset, "running", datetime.now(timezone.utc).replace(tzinfo=None),
                 __version__, schema.SCHEMA_VERSION, json.dumps(full_config)])
            for site in plan_meta["sites"]:
                self.con.execute("INSERT INTO sites VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 [run_id, site["site"], site["layer"], site["tag"], site["path"],
                                  site["primary"], site["num_experts"], site["top_k"], site.get("pass", 0)])
            max_k = max(s["top_k"] for s in plan_meta["sites"])
            self.con.execute(schema.route_table_ddl(run_key, max_k, weights))
            if logits_width:
                self.con.execute(schema.logits_table_ddl(run_key, logits_width))
            if confidence:
                self.con.execute(schema.confidence_table_ddl(run_key))
            self._refresh_views()
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        return RunInfo(run_id, run_key, "running", k, int(plan_meta["num_experts"]), full_config, weights)

    def delete_run(self, run_id: str) -> None:
        info = self.get_run(run_id)
        if info is None:
            return
        self.con.execute("BEGIN")
        for table in ("tokens", "documents", "sites", "runs"):
            self.con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        self.con.execute(f"DROP TABLE IF EXISTS {schema.route_table(info.run_key)}")
        self.con.execute(f"DROP TABLE IF EXISTS {schema.logits_table(info.run_key)}")
        self.con.execute(f"DROP TABLE IF EXISTS {schema.confidence_table(info.run_key)}")
        for name in schema.STATS_TABLES:
            self.con.execute(f"DELETE FROM _stats_{name} WHERE run_id = ?", [run_id])
        self._refresh_views()
        self.con.execute("COMMIT")

    def set_status(self, run_id: str, status: str, **config_updates: Any) -> None:
        if config_updates:
            info = self.get_run(run_id)
            config = {**(info.config if info else {}), **config_updates}
            self.con.execute("UPDATE runs SET status = ?, config = ? WHERE run_id = ?",
                             [status, json.dumps(config), run_id])
        else:
            self.con.execute("UPDATE runs SET status = ? WHERE run_id = ?", [status, run_id])

    def done_documents(self, run_id: str) -> set[int]:
        rows = self.con.execute("SELECT doc_id FROM documents WHERE run_id = ?", [run_id]).fetchnumpy()
        return set(rows["doc_id"].tolist())

    def _refresh_views(self) -> None:
        runs = self.con.execute("SELECT run_id, run_key, top_k FROM runs ORDER BY run_key").fetchall()
        # a run's table is sized for its largest k (sites can differ, e.g. per-layer k lists)
        sized = []
        for run_id, run_key, top_k in runs:
            max_k = self.con.execute("SELECT max(top_k) FROM sites WHERE run_id = ?", [run_id]).fetchone()[0]
            sized.append((run_id, int(run_key), int(max_k or top_k), self._has_weight_words(int(run_key))))
        for sql in schema.routes_view_sql(sized):
            self.con.execute(sql)
        tables = self._tables()
        with_logits = [(r, k) for r, k, *_ in sized if schema.logits_table(k) in tables]
        self.con.execute(schema.logits_view_sql(with_logits))
        with_confidence = [(r, k) for r, k, *_ in sized if schema.confidence_table(k) in tables]
        self.con.execute(schema.confidence_view_sql(with_confidence))
