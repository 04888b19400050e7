"""Write a Parquet dataset (the layout is described in :mod:`moelens.store.dataset`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from moelens._version import __version__
from moelens.errors import StoreError
from moelens.store import schema
from moelens.store.dataset import FORMAT, MANIFEST, ROW_ORDER, VIEW_SOURCE, VIEWS, read_manifest, sql_quote
from moelens.store.db import Store

__all__ = ["export_dataset"]


def export_dataset(db: str | os.PathLike, out_dir: str | os.PathLike, *, run_id: str | None = None) -> dict[str, int]:
    """Write the public views of ``db`` (every run, or ``run_id``) into the dataset ``out_dir``;
    returns rows written per view. ``out_dir`` may be new, empty, or a dataset without these runs."""
    out = Path(out_dir)
    manifest = read_manifest(out) if (out / MANIFEST).exists() else None
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
        where = f"run_id IN ({', '.join(sql_quote(r) for r in run_ids)})"
        for view, parts in VIEWS.items():
            source = VIEW_SOURCE.get(view, view)
            columns = store.con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
            views.setdefault(view, {"partition_by": list(parts), "columns": [[c[0], c[1]] for c in columns]})
            count = store.con.execute(f"SELECT count(*) FROM {source} WHERE {where}").fetchone()[0]
            if not count:
                continue
            (out / view).mkdir(exist_ok=True)
            order = f" ORDER BY {', '.join(parts)}, {ROW_ORDER[view]}" if view in ROW_ORDER else ""
            append = ", APPEND" if any((out / view).iterdir()) else ""
            target = str(out / view).replace("'", "''")
            store.con.execute(f"COPY (SELECT * FROM {source} WHERE {where}{order}) TO '{target}' "
                              f"(FORMAT parquet, PARTITION_BY ({', '.join(parts)}){append})")
            written[view] = int(count)
        for rid in run_ids:
            info = store.get_run(rid)
            width = None
            if schema.logits_table(info.run_key) in store._tables():
                width = store.con.execute(f"SELECT max(len(logits)) FROM router_logits WHERE run_id = {sql_quote(rid)}"
                                          ).fetchone()[0]
            runs_meta[rid] = {"weights": info.weights, "logits_width": width}
    manifest = {"format": FORMAT, "schema_version": schema.SCHEMA_VERSION, "written_by": f"moelens {__version__}",
                "hive_types": {"run_id": "VARCHAR", "layer": "INTEGER"}, "views": views, "runs": runs_meta}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return written
