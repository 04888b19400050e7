"""The intervention tables of a trace database: one run of ``moelens intervene`` and its rows.

``intervention_runs`` holds one row per run (its options, ``status`` running | complete);
``interventions`` one row per (intervention, label value). Rows of a chunk are written in one
transaction; resuming a run skips the interventions that have rows, so nothing is duplicated, and a
run resumed with other options is refused in one line.
"""

from __future__ import annotations

import json
from typing import Any

from moelens.errors import RunMismatchError

__all__ = ["open_irun", "write_rows", "finish", "read_rows", "read_interventions", "write_curve"]

_COLUMNS = ("irun_id", "intervention_id", "kind", "layer", "experts", "spec", "description", "control", "control_for",
            "label_kind", "label_value", "n_docs", "n_tokens", "base_loss", "d_loss", "d_loss_lo", "d_loss_hi",
            "kl", "kl_lo", "kl_hi", "top1_agree", "top1_lo", "top1_hi")


def open_irun(path: str, irun_id: str, model: str, dataset: str, config: dict[str, Any]):
    """``(store, irun_id, done intervention ids)``: a new run, or the one to resume (same options)."""
    from moelens._version import __version__
    from moelens.store import Store

    store = Store(path)
    try:
        found = store.con.execute("SELECT config, status FROM intervention_runs WHERE irun_id = ?",
                                  [irun_id]).fetchone()
        text = json.dumps(config, sort_keys=True)
        if found is None:
            store.con.execute("INSERT INTO intervention_runs VALUES (?, ?, ?, 'running', now(), ?, ?)",
                              [irun_id, model, dataset, f"moelens {__version__}", text])
            return store, irun_id, set()
        if json.loads(found[0]) != json.loads(text):
            raise RunMismatchError(f"{path} already holds intervention run {irun_id!r} with other options; resume it"
                                   " with the same options or choose another run id.")
        done = {int(r[0]) for r in store.con.execute(
            "SELECT DISTINCT intervention_id FROM interventions WHERE irun_id = ?", [irun_id]).fetchall()}
        return store, irun_id, done
    except BaseException:
        store.close()
        raise


def write_rows(store: Any, irun_id: str, rows: list[dict[str, Any]]) -> None:
    """Insert one chunk's rows in one transaction."""
    if not rows:
        return
    marks = ", ".join("?" for _ in _COLUMNS)
    values = [[irun_id, *[row[c] for c in _COLUMNS[1:]]] for row in rows]
    store.con.execute("BEGIN TRANSACTION")
    try:
        store.con.executemany(f"INSERT INTO interventions ({', '.join(_COLUMNS)}) VALUES ({marks})", values)
        store.con.execute("COMMIT")
    except BaseException:
        store.con.execute("ROLLBACK")
        raise


def finish(store: Any, irun_id: str) -> None:
    store.con.execute("UPDATE intervention_runs SET status = 'complete' WHERE irun_id = ?", [irun_id])


def read_rows(store: Any, irun_id: str | None = None):
    """The ``interventions`` rows (of one run) as a Polars frame, in intervention and label order."""
    import polars as pl

    from moelens.store.db import fetch_arrow

    where, args = ("WHERE irun_id = ?", [irun_id]) if irun_id is not None else ("", None)
    table = fetch_arrow(store.con, f"SELECT * FROM interventions {where} ORDER BY irun_id, intervention_id,"
                        " label_kind, label_value", args)
    return pl.from_arrow(table)


def read_interventions(path: str, irun_id: str | None = None):
    """``interventions`` of a database file (read-only)."""
    from moelens.store import Store

    with Store(path, read_only=True) as store:
        return read_rows(store, irun_id)


def write_curve(path: str, irun_id: str, curve: Any) -> None:
    """Replace the ``whatif_curves`` rows of ``irun_id`` by ``curve`` (one transaction)."""
    from moelens.store import Store

    with Store(path) as store:
        store.con.execute("BEGIN TRANSACTION")
        try:
            store.con.execute("DELETE FROM whatif_curves WHERE irun_id = ?", [irun_id])
            store.con.executemany(
                "INSERT INTO whatif_curves VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [[irun_id, r["method"], r["layer"], r["n_removed"], r["experts"], r["loss"], r["d_loss"], r["kl"],
                  r["top1_agree"]] for r in curve.iter_rows(named=True)])
            store.con.execute("COMMIT")
        except BaseException:
            store.con.execute("ROLLBACK")
            raise
