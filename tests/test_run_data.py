"""Run data typed by kind through one loader: stats runs in the API, run status everywhere, doc_id as BIGINT,
sources without gate weights, and ``moelens runs``.

Oracles: a routes run of the same documents (its per-token load is counted independently of the
stats aggregates), the ``routes`` SQL view, the arrays written, and hand-set statuses.
"""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest

import moelens
from moelens.analysis import from_arrays
from moelens.analysis.runs import Source, load_any
from moelens.cli import main
from moelens.errors import StoreError, UnavailableError
from moelens.store import RunAggregates, RunRouting, Store, TraceWriter, WriteBatch
from moelens.store.arrays import load_routing, save_routing


@pytest.fixture(scope="module")
def traced(tmp_path_factory, tiny_model_dir):
    """The same 12 labelled documents traced as a routes run and as a stats run (two databases)."""
    folder = tmp_path_factory.mktemp("kinds")
    texts = ["The quick brown fox jumps over the lazy dog. " * 3, "def double(x):\n    return 2 * x\n" * 2,
             "Le renard brun rapide saute par-dessus le chien paresseux. " * 2]
    data = folder / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": texts[i % 3], "language": "en fr code".split()[i % 3]}) + "\n"
                            for i in range(12)))
    routes, stats = folder / "r.duckdb", folder / "s.duckdb"
    moelens.trace(str(tiny_model_dir), str(data), out=str(routes), run_id="r", progress=False)
    moelens.trace(str(tiny_model_dir), str(data), out=str(stats), run_id="s", mode="stats", progress=False)
    return routes, stats


def test_one_loader_types_runs_by_kind(traced):
    routes, stats = traced
    assert isinstance(load_any(routes), RunRouting)
    agg = load_any(stats)
    assert isinstance(agg, RunAggregates) and agg.status == "complete"
    routing = load_routing(routes)
    # the aggregates count exactly what the per-token routes hold
    for li, layer in enumerate(routing.layers):
        e = routing.experts[li]
        counts = np.bincount(e[e >= 0].astype(np.int64), minlength=routing.num_experts)
        assert agg.counts[list(agg.layers).index(layer)].tolist() == counts.tolist()
    assert agg.tokens.tolist() == [routing.num_tokens] * len(routing.layers)


def test_facade_report_and_load_of_a_stats_run(traced):
    """Defect: moelens.open(db).report() / .load() on a --mode stats run gave 0 tokens and every layer dead."""
    routes, stats = traced
    with moelens.open(routes) as t:
        expected = t.load()
    with moelens.open(stats) as t:
        load = t.load()
        report = t.report()
        assert t.labels() == {"language": "document"}
        with pytest.raises(UnavailableError, match="stats-mode run.*specialization needs per-token routes"):
            t.specialization("language")
    assert load["tokens"].to_list() == expected["tokens"].to_list() and min(load["tokens"]) > 0
    assert load["dead_experts"].to_list() == expected["dead_experts"].to_list()
    np.testing.assert_allclose(load["effective_experts"].to_numpy(), expected["effective_experts"].to_numpy(), rtol=1e-12)
    assert report.data["run"]["mode"] == "stats" and report.data["run"]["tokens"] == int(expected["tokens"][0])
    assert [r["collapsed"] for r in report.data["layers"]] == expected["collapsed"].to_list()
    # the CLI and the API load through the same loader: the same JSON
    assert main(["report", str(stats), "--json"]) == 0


def test_stats_and_routes_reports_share_the_coactivation_floor(traced):
    """max_conditional: the strongest pair among experts with >= coactivation_min_count tokens, in both kinds."""
    from moelens.analysis.options import ReportOptions
    from moelens.analysis.report import build_report

    routes, stats = traced
    for floor in (0, 10**9):
        options = ReportOptions(coactivation_min_count=floor)
        a = build_report(routes, options=options).data["coactivation"]
        b = build_report(stats, options=options).data["coactivation"]
        assert [r["layer"] for r in a] == [r["layer"] for r in b]
        for x, y in zip(a, b):
            if floor:
                assert x["max_conditional"] is None and y["max_conditional"] is None
            else:
                assert x["max_conditional"] == pytest.approx(y["max_conditional"], rel=1e-12)
                assert (x["expert"], x["partner"]) == (y["expert"], y["partner"])


def _two_runs(path):
    rng = np.random.default_rng(0)
    doc = np.repeat(np.arange(12), 10)
    e = np.argsort(rng.random((2, len(doc), 6)), axis=2)[:, :, :2].astype(np.int16)
    docs = [{"doc_id": d, "domain": "ab"[d % 2]} for d in range(12)]
    save_routing(from_arrays(e, num_experts=6, doc_id=doc, documents=docs), path, run_id="done")
    save_routing(from_arrays(e, num_experts=6, doc_id=doc, documents=docs), path, run_id="cut")
    with Store(path) as store:
        store.set_status("cut", "running")  # what an interrupted trace leaves


def test_run_status_in_report_json_api_and_runs_command(tmp_path, capsys):
    """Defect: an interrupted run was reported as if complete."""
    db = tmp_path / "s.duckdb"
    _two_runs(db)
    assert main(["report", str(db), "--run", "cut", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)["run"]
    assert run["status"] == "running" and run["complete"] is False and "incomplete" in run["status_note"]
    assert main(["report", str(db), "--run", "cut", "--labels", "domain"]) == 0
    assert "status running" in capsys.readouterr().out
    with moelens.open(db) as t:
        assert t.status("cut") == "running" and t.status("done") == "complete"
        assert dict(zip(t.runs()["run_id"], t.runs()["status"])) == {"done": "complete", "cut": "running"}
        assert t.report("done").data["run"]["complete"] is True
    assert main(["runs", str(db), "--json"]) == 0
    listed = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    assert listed["cut"]["status"] == "running" and listed["done"]["status"] == "complete"
    assert listed["done"]["documents"] == 12 and listed["done"]["tokens"] == 120 and listed["done"]["labels"] == ["domain"]
    assert listed["done"]["disk_bytes"] > 0 and listed["done"]["mode"] == "routes"
    assert main(["runs", str(db)]) == 0
    table = capsys.readouterr().out
    assert "running (incomplete)" in table and "complete" in table


def test_a_document_id_beyond_32_bits_keeps_its_routes(tmp_path):
    """Defect: doc_id 3e9 came back with every route as -1 (INTEGER route tables, int32 casts in the writer)."""
    big = 3_000_000_000
    rng = np.random.default_rng(1)
    doc = np.repeat([7, big, big + 5], 4)
    e = np.argsort(rng.random((2, len(doc), 5)), axis=2)[:, :, :2].astype(np.int16)
    db = tmp_path / "big.duckdb"
    save_routing(from_arrays(e, num_experts=5, doc_id=doc), db, run_id="big")
    back = load_routing(db)
    assert back.doc_id.tolist() == doc.tolist()
    np.testing.assert_array_equal(back.experts, e)
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT doc_id, pos, layer, rank, expert FROM routes ORDER BY doc_id, pos, layer, rank").fetchall()
    types = con.execute("SELECT data_type FROM information_schema.columns WHERE table_name LIKE '\\_routes\\_%' "
                        "ESCAPE '\\' AND column_name = 'doc_id'").fetchall()
    con.close()
    assert types == [("BIGINT",)]
    assert len(rows) == e.size and {r[0] for r in rows} == {7, big, big + 5}
    assert all(r[4] == e[r[2], list(doc).index(r[0]) + r[1], r[3]] for r in rows)


def _narrow(db, run_id):
    """Turn a run's route table into the 32-bit doc_id layout of runs made before doc_id became BIGINT."""
    con = duckdb.connect(str(db))
    key = con.execute("SELECT run_key FROM runs WHERE run_id = ?", [run_id]).fetchall()[0][0]
    con.execute(f"ALTER TABLE _routes_{key} ALTER doc_id TYPE INTEGER")
    con.close()


def test_a_run_whose_table_keeps_32_bit_doc_ids_reads_and_refuses_a_huge_id_on_resume(tmp_path):
    db = tmp_path / "old.duckdb"
    doc = np.repeat(np.arange(6), 5)
    e = (np.arange(2 * 30 * 2).reshape(2, 30, 2) % 4).astype(np.int16)
    save_routing(from_arrays(e, num_experts=4, doc_id=doc), db, run_id="old")
    _narrow(db, "old")
    back = load_routing(db)  # reads as before
    np.testing.assert_array_equal(back.experts, e)
    assert back.doc_id.tolist() == doc.tolist()
    before = duckdb.connect(str(db), read_only=True)
    counts = before.execute("SELECT count(*) FROM documents").fetchall(), before.execute("SELECT count(*) FROM tokens").fetchall()
    before.close()
    with Store(db) as store:
        run = store.get_run("old")
        writer = TraceWriter(store, run, table_k=2)
        with pytest.raises(StoreError, match=r"keeps doc_id in 32 bits, and document 3000000000 does not fit.*overwrite"):
            writer.submit(WriteBatch(documents=[{"doc_id": 3_000_000_000, "n_tokens": 1}],
                                     token_doc=np.array([3_000_000_000]), token_pos=np.array([0], np.int32),
                                     token_id=np.array([1], np.int32), route_doc=np.array([3_000_000_000]),
                                     route_pos=np.array([0], np.int32), route_site=np.array([0], np.int16),
                                     experts=np.array([[1, 2]], np.int16), weights=np.zeros((1, 2), np.float32)))
        writer.close()
    after = duckdb.connect(str(db), read_only=True)
    assert (after.execute("SELECT count(*) FROM documents").fetchall(),
            after.execute("SELECT count(*) FROM tokens").fetchall()) == counts  # nothing of it written
    after.close()


def test_a_source_without_gate_weights_loads_them_as_none(tmp_path):
    db = tmp_path / "engine.duckdb"
    doc = np.repeat(np.arange(4), 3)
    e = (np.arange(24).reshape(1, 12, 2) % 4).astype(np.int16)
    save_routing(from_arrays(e, num_experts=4, doc_id=doc), db, run_id="v")
    con = duckdb.connect(str(db))
    config = json.loads(con.execute("SELECT config FROM runs").fetchall()[0][0])
    config["source"] = {"kind": "vllm", "weights": False, "token_text": False, "token_ids": True, "per_token": True}
    con.execute("UPDATE runs SET config = ?", [json.dumps(config)])
    con.close()
    run = load_any(db, weights=True, token_text=True)
    assert isinstance(run, RunRouting) and run.weights is None and run.tokens is None  # None, never zeros
    assert Source.of(run.config).weights is False and Source.of({}).weights  # no source key: everything recorded
    with moelens.open(db) as t:
        data = t.report().data
    assert data["source"]["kind"] == "vllm" and {"weights", "token_text"} <= set(data["unavailable"])


def test_upgrading_a_schema_1_database_widens_doc_id(tmp_path, capsys):
    """Schema 1 kept doc_id in 32 bits in the physical tables: `moelens upgrade` makes it BIGINT, values kept."""
    db = tmp_path / "v1.duckdb"
    doc = np.repeat(np.arange(6) * 1000, 5)
    e = (np.arange(2 * 30 * 2).reshape(2, 30, 2) % 4).astype(np.int16)
    save_routing(from_arrays(e, num_experts=4, doc_id=doc), db, run_id="old")
    _narrow(db, "old")
    con = duckdb.connect(str(db))  # what schema version 1 wrote: no sites.pass, version 1
    con.execute("DROP VIEW routes")
    con.execute("DROP VIEW routes_all")
    con.execute("ALTER TABLE sites DROP COLUMN pass")
    con.execute("UPDATE moelens_meta SET value = '1' WHERE key = 'schema_version'")
    before = con.execute("SELECT doc_id, pos, site, e0 FROM _routes_1 ORDER BY ALL").fetchall()
    con.close()
    assert main(["upgrade", str(db)]) == 0
    capsys.readouterr()
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT data_type FROM information_schema.columns WHERE table_name = '_routes_1' "
                       "AND column_name = 'doc_id'").fetchall() == [("BIGINT",)]
    assert con.execute("SELECT doc_id, pos, site, e0 FROM _routes_1 ORDER BY ALL").fetchall() == before
    con.close()
    back = load_routing(db)
    np.testing.assert_array_equal(back.experts, e)
    assert back.doc_id.tolist() == doc.tolist()


def test_parquet_export_carries_the_full_share_matrix(tmp_path, capsys):
    """The OLMoE share matrix, every cell, beside the Parquet dataset: the same numbers as the API."""
    import polars as pl

    db = tmp_path / "s.duckdb"
    _two_runs(db)
    out = tmp_path / "pq"
    assert main(["export", str(db), "--parquet", str(out)]) == 0
    assert "share_matrix" in capsys.readouterr().out
    table = pl.read_parquet(str(out / "analysis" / "share_matrix" / "*.parquet"))
    assert set(table["run_id"]) == {"done", "cut"} and set(table["label"]) == {"domain", "position"}
    with moelens.open(db) as t:
        api = t.share_matrix("domain", run="done")
    mine = table.filter((pl.col("run_id") == "done") & (pl.col("label") == "domain")).drop("run_id")
    assert mine.sort("layer", "value", "expert").equals(api.sort("layer", "value", "expert"))
    assert mine.height == 2 * 2 * 6  # layers x values x experts: every cell
