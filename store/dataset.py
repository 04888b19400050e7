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
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from moelens._version import __version__
from moelens.errors import SchemaVersionError, StoreError
from moelens.store import schema

__all__ = ["export_dataset", "open_dataset", "is_dataset", "MANIFEST", "FORMAT", "VIEWS"]

MANIFEST = "_moelens.json"
FORMAT = "moelens.dataset/1"
VIEWS = {"runs": ("run_id",), "sites": ("run_id",), "documents": ("run_id",), "tokens": ("run_id",),
         "routes": ("run_id", "layer"), "router_logits": ("run_id", "layer"), "router_confidence": ("run_id", "layer"),
         "stats_expert_counts": ("run_id", "layer"), "stats_coactivation": ("run_id", "layer"),
         "stats_entropy": ("run_id", "layer"), "stats_tokens": ("run_id", "layer")}
# what each folder holds: the public view, except that routes keeps the loop pass of looped layers
_SOURCE = {"routes": "(SELECT run_id, doc_id, pos, layer, rank, expert, weight, pass FROM routes_all WHERE is_primary)"}
READABLE = (2, 3)  # dataset schema versions this moelens opens (the manifest lists each view's columns)
_ORDER = {"routes": "doc_id, pos, rank", "tokens": "doc_id, pos", "documents": "doc_id", "router_logits": "doc_id, pos",
          "router_confidence": "doc_id, pos"}


def is_dataset(path: str | os.PathLike) -> bool:
    return Path(path).is_dir()


def _quote(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def export_dataset(db: str | os.PathLike, out_dir: str | os.PathLike, *, run_id: str | None = None) -> dict[str, int]:
    """Write the public views of ``db`` (every run, or ``run_id``) into the dataset ``out_dir``;
    returns rows written per view. ``out_dir`` may be new, empty, or a dataset without these runs."""
    from moelens.store.db import Store

    out = Path(out_dir)
    manifest = _read_manifest(out) if (out / MANIFEST).exists() else None
    if manifest is None and out.exists() and any(out.iterdir()):
        raise StoreError(f"{out} is neither empty nor a moelens Parquet dataset; choose another folder.")
    written: dict[str, int] = {}
    with Store(db, read_only=True) as store:
        if getattr(store, "dataset", None) is not None:
            raise StoreError(f"{db} is already a Parquet dataset.")
        run_ids = [store.require_run(run_id).run_id] if run_id is not None else store.run_ids()
        if not run_ids:
            store.require_run(None)
        present = set((manifest or {}).get("runs", {}))
        again = [r for r in run_ids if r in present]
        if again:
            raise StoreError(f"run {again[0]!r} is already in the dataset {out}; export into another folder.")
        out.mkdir(parents=True, exist_ok=True)
        views = dict((manifest or {}).get("views", {}))
        runs_meta = dict((manifest or {}).get("runs", {}))
        where = f"run_id IN ({', '.join(_quote(r) for r in run_ids)})"
        for view, parts in VIEWS.items():
            source = _SOURCE.get(view, view)
            columns = store.con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
            views.setdefault(view, {"partition_by": list(parts), "columns": [[c[0], c[1]] for c in columns]})
            count = store.con.execute(f"SELECT count(*) FROM {source} WHERE {where}").fetchone()[0]
            if not count:
                continue
            (out / view).mkdir(exist_ok=True)
            order = f" ORDER BY {', '.join(parts)}, {_ORDER[view]}" if view in _ORDER else ""
            append = ", APPEND" if any((out / view).iterdir()) else ""
            target = str(out / view).replace("'", "''")
            store.con.execute(f"COPY (SELECT * FROM {source} WHERE {where}{order}) TO '{target}' "
                              f"(FORMAT parquet, PARTITION_BY ({', '.join(parts)}){append})")
            written[view] = int(count)
        for rid in run_ids:
            info = store.get_run(rid)
            width = None
            if schema.logits_table(info.run_key) in store._tables():
                width = store.con.execute(f"SELECT max(len(logits)) FROM router_logits WHERE run_id = {_quote(rid)}"
                                          ).fetchone()[0]
            runs_meta[rid] = {"weights": info.weights, "logits_width": width}
    manifest = {"format": FORMAT, "schema_version": schema.SCHEMA_VERSION, "written_by": f"moelens {__version__}",
                "hive_types": {"run_id": "VARCHAR", "layer": "INTEGER"}, "views": views, "runs": runs_meta}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return written


def _read_manifest(path: Path) -> dict[str, Any]:
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
    manifest = _read_manifest(path)
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
                        f"WHERE l.run_id = {_quote(run_id)}")
    return manifest


def load_unpacked(con: Any, run_id: str, slots: list[tuple[int, int, int]], index: Any, experts: Any, weights: Any,
                  doc_filter: str) -> None:
    """Fill ``experts[li]`` (and ``weights[li]``) from the unpacked ``routes`` rows of a dataset;
    ``slots`` holds ``(li, layer, pass)`` and ``index`` maps (doc_id, pos) to token rows."""
    import numpy as np

    from moelens.store.db import fetch_arrow

    k = experts.shape[2]
    for li, layer, loop_pass in slots:
        part = fetch_arrow(con, "SELECT doc_id, pos, rank, expert, weight FROM routes WHERE run_id = $run AND "
                           f"layer = $layer AND coalesce(pass, 0) = $pass{doc_filter}",
                           {"run": run_id, "layer": int(layer), "pass": int(loop_pass)})
        if not part.num_rows:
            continue
        tok = index(part.column("doc_id").to_numpy().astype(np.int64), part.column("pos").to_numpy().astype(np.int64))
        rank = part.column("rank").to_numpy().astype(np.int64)
        keep = (tok >= 0) & (rank >= 0) & (rank < k)
        expert = part.column("expert").fill_null(-1).to_numpy().astype(np.int16)
        experts[li, tok[keep], rank[keep]] = expert[keep]
        if weights is not None:
            weight = part.column("weight").fill_null(0.0).to_numpy().astype(np.float32)
            weights[li, tok[keep], rank[keep]] = weight[keep]
