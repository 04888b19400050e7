"""Export the public tables of a trace database as Parquet files (the exchange format)."""

from __future__ import annotations

import os
from pathlib import Path

from moelens.store.db import Store

__all__ = ["export_parquet", "PUBLIC_TABLES"]

PUBLIC_TABLES = ("runs", "sites", "documents", "tokens", "routes", "router_logits")


def export_parquet(db: str | os.PathLike, out_dir: str | os.PathLike, *, run_id: str | None = None) -> dict[str, int]:
    """Write each public table (unpacked ``routes``) to ``out_dir/<table>.parquet``; returns row counts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    with Store(db, read_only=True) as store:
        if run_id is not None:
            store.require_run(run_id)
        for table in PUBLIC_TABLES:
            where = "WHERE run_id = ?" if run_id is not None else ""
            params = [run_id] if run_id is not None else []
            count = store.con.execute(f"SELECT count(*) FROM {table} {where}", params).fetchone()[0]
            if table == "router_logits" and count == 0:
                continue
            order = " ORDER BY run_id, doc_id, pos, layer, rank" if table == "routes" else ""
            target = str(out / f"{table}.parquet").replace("'", "''")
            store.con.execute(f"COPY (SELECT * FROM {table} {where}{order}) TO '{target}' (FORMAT parquet)", params)
            written[table] = int(count)
    return written
