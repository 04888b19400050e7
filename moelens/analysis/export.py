"""Analysis tables as Parquet, next to the public tables that ``moelens export --parquet`` writes.

``share_matrix.parquet``: the full expert x label share matrix (:mod:`~moelens.analysis.sharematrix`)
of every exported run, for every label an analysis splits by when not told (document labels with 2
to ``max_values`` values, identifier-like columns never, and position): one row per (run, label,
layer, value, expert), every cell - not only the significant ones.
"""

from __future__ import annotations

import os
from pathlib import Path

from moelens.analysis.labels import default_labels
from moelens.analysis.options import SpecializationOptions
from moelens.analysis.runs import load_any
from moelens.analysis.sharematrix import share_matrix
from moelens.store import Store

__all__ = ["export_analysis_parquet"]


def export_analysis_parquet(db: str | os.PathLike, out_dir: str | os.PathLike, *, run_id: str | None = None,
                            max_values: int = SpecializationOptions().max_values) -> dict[str, int]:
    """Write ``out_dir/share_matrix.parquet``; returns ``{"share_matrix": rows}``."""
    import polars as pl

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    with Store(db, read_only=True) as store:
        run_ids = [store.require_run(run_id).run_id] if run_id is not None else store.run_ids()
        for rid in run_ids:
            run = load_any(store, rid)
            for label in default_labels(run, max_values):
                if label == "position" and not hasattr(run, "pos"):
                    continue
                frame = share_matrix(run, label)
                if frame.height:
                    frames.append(frame.with_columns(pl.lit(rid).alias("run_id")).select("run_id", *frame.columns))
    table = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(
        schema={"run_id": pl.String, "label": pl.String, "layer": pl.Int32, "value": pl.String, "expert": pl.Int32,
                "count": pl.Int64, "tokens": pl.Int64, "share": pl.Float64, "top1_count": pl.Int64,
                "top1_share": pl.Float64, "overall_share": pl.Float64, "lift": pl.Float64})
    table.write_parquet(out / "share_matrix.parquet")
    return {"share_matrix": table.height}
