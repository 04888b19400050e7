"""The kernels capture paths: Triton records equal the torch path; stats mode equals routes aggregates."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys

import duckdb
import numpy as np
import pytest
import torch

import moelens
from moelens.store.arrays import load_routing


def _logits_by_layer(db, run):
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT layer, logits FROM router_logits ORDER BY doc_id, pos, layer").fetchall()
    con.close()
    L = len(run.layers)
    logits = np.array([r[1] for r in rows], dtype=np.float32).reshape(run.num_tokens, L, -1)
    return logits.transpose(1, 0, 2)  # [L, T, E]


def test_stats_mode_equals_the_aggregates_of_a_routes_run(tiny_model_dir, labelled_jsonl, tmp_path):
    routes_db, stats_db = tmp_path / "routes.duckdb", tmp_path / "stats.duckdb"
    moelens.trace(str(tiny_model_dir), str(labelled_jsonl), out=str(routes_db), logits=True, batch_size=3,
                  progress=False)
    summary = moelens.trace(str(tiny_model_dir), str(labelled_jsonl), out=str(stats_db), mode="stats", batch_size=3,
                            progress=False)
    assert summary.routes == 0
    run = load_routing(routes_db)
    E, L = run.num_experts, len(run.layers)
    con = duckdb.connect(str(stats_db), read_only=True)
    assert con.execute("SELECT count(*) FROM tokens").fetchone()[0] == 0  # nothing per token is kept
    docs = run.documents
    language = dict(zip(docs["doc_id"].to_list(), docs["language"].to_list()))
    tok_lang = np.array([language[d] for d in run.doc_id.tolist()])
    for li, layer in enumerate(run.layers.tolist()):
        ids = run.experts[li].astype(np.int64)
        overall = np.bincount(ids[ids >= 0], minlength=E)
        got = dict(con.execute("SELECT expert, count FROM stats_expert_counts WHERE layer = ? AND label_kind = 'all'",
                               [layer]).fetchall())
        assert [got.get(e, 0) for e in range(E)] == overall.tolist()
        for lang in set(tok_lang.tolist()):
            sub = ids[tok_lang == lang]
            expected = np.bincount(sub[sub >= 0], minlength=E)
            got = dict(con.execute("SELECT expert, count FROM stats_expert_counts WHERE layer = ? AND "
                                   "label_kind = 'language' AND label = ?", [layer, lang]).fetchall())
            assert [got.get(e, 0) for e in range(E)] == expected.tolist()
            tokens = con.execute("SELECT tokens FROM stats_tokens WHERE layer = ? AND label_kind = 'language' AND "
                                 "label = ?", [layer, lang]).fetchone()[0]
            assert tokens == int((tok_lang == lang).sum())
        co = np.zeros((E, E), dtype=np.int64)
        for row in ids:  # every ordered pair of a token's experts, both orders and the diagonal
            for a in row:
                for b in row:
                    co[a, b] += 1
        got = np.zeros((E, E), dtype=np.int64)
        for a, b, c in con.execute("SELECT expert_a, expert_b, count FROM stats_coactivation WHERE layer = ?",
                                   [layer]).fetchall():
            got[a, b] = c
        assert np.array_equal(got, co)
    # entropy histograms: entropy of softmax(logits) in nats, 32 equal bins over [0, log E]
    logits = _logits_by_layer(routes_db, run)
    for li, layer in enumerate(run.layers.tolist()):
        p = torch.softmax(torch.from_numpy(logits[li]), dim=-1)
        h = -(p * torch.log(p.clamp_min(1e-30))).sum(-1).numpy()
        bins = np.clip(np.floor(h * (32 / math.log(E))), 0, 31).astype(int)
        expected = np.bincount(bins, minlength=32)
        got = dict(con.execute("SELECT bin, count FROM stats_entropy WHERE layer = ? AND label_kind = 'all'",
                               [layer]).fetchall())
        got_arr = np.array([got.get(b, 0) for b in range(32)])
        assert got_arr.sum() == run.num_tokens
        # bins agree except where an entropy sits within float rounding of a bin edge
        edge = np.abs(h * (32 / math.log(E)) - np.round(h * (32 / math.log(E)))) < 1e-4
        assert np.abs(got_arr - expected).sum() <= 2 * edge.sum()
    con.close()


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_triton_path_writes_exactly_the_rows_of_the_torch_path(tiny_model_dir, labelled_jsonl, tmp_path):
    torch_db, triton_db = tmp_path / "torch.duckdb", tmp_path / "triton.duckdb"
    moelens.trace(str(tiny_model_dir), str(labelled_jsonl), out=str(torch_db), max_docs=8, batch_size=3,
                  logits=True, progress=False)
    # the Triton interpreter runs the kernels on CPU; it must be chosen before triton is imported
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "moelens", "trace", str(tiny_model_dir), str(labelled_jsonl),
                             "--out", str(triton_db), "--max-docs", "8", "--batch-size", "3", "--capture", "triton",
                             "--no-progress"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    a, b = load_routing(torch_db), load_routing(triton_db)
    assert np.array_equal(a.token_id, b.token_id)
    assert np.array_equal(a.experts, b.experts) and np.array_equal(a.weights, b.weights)
    # the record kernels also measured each token's router entropy, margin and logsumexp
    logits = torch.from_numpy(_logits_by_layer(torch_db, a))
    p = torch.softmax(logits, dim=-1)
    top2 = p.topk(2, dim=-1).values
    con = duckdb.connect(str(triton_db), read_only=True)
    conf = con.execute("SELECT entropy, margin, lse FROM router_confidence ORDER BY doc_id, pos, layer").fetchnumpy()
    con.close()
    L = len(a.layers)
    entropy = -(p * torch.log(p)).sum(-1).numpy()
    np.testing.assert_allclose(conf["entropy"].reshape(a.num_tokens, L).T, entropy, atol=1e-5)
    np.testing.assert_allclose(conf["margin"].reshape(a.num_tokens, L).T, (top2[..., 0] - top2[..., 1]).numpy(),
                               atol=1e-6)
    np.testing.assert_allclose(conf["lse"].reshape(a.num_tokens, L).T, torch.logsumexp(logits, -1).numpy(),
                               atol=1e-5)


def test_report_of_a_stats_run_matches_the_routes_report(tiny_model_dir, labelled_jsonl, tmp_path):
    from moelens.analysis.report import build_report

    routes_db, stats_db = tmp_path / "r.duckdb", tmp_path / "s.duckdb"
    moelens.trace(str(tiny_model_dir), str(labelled_jsonl), out=str(routes_db), progress=False)
    moelens.trace(str(tiny_model_dir), str(labelled_jsonl), out=str(stats_db), mode="stats", progress=False)
    full, agg = build_report(str(routes_db)).data, build_report(str(stats_db)).data
    assert agg["run"]["mode"] == "stats" and agg["specialization"] == {}
    assert [r["layer"] for r in agg["layers"]] == [r["layer"] for r in full["layers"]]
    for a, b in zip(agg["layers"], full["layers"]):
        assert a["tokens"] == b["tokens"]
        np.testing.assert_allclose(a["load"], b["load"], rtol=1e-12)
        for key in ("max_over_mean", "effective_experts", "gini", "entropy_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-9)
        assert a["dead_experts"] == b["dead_experts"] and a["collapsed"] == b["collapsed"]
    run = load_routing(routes_db)
    languages = dict(zip(run.documents["doc_id"].to_list(), run.documents["language"].to_list()))
    tok_lang = np.array([languages[d] for d in run.doc_id.tolist()])
    for row in agg["label_profile"]["language"][:5]:  # share and lift recomputed from the routes run
        li = run.layer_index(row["layer"])
        has = (run.experts[li] == row["expert"]).any(-1)
        share = has[tok_lang == row["value"]].mean()
        assert row["share"] == pytest.approx(share)
        assert row["lift"] == pytest.approx(share / has.mean())
