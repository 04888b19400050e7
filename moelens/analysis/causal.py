"""Causal verdicts on measured interventions, and the report's "causal" column of specialists.

The ``interventions`` table (written by ``moelens intervene``) holds one row per intervention and
label value, with random controls marked ``control`` and tied to what they control
(``control_for``). :func:`causal_verdicts` says, per measured intervention and label value,
``effect`` when the loss increase's 95 % interval lies above 0 and above the highest upper bound of
its matched controls' intervals on the same value, else ``no effect beyond noise``.
:func:`causal_column` gives each specialist cell (layer, expert, label value) the verdict of the
ablation that removed it - a single-expert ablation when one was measured, else the smallest group
holding the expert - or ``not measured``. High lift with no causal effect is a finding, not an error.
"""

from __future__ import annotations

from typing import Any

__all__ = ["causal_verdicts", "causal_column", "read_interventions"]


def causal_verdicts(rows: Any) -> Any:
    """Non-control rows with ``control_hi``, ``control_d_loss``, ``controls`` and ``verdict`` (Polars)."""
    import polars as pl

    controls = (rows.filter(pl.col("control"))
                .group_by("irun_id", "control_for", "label_kind", "label_value")
                .agg(pl.col("d_loss_hi").max().alias("control_hi"), pl.col("d_loss").mean().alias("control_d_loss"),
                     pl.len().alias("controls")))
    main = rows.filter(~pl.col("control"))
    joined = main.join(controls, left_on=["irun_id", "intervention_id", "label_kind", "label_value"],
                       right_on=["irun_id", "control_for", "label_kind", "label_value"], how="left")
    above = (pl.col("d_loss_lo") > 0) & (pl.col("control_hi").is_null() | (pl.col("d_loss_lo") > pl.col("control_hi")))
    return joined.with_columns(pl.when(above).then(pl.lit("effect")).otherwise(pl.lit("no effect beyond noise"))
                               .alias("verdict"))


def read_interventions(db: Any, run_id: str | None = None) -> Any | None:
    """The ``interventions`` rows of ``db`` (a Store) measured on the model of trace run ``run_id`` (all
    when None), or None when there are none."""
    import polars as pl

    from moelens.store.db import fetch_arrow

    if not hasattr(db, "con"):  # a path
        from pathlib import Path

        from moelens.store import Store

        if not Path(str(db)).is_file():
            return None
        with Store(str(db), read_only=True) as store:
            return read_interventions(store, run_id)
    tables = {r[0] for r in db.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if "interventions" not in tables:
        return None
    sql = ("SELECT i.* FROM interventions i JOIN intervention_runs r USING (irun_id)"
           + (" WHERE r.model = (SELECT model FROM runs WHERE run_id = ?)" if run_id is not None else ""))
    frame = pl.from_arrow(fetch_arrow(db.con, sql, [run_id] if run_id is not None else None))
    return frame if frame.height else None


def causal_column(cells: list[dict[str, Any]], label: str, verdicts: Any | None) -> list[dict[str, Any]]:
    """``cells`` (layer, expert, value records) with ``causal``: the verdict for ``label=value`` or ``not measured``."""
    import polars as pl

    if verdicts is None or not len(cells):
        return [{**c, "causal": "not measured"} for c in cells]
    ablations = verdicts.filter((pl.col("kind") == "ablate") & (pl.col("label_kind") == label)
                                & pl.col("layer").is_not_null())
    out = []
    for cell in cells:
        found = ablations.filter((pl.col("layer") == cell["layer"]) & (pl.col("label_value") == str(cell["value"]))
                                 & pl.col("experts").list.contains(cell["expert"]))
        if found.height:
            best = found.sort(pl.col("experts").list.len(), "intervention_id").row(0, named=True)
            out.append({**cell, "causal": best["verdict"], "causal_d_loss": best["d_loss"],
                        "causal_by": best["description"]})
        else:
            out.append({**cell, "causal": "not measured"})
    return out
