"""Parquet datasets: ``moelens export DB --parquet DIR`` writes the public views hive-partitioned by run
and layer, and ``moelens report DIR`` / ``moelens.open(DIR)`` give exactly what the database gives.

Oracles: the report JSON of the DuckDB file itself (equal but for the ``database`` path), and an
independent reader (pyarrow's hive-partitioned dataset) returning the database's ``routes`` rows.
"""

from __future__ import annotations

import importlib.util
import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from moelens.cli import main

ew_spec = importlib.util.spec_from_file_location("engine_writers", Path(__file__).with_name("engine_writers.py"))
ew = importlib.util.module_from_spec(ew_spec)
ew_spec.loader.exec_module(ew)


@pytest.fixture(scope="module")
def db(tiny_model_dir, tmp_path_factory):
    """A traced run with router logits, a weightless vLLM import and a counts-only TensorRT-LLM import."""
    import moelens
    from moelens import sources
    from moelens.store.arrays import load_routing

    folder = tmp_path_factory.mktemp("dataset")
    data = folder / "docs.jsonl"
    texts = ["The quick brown fox jumps over the lazy dog.", "Der schnelle braune Fuchs springt über den Hund.",
             "def double(x):\n    return 2 * x\n", "Le renard brun rapide saute par-dessus le chien.",
             "Article 1. All human beings are born free.", "Быстрая коричневая лиса прыгает."]
    data.write_text("".join(json.dumps({"text": t * 2, "language": lang}, ensure_ascii=False) + "\n"
                            for t, lang in zip(texts * 2, ["en", "de", "en", "fr", "en", "ru"] * 2)), encoding="utf-8")
    path = folder / "runs.duckdb"
    moelens.trace(str(tiny_model_dir), str(data), out=str(path), run_id="mini:docs", logits=True, progress=False)
    r = load_routing(str(path), weights=False)
    outputs = []
    for i, d in enumerate(np.unique(r.doc_id)):
        sel = r.doc_id == d
        outputs.append(ew.vllm_request_output(f"q{i}", r.token_id[sel], r.experts[:, sel].astype(np.int64), [1, 2, 3], 4,
                                              prompt_len=3, last_token=2))
    sources.write(sources.from_vllm(outputs, num_experts=8), path, run_id="vllm/served 1")
    counts = {(0, layer): np.bincount(r.experts[i].reshape(-1), minlength=8) for i, layer in enumerate([1, 2, 3])}
    ew.trtllm_statistic(folder / "trt", {0: counts}, 8, 2)
    assert main(["import", "trtllm", str(folder / "trt"), "--out", str(path), "--run-id", "trt", "--no-progress"]) == 0
    return path


def _report(target: Path, run: str) -> dict:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["report", str(target), "--run", run, "--json", "--bootstrap", "30"]) == 0
    data = json.loads(out.getvalue())
    data["run"]["database"] = None
    return data


def test_export_layout_and_reports_equal(db, tmp_path):
    ds = tmp_path / "ds"
    assert main(["export", str(db), "--parquet", str(ds)]) == 0
    manifest = json.loads((ds / "_moelens.json").read_text())
    assert manifest["format"] == "moelens.dataset/1" and manifest["schema_version"] == 4
    assert manifest["runs"]["vllm/served 1"]["weights"] is False and manifest["runs"]["mini:docs"]["logits_width"] == 8
    for run in ("mini:docs", "vllm/served 1"):
        for layer in (1, 2, 3):
            folder = ds / "routes" / f"run_id={quote(run, safe='')}" / f"layer={layer}"
            assert list(folder.glob("*.parquet")), folder
    assert list((ds / "stats_expert_counts" / "run_id=trt").glob("layer=*/*.parquet"))
    for run in ("mini:docs", "vllm/served 1", "trt"):
        from_db, from_ds = _report(db, run), _report(ds, run)
        assert from_ds == from_db, run
    assert _report(ds, "mini:docs")["confidence"]  # router logits reach the analyses from Parquet too


def test_independent_reader_sees_the_routes_view(db, tmp_path):
    import duckdb
    import pyarrow.dataset as pds

    ds = tmp_path / "ds"
    assert main(["export", str(db), "--parquet", str(ds), "--run", "vllm/served 1"]) == 0
    table = pds.dataset(ds / "routes", format="parquet", partitioning="hive").to_table()
    got = sorted(zip(table["run_id"].to_pylist(), table["doc_id"].to_pylist(), table["pos"].to_pylist(),
                     table["layer"].to_pylist(), table["rank"].to_pylist(), table["expert"].to_pylist(),
                     table["weight"].to_pylist()))
    con = duckdb.connect(str(db), read_only=True)
    want = sorted(con.execute("SELECT run_id, doc_id, pos, layer, rank, expert, weight FROM routes "
                              "WHERE run_id = 'vllm/served 1'").fetchall())
    con.close()
    assert got == want and all(w is None for *_, w in got)
    import polars as pl

    per_layer = (pl.scan_parquet(str(ds / "routes" / "**" / "*.parquet"), hive_partitioning=True)
                 .group_by("run_id", "layer").len().collect().sort("layer"))
    assert per_layer["run_id"].to_list() == ["vllm/served 1"] * 3
    assert per_layer["len"].to_list() == [sum(1 for r in want if r[3] == layer) for layer in (1, 2, 3)]


def test_open_a_dataset_and_add_runs(db, tmp_path):
    import moelens
    from moelens.errors import StoreError
    from moelens.store import Store

    ds = tmp_path / "ds"
    assert main(["export", str(db), "--parquet", str(ds), "--run", "mini:docs"]) == 0
    assert main(["export", str(db), "--parquet", str(ds), "--run", "trt"]) == 0  # a second run joins the dataset
    with pytest.raises(StoreError, match="already in the dataset"):
        from moelens.store.parquet import export_dataset

        export_dataset(db, ds, run_id="trt")
    with moelens.open(ds) as a, moelens.open(db) as b:
        assert a.store.run_ids() == ["mini:docs", "trt"]
        assert a.load("mini:docs").equals(b.load("mini:docs"))
        assert a.specialization("language", run="mini:docs", options=_opts()).equals(
            b.specialization("language", run="mini:docs", options=_opts()))
        assert np.array_equal(a.routing("mini:docs").experts, b.routing("mini:docs").experts)
    with pytest.raises(StoreError, match="does not write"):
        Store(ds)
    assert main(["export", str(ds), "--site", str(tmp_path / "site")]) == 0


def _opts():
    from moelens.analysis.options import SpecializationOptions

    return SpecializationOptions(bootstrap=20)
