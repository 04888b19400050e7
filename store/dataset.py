"""Parquet datasets: the public views written hive-partitioned, and opened again as a read-only store.

Layout (``docs/engines.md``, "Parquet datasets")::

    DIR/_moelens.json                                   manifest: format, schema version, views, runs
    DIR/<view>/run_id=<id>/[layer=<n>/]<file>.parquet   one folder per view

``runs``, ``sites``, ``documents`` and ``tokens`` are partitioned by ``run_id``; ``routes`` (the
public view plus ``pass``, the loop pass of looped layers, 0 otherwise),
``router_logits``, ``router_confidence`` and the ``stats_*`` views by ``run_id`` and ``layer``.
Partition values are URL-encoded in folder names (``run_id=moelens-mini%3Aeval``) and are not
repeated inside the files; read them with hive partitioning, ``run_id`` as a string and ``layer``
as an integer (DuckDB ``hive_types``, Spark/Trino a declared schema). ``routes`` holds one row per
routed choice, unpacked (``weight`` NULL for runs without gate weights). New runs can be added to
an existing dataset; a run is never written twice.

:func:`open_dataset` gives an in-memory DuckDB connection views with the public names over the
files (typed empty views for folders that are absent), so ``Store(DIR)`` - and everything built
on it: ``moelens.open``, ``moelens report``, the dashboard - reads a dataset like a database.
:mod:`moelens.store.parquet` writes datasets.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from moelens.errors import SchemaVersionError, StoreError
from moelens.store import schema

__all__ = ["open_dataset", "read_manifest", "sql_quote", "MANIFEST", "FORMAT", "VIEWS", "VIEW_SOURCE", "ROW_ORDER", "READABLE"]

MANIFEST = "_moelens.json"
FORMAT = "moelens.dataset/1"
VIEWS = {"runs": ("run_id",), "sites": ("run_id",), "documents": ("run_id",), "tokens": ("run_id",),
         "routes": ("run_id", "layer"), "router_logits": ("run_id", "layer"), "router_confidence": ("run_id", "layer"),
         "stats_expert_counts": ("run_id", "layer"), "stats_coactivation": ("run_id", "layer"),
         "stats_entropy": ("run_id", "layer"), "stats_tokens": ("run_id", "layer")}
# what each folder holds: the public view, except that routes keeps the loop pass of looped layers
VIEW_SOURCE = {"routes": "(SELECT run_id, doc_id, pos, layer, rank, expert, weight, pass FROM routes_all WHERE is_primary)"}
READABLE = (2, 3, 4)  # dataset schema versions this moelens opens (the manifest lists each view's columns)
ROW_ORDER = {"routes": "doc_id, pos, rank", "tokens": "doc_id, pos", "documents": "doc_id", "router_logits": "doc_id, pos",
          "router_confidence": "doc_id, pos"}


def sql_quote(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise StoreError(f"{path} is not a moelens Parquet dataset (no readable {MANIFEST}); export one with "
                         "`moelens export DB --parquet DIR`.") from None
    if manifest.get("format") != FORMAT:
        raise StoreError(f"{path}/{MANIFEST} is not a {FORMAT} manifest.")
    if manifest.get("schema_version") not in READABLE:
        raise SchemaVersionError(f"{path} holds moelens schema version {manifest.get('schema_version')}; this moelens "
                                 f"reads datasets of versions {', '.join(str(v) for v in READABLE)}.")
    return manifest


def open_dataset(con: Any, path: str | os.PathLike) -> dict[str, Any]:
    """Create the public views of the dataset ``path`` on ``con``; returns the manifest."""
    path = Path(path)
    manifest = read_manifest(path)
    for view, spec in manifest["views"].items():
        types = ", ".join(f"'{k}': {manifest['hive_types'][k]}" for k in spec["partition_by"])
        cols = ", ".join(f'"{name}"::{kind} AS "{name}"' for name, kind in spec["columns"])
        folder = path / view
        if folder.is_dir() and any(folder.rglob("*.parquet")):
            glob = str(folder / "**" / "*.parquet").replace("'", "''")
            body = f"SELECT {cols} FROM read_parquet('{glob}', hive_partitioning = true, hive_types = {{{types}}})"
        else:
            body = f"SELECT {', '.join(f'NULL::{kind} AS {name}' for name, kind in spec['columns'])} WHERE false"
        if view == "runs":  # runs exported from several databases may share a run_key: number them anew
            body = ("SELECT * REPLACE (row_number() OVER (ORDER BY created_at, run_id)::INTEGER AS run_key) "
                    f"FROM ({body})")
        con.execute(f"CREATE OR REPLACE VIEW {view} AS {body}")
    con.execute("CREATE TABLE moelens_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("INSERT INTO moelens_meta VALUES ('schema_version', ?), ('dataset', ?)",
                [str(manifest["schema_version"]), str(path)])
    # what the analyses read from physical tables: router logits as _logits_<run_key> (site, fixed width)
    for run_id, key in con.execute("SELECT run_id, run_key FROM runs").fetchall():
        width = manifest["runs"].get(run_id, {}).get("logits_width")
        if width:
            con.execute(f"CREATE VIEW {schema.logits_table(key)} AS SELECT l.doc_id::INTEGER AS doc_id, l.pos, s.site, "
                        f"l.logits::FLOAT[{int(width)}] AS logits FROM router_logits l JOIN sites s ON s.run_id = "
                        f"l.run_id AND s.layer = l.layer AND s.is_primary AND coalesce(s.pass, 0) = 0 "
                        f"WHERE l.run_id = {sql_quote(run_id)}")
    return manifest

