"""Schema versions: an older database is refused with the command that upgrades it, and the upgrade
keeps every row (compared with the rows read before, through SQL of the version that wrote them)."""

from __future__ import annotations

import hashlib

import duckdb
import pytest

from moelens.cli import main
from moelens.errors import SchemaVersionError
from moelens.store import SCHEMA_VERSION, Store


def _make_v1(path, tiny_model_dir, labelled_jsonl):
    """Trace with this moelens, then rewrite the file as schema version 1 wrote it (no sites.pass)."""
    import moelens

    moelens.trace(str(tiny_model_dir), str(labelled_jsonl), out=str(path), max_docs=4, progress=False)
    con = duckdb.connect(str(path))
    con.execute("DROP VIEW routes")
    con.execute("DROP VIEW routes_all")
    con.execute("ALTER TABLE sites DROP COLUMN pass")
    con.execute("UPDATE moelens_meta SET value = '1' WHERE key = 'schema_version'")
    before = con.execute("SELECT count(*), sum(doc_id * 7 + pos * 3 + site) FROM _routes_1").fetchone()
    con.close()
    return before


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_old_schema_is_refused_with_the_upgrade_command_then_upgraded(tmp_path, tiny_model_dir, labelled_jsonl,
                                                                     capsys):
    db = tmp_path / "old.duckdb"
    physical = _make_v1(db, tiny_model_dir, labelled_jsonl)
    digest = _digest(db)
    with pytest.raises(SchemaVersionError, match=f"moelens upgrade {db}"):
        Store(db, read_only=True)
    with pytest.raises(SchemaVersionError, match="moelens upgrade"):
        Store(db)
    assert _digest(db) == digest  # refusing touched nothing

    assert main(["upgrade", str(db)]) == 0
    assert f"from schema version 1 to {SCHEMA_VERSION}" in capsys.readouterr().out
    with Store(db, read_only=True) as store:
        con = store.con
        assert con.execute("SELECT value FROM moelens_meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        assert con.execute("SELECT count(*), sum(doc_id * 7 + pos * 3 + site) FROM _routes_1").fetchone() == physical
        assert {r[0] for r in con.execute("SELECT DISTINCT pass FROM sites").fetchall()} == {0}
        routes = con.execute("SELECT count(*) FROM routes").fetchone()[0]
        k = con.execute("SELECT top_k FROM runs").fetchone()[0]
        assert routes == physical[0] * k  # every packed row unpacks into k routes again
    assert main(["upgrade", str(db)]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_unknown_future_version_names_no_upgrade(tmp_path):
    db = tmp_path / "future.duckdb"
    Store(db).close()
    con = duckdb.connect(str(db))
    con.execute("UPDATE moelens_meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(SchemaVersionError, match="version 99") as error:
        Store(db, read_only=True)
    assert "upgrade" not in str(error.value)
