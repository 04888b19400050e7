"""Schema version 3: runs without gate weights (weight NULL in the views), unknown token ids as NULL;
version 2 files upgrade in place without changing a table."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from moelens.store import SCHEMA_VERSION, Store, TraceWriter, WriteBatch
from moelens.store.arrays import load_routing


def _plan(k: int = 3) -> dict:
    return {"family": None, "num_layers": 2, "moe_layers": [1], "num_experts": 6, "top_k": k, "num_shared_experts": 0,
            "scoring": None, "sites": [{"site": 0, "path": "x", "layer": 1, "tag": "mlp", "primary": True,
                                        "num_experts": 6, "top_k": k}]}


def _write(store: Store, run_id: str, *, weights: bool) -> None:
    run = store.create_run(run_id=run_id, model="m", dataset="d", dtype=None, revision=None, plan_meta=_plan(),
                           config={}, logits_width=None, weights=weights)
    writer = TraceWriter(store, run, table_k=3)
    experts = np.array([[5, 0, -1], [2, 3, 4]], np.int16)
    writer.submit(WriteBatch(
        documents=[{"doc_id": 7, "n_tokens": 2}], token_doc=np.array([7, 7]), token_pos=np.array([0, 1], np.int32),
        token_id=np.array([-1, 42], np.int32), route_doc=np.array([7, 7], np.int32),
        route_pos=np.array([0, 1], np.int32), route_site=np.array([0, 0], np.int16), experts=experts,
        weights=np.array([[0.5, 0.25, 0.0], [0.1, 0.2, 0.3]], np.float32)))
    writer.close()


def test_weightless_run_has_null_weights_and_exact_ids(tmp_path):
    with Store(tmp_path / "w.duckdb") as store:
        _write(store, "with", weights=True)
        _write(store, "without", weights=False)
        assert store.get_run("with").weights and not store.get_run("without").weights
        cols = {r[0] for r in store.con.execute("SELECT column_name FROM information_schema.columns WHERE table_name ="
                                                " '_routes_2'").fetchall()}
        assert cols == {"doc_id", "pos", "site", "e0"}  # no weight words at all
        rows = store.con.execute("SELECT run_id, pos, rank, expert, weight FROM routes ORDER BY run_id, pos, rank"
                                 ).fetchall()
    assert rows == [("with", 0, 0, 5, 0.5), ("with", 0, 1, 0, 0.25), ("with", 0, 2, None, 0.0),
                    ("with", 1, 0, 2, pytest.approx(0.1)), ("with", 1, 1, 3, pytest.approx(0.2)),
                    ("with", 1, 2, 4, pytest.approx(0.3)),
                    ("without", 0, 0, 5, None), ("without", 0, 1, 0, None), ("without", 0, 2, None, None),
                    ("without", 1, 0, 2, None), ("without", 1, 1, 3, None), ("without", 1, 2, 4, None)]
    r = load_routing(str(tmp_path / "w.duckdb"), "without", weights=True)
    assert r.weights is None and r.experts[0].tolist() == [[5, 0, -1], [2, 3, 4]]
    assert r.token_id.tolist() == [-1, 42]  # an unknown id loads as -1 ...
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    assert con.execute("SELECT token_id FROM tokens WHERE run_id = 'without' ORDER BY pos").fetchall() == \
        [(None,), (42,)]  # ... and is NULL in SQL
    con.close()


def test_version_2_files_upgrade_to_3_and_keep_their_runs(tmp_path):
    """Version 3 only adds weightless route tables for new runs: the migration from 2 changes no
    table, and runs written before read back unchanged."""
    from moelens.errors import SchemaVersionError
    from moelens.store.schema import MIGRATIONS

    assert SCHEMA_VERSION >= 3 and MIGRATIONS[2] == []
    path = tmp_path / "v2.duckdb"
    with Store(path) as store:
        _write(store, "old", weights=True)
        store.con.execute("UPDATE moelens_meta SET value = '2' WHERE key = 'schema_version'")
    before = load_routing(store_path(path), "old")
    with pytest.raises(SchemaVersionError, match="moelens upgrade"):
        Store(path)
    with Store(path, upgrade=True) as store:
        assert store.upgraded_from == 2
        _write(store, "imported", weights=False)
        assert store.get_run("old").weights and not store.get_run("imported").weights
    after = load_routing(str(path), "old")
    assert np.array_equal(after.experts, before.experts) and np.array_equal(after.weights, before.weights)


def store_path(path):
    """A copy of a version-2 file marked current, to read the run the way it was written (oracle)."""
    import shutil

    copy = path.with_name("copy.duckdb")
    shutil.copyfile(path, copy)
    con = duckdb.connect(str(copy))
    con.execute("UPDATE moelens_meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)])
    con.close()
    return str(copy)


def test_version_3_files_upgrade_to_4_with_the_intervention_tables(tmp_path):
    """Version 4 adds the tables of causal experiments; a version-3 file gains them, its runs untouched."""
    from moelens.errors import SchemaVersionError

    assert SCHEMA_VERSION == 4
    path = tmp_path / "v3.duckdb"
    with Store(path) as store:
        _write(store, "old", weights=True)
        for table in ("interventions", "intervention_runs", "whatif_curves"):
            store.con.execute(f"DROP TABLE {table}")
        store.con.execute("UPDATE moelens_meta SET value = '3' WHERE key = 'schema_version'")
    before = load_routing(store_path(path), "old")
    with pytest.raises(SchemaVersionError, match="moelens upgrade"):
        Store(path)
    with Store(path, upgrade=True) as store:
        assert store.upgraded_from == 3
        tables = {r[0] for r in store.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert {"interventions", "intervention_runs", "whatif_curves"} <= tables
    after = load_routing(str(path), "old")
    assert np.array_equal(after.experts, before.experts) and np.array_equal(after.weights, before.weights)
