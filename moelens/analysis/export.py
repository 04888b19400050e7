"""Analysis tables as Parquet, next to the public views that ``moelens export --parquet`` writes.

``DIR/analysis/share_matrix/<run>.parquet``: the full expert x label share matrix
(:mod:`~moelens.analysis.sharematrix`) of each exported run, for every label an analysis splits by
when not told (document labels with 2 to ``max_values`` values, identifier-like columns never, and
position): one row per (run, label, layer, value, expert), every cell - not only the significant
ones. One file per run, so exporting more runs into the same dataset adds files; read them all with
``read_parquet('DIR/analysis/share_matrix/*.parquet')``. The dataset's manifest does not list them:
they are results, not the public schema.
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


def _file_name(run_id: str) -> str:
    """A file name for a run id (which may hold ':' or '/'): readable characters kept, the rest hex-escaped."""
    return "".join(c if c.isalnum() or c in "-_." else f"%{ord(c):02X}" for c in run_id) + ".parquet"


def export_analysis_parquet(db: str | os.PathLike, out_dir: str | os.PathLike, *, run_id: str | None = None,
                            max_values: int = SpecializationOptions().max_values) -> dict[str, tuple[int, str]]:
    """Write ``out_dir/analysis/share_matrix/<run>.parquet`` per run; returns ``{"share_matrix": (rows, folder)}``."""
    import polars as pl

    folder = Path(out_dir) / "analysis" / "share_matrix"
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    with Store(db, read_only=True) as store:
        run_ids = [store.require_run(run_id).run_id] if run_id is not None else store.run_ids()
        for rid in run_ids:
            run = load_any(store, rid)
            frames = []
            for label in default_labels(run, max_values):
                if label == "position" and not hasattr(run, "pos"):
                    continue  # a stats run aggregates document labels only
                frame = share_matrix(run, label)
                if frame.height:
                    frames.append(frame.with_columns(pl.lit(rid).alias("run_id")).select("run_id", *frame.columns))
            table = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(schema={k: getattr(pl, v) for k, v in SCHEMA.items()})
            table.write_parquet(folder / _file_name(rid))
            total += table.height
    return {"share_matrix": (total, str(folder))}


SCHEMA = {"run_id": "String", "label": "String", "layer": "Int32", "value": "String", "expert": "Int32",
          "count": "Int64", "tokens": "Int64", "share": "Float64", "top1_count": "Int64", "top1_share": "Float64",
          "overall_share": "Float64", "lift": "Float64"}
