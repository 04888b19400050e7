"""``moelens report`` / ``moelens compare``: JSON keys, tables, and one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moelens.analysis import from_arrays
from moelens.cli import main
from moelens.store.arrays import save_routing

LAYER_KEYS = {"layer", "tokens", "load", "max_over_mean", "effective_experts", "dead_experts", "collapsed",
              "collapse_reason", "imbalance_ratio", "cv", "gini", "entropy", "entropy_norm", "effective_fraction",
              "min_utilization", "max_utilization", "dead_fraction", "never_routed", "balancedness"}
SPEC_KEYS = {"layer", "expert", "value", "share", "lift", "ci_low", "ci_high", "count", "tokens", "docs", "q_value",
             "causal"}  # causal: "not measured" here (no interventions in this database)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "runs.duckdb"
    rng = np.random.default_rng(0)
    docs = 60
    doc = np.repeat(np.arange(docs), 50)
    e = np.argsort(rng.random((3, len(doc), 8)), axis=2)[:, :, :2].astype(np.int16)
    domain = rng.integers(0, 2, docs)
    code = (domain[doc] == 1) & (rng.random(len(doc)) < 0.6)  # "code" documents prefer expert 3 at layer 4
    e[1, code, 1] = np.where(e[1, code, 0] == 3, e[1, code, 1], 3)
    documents = [{"doc_id": d, "domain": ["prose", "code"][domain[d]], "language": "en",
                  "meta": {"split": ["a", "b"][d % 2]}} for d in range(docs)]
    routing = from_arrays(e, num_experts=8, doc_id=doc, layers=[2, 4, 6], documents=documents,
                          token_id=rng.integers(0, 30, len(doc)))
    save_routing(routing, path, run_id="base")
    save_routing(from_arrays(e[:, :, ::-1].copy(), num_experts=8, doc_id=doc, layers=[2, 4, 6], documents=documents,
                             token_id=routing.token_id), path, run_id="other")
    return path


def test_report_json_has_the_documented_keys(db, capsys):
    assert main(["report", str(db), "--run", "base", "--json", "--bootstrap", "100"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == "moelens.report/1"
    assert set(data) >= {"run", "options", "baselines", "layers", "specialization", "specialization_tests", "nmi",
                         "position", "vocabulary", "coactivation", "temporal", "crosslayer", "confidence"}
    assert [x["layer"] for x in data["layers"]] == [2, 4, 6]
    assert all(set(x) == LAYER_KEYS and len(x["load"]) == 8 for x in data["layers"])
    # labels present: domain and the meta key "split" (2 values each) and position; language has one value
    assert set(data["specialization"]) == {"domain", "split", "position"}
    rows = data["specialization"]["domain"]
    assert [(r["layer"], r["value"], r["expert"]) for r in rows] == [(4, "code", 3)]
    assert set(rows[0]) == SPEC_KEYS and rows[0]["ci_low"] > 1
    assert rows[0]["causal"] == "not measured" and data["causal_measured"] is False
    assert data["specialization"]["split"] == [] and data["confidence"] is None
    assert data["options"]["bootstrap"] == 100 and data["baselines"]["first_or_second"] == pytest.approx(1 - 30 / 56)


def test_report_tables_and_timings(db, capsys):
    assert main(["report", str(db), "--run", "base", "--layers", "4", "--labels", "domain", "--timings"]) == 0
    captured = capsys.readouterr()
    assert "Load per layer" in captured.out and "Specialization by domain" in captured.out
    assert "code" in captured.out and "timings: load" in captured.err


@pytest.mark.parametrize("argv, message", [
    (["--labels", "colour"], "no label 'colour' in run 'base'; available labels: domain, language, split, position, token_id."),
    (["--layers", "3"], "layer 3 is not a traced MoE layer; traced layers: 2, 4, 6."),
    (["--run", "nope"], "no run 'nope'"),
    ([], "holds 2 runs; choose one with --run"),
    (["--bootstrap", "5"], "bootstrap needs at least 20 replicates"),
])
def test_report_errors_are_one_line(db, capsys, argv, message):
    base = ["report", str(db)] + (["--run", "base"] if "--run" not in argv and argv else [])
    assert main(base + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_report_on_a_missing_database(tmp_path, capsys):
    assert main(["report", str(tmp_path / "none.duckdb")]) == 2
    assert "no database at" in capsys.readouterr().err


def test_compare_json_and_tables(db, capsys):
    assert main(["compare", str(db), "base", "other", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == "moelens.compare/1" and data["tokens"] == 3000
    assert [r["saturation"] for r in data["layers"]] == [1.0, 1.0, 1.0]  # same sets, reversed slots
    assert all(r["top1_agreement"] < 0.2 for r in data["layers"])
    assert set(data["specialization_shift"]) == {"domain", "language", "split", "position"}
    assert main(["compare", str(db), "base", "other"]) == 0
    assert "saturation" in capsys.readouterr().out
    assert main(["compare", str(db), "base", "missing"]) == 2
    assert "no run 'missing'" in capsys.readouterr().err


@pytest.mark.parametrize("control_hi, verdict", [(0.2, "effect"), (0.45, "no effect beyond noise")])
def test_report_causal_column_reads_the_measured_ablation(db, tmp_path, capsys, control_hi, verdict):
    """Interventions written by hand: the code specialist (layer 4, expert 3) ablated, d_loss on code in
    [0.4, 0.6]; two usage-matched controls whose highest upper bound is ``control_hi``."""
    import shutil

    import duckdb

    copy = tmp_path / "causal.duckdb"
    shutil.copyfile(db, copy)
    con = duckdb.connect(str(copy))
    con.execute("INSERT INTO intervention_runs SELECT 'iv', model, dataset, 'complete', now(), 'test', '{}' FROM runs"
                " WHERE run_id = 'base'")
    rows = [(0, False, None, [3], 0.5, 0.4, 0.6), (1, True, 0, [1], 0.1, 0.0, 0.2), (2, True, 0, [2], 0.3, 0.1, control_hi)]
    for iid, control, control_for, experts, d, lo, hi in rows:
        con.execute("INSERT INTO interventions (irun_id, intervention_id, kind, layer, experts, spec, description, control,"
                    " control_for, label_kind, label_value, n_docs, n_tokens, base_loss, d_loss, d_loss_lo, d_loss_hi)"
                    " VALUES ('iv', ?, 'ablate', 4, ?, '{}', ?, ?, ?, 'domain', 'code', 3, 30, 2.0, ?, ?, ?)",
                    [iid, experts, f"ablate L4:E{experts[0]}", control, control_for, d, lo, hi])
    con.close()
    assert main(["report", str(copy), "--run", "base", "--json", "--bootstrap", "100"]) == 0
    data = json.loads(capsys.readouterr().out)
    (row,) = data["specialization"]["domain"]
    assert data["causal_measured"] is True
    assert (row["layer"], row["expert"], row["causal"]) == (4, 3, verdict)
    assert row["causal_by"] == "ablate L4:E3" and row["causal_d_loss"] == pytest.approx(0.5)
    assert main(["report", str(copy), "--run", "base", "--bootstrap", "100"]) == 0
    shown = "effect (+0.500 nats)" if verdict == "effect" else "no effect beyond noise"
    assert shown in capsys.readouterr().out
