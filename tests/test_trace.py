"""moelens.trace / `moelens trace`: what lands in DuckDB equals what the model routed."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest
import torch

import moelens
from moelens.models.loading import load_model
from moelens.store.arrays import load_routing


def _capture_alone(model, ids):
    """Routes of one token sequence run alone (no padding): [layers, T, k] ids and weights."""
    with moelens.capture(model) as cap, torch.no_grad():
        model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    r = cap.routes().sort("layer", "pos", "rank")
    layers = r["layer"].unique().sort().to_list()
    k = int(r["rank"].max()) + 1
    e = r["expert"].to_numpy().reshape(len(layers), len(ids), k)
    w = r["weight"].to_numpy().reshape(len(layers), len(ids), k)
    return e, w


def test_trace_stores_exactly_what_the_model_routed(tiny_model_dir, labelled_jsonl, tmp_path):
    out = tmp_path / "runs.duckdb"
    summary = moelens.trace(str(tiny_model_dir), str(labelled_jsonl), out=str(out), batch_size=1,
                            max_length=512, progress=False)
    assert summary.documents == 20 and summary.skipped == 1 and summary.status == "complete"
    run = load_routing(out)
    loaded = load_model(str(tiny_model_dir))
    rows = [json.loads(line) for line in open(labelled_jsonl, encoding="utf-8")]
    docs = run.documents
    assert docs["doc_id"].to_list() == list(range(21))  # doc_id = row index in the data
    assert docs.filter(docs["doc_id"] == 5)["n_tokens"].item() == 0
    assert "empty" in docs.filter(docs["doc_id"] == 5)["meta"].item()
    for doc_id in (0, 3, 4, 13):
        ids = loaded.tokenizer(rows[doc_id]["text"])["input_ids"]
        sel = run.doc_id == doc_id
        assert run.token_id[sel].tolist() == ids
        assert run.pos[sel].tolist() == list(range(len(ids)))
        e, w = _capture_alone(loaded.model, ids)
        assert np.array_equal(run.experts[:, sel], e)
        assert np.array_equal(run.weights[:, sel], w)
        doc = docs.filter(docs["doc_id"] == doc_id)
        assert doc["language"].item() == rows[doc_id]["language"]
        assert doc["domain"].item() == rows[doc_id]["domain"]
        assert json.loads(doc["meta"].item()) == {"licence": "CC0", "n": doc_id}


def test_long_documents_are_windowed_with_absolute_positions(tiny_model_dir, labelled_jsonl, tmp_path):
    out = tmp_path / "w.duckdb"
    moelens.trace(str(tiny_model_dir), str(labelled_jsonl), out=str(out), batch_size=3, max_length=8,
                  max_docs=5, progress=False)
    run = load_routing(out)
    loaded = load_model(str(tiny_model_dir))
    sel = run.doc_id == 2
    ids = run.token_id[sel].tolist()
    assert len(ids) > 16 and run.pos[sel].tolist() == list(range(len(ids)))
    for start in (0, 8, 16):  # each window is routed on its own, positions stay absolute
        e, _ = _capture_alone(loaded.model, ids[start:start + 8])
        assert np.array_equal(run.experts[:, sel][:, start:start + 8], e)


def test_sql_view_equals_the_arrays_and_parquet_export(tiny_model_dir, labelled_jsonl, tmp_path):
    out = tmp_path / "v.duckdb"
    moelens.trace(str(tiny_model_dir), str(labelled_jsonl), out=str(out), batch_size=4, max_docs=6, progress=False)
    run = load_routing(out)
    con = duckdb.connect(str(out), read_only=True)
    view = con.execute("SELECT expert, weight FROM routes ORDER BY doc_id, pos, layer, rank").fetchnumpy()
    con.close()
    assert np.array_equal(view["expert"], run.experts.transpose(1, 0, 2).reshape(-1))
    assert np.array_equal(view["weight"], run.weights.transpose(1, 0, 2).reshape(-1))
    from moelens.cli import main

    assert main(["export", str(out), "--parquet", str(tmp_path / "pq")]) == 0
    pq = duckdb.connect()
    parquet = pq.execute(f"SELECT expert, weight FROM read_parquet('{tmp_path}/pq/routes/*/*/*.parquet', "
                         "hive_partitioning = true) ORDER BY doc_id, pos, layer, rank").fetchnumpy()
    assert np.array_equal(parquet["expert"], view["expert"]) and np.array_equal(parquet["weight"], view["weight"])
    n_docs = pq.execute(f"SELECT count(*) FROM '{tmp_path}/pq/documents/*/*.parquet'").fetchone()[0]
    assert n_docs == 6


def test_input_ids_are_traced_as_given(tiny_model_dir, tmp_path, write_jsonl):
    data = write_jsonl(tmp_path / "ids.jsonl", [{"input_ids": [5, 6, 7, 8, 9], "language": "xx"},
                                               {"input_ids": [10, 11, 12], "language": "yy"}])
    out = tmp_path / "ids.duckdb"
    moelens.trace(str(tiny_model_dir), str(data), out=str(out), progress=False)
    run = load_routing(out)
    assert run.token_id.tolist() == [5, 6, 7, 8, 9, 10, 11, 12]
    loaded = load_model(str(tiny_model_dir))
    e, _ = _capture_alone(loaded.model, [10, 11, 12])
    assert np.array_equal(run.experts[:, run.doc_id == 1], e)


def test_batched_trace_agrees_with_one_document_at_a_time_up_to_near_ties(tiny_model_dir, labelled_jsonl, tmp_path):
    """Padding and batching change float rounding only: choices may differ only at near-ties."""
    one = tmp_path / "one.duckdb"
    many = tmp_path / "many.duckdb"
    moelens.trace(str(tiny_model_dir), str(labelled_jsonl), out=str(one), batch_size=1, progress=False, logits=True)
    moelens.trace(str(tiny_model_dir), str(labelled_jsonl), out=str(many), batch_size=7, progress=False)
    a, b = load_routing(one), load_routing(many)
    same_set = np.sort(a.experts, axis=-1) == np.sort(b.experts, axis=-1)
    differing = ~same_set.all(axis=-1)  # [L, T]
    con = duckdb.connect(str(one), read_only=True)
    logits = con.execute("SELECT logits FROM router_logits ORDER BY doc_id, pos, layer").fetchnumpy()["logits"]
    con.close()
    lg = np.stack(logits).reshape(a.num_tokens, len(a.layers), -1).transpose(1, 0, 2)
    srt = -np.sort(-lg, axis=-1)
    gap = srt[..., a.top_k - 1] - srt[..., a.top_k]  # margin between the k-th and (k+1)-th logit
    assert differing.mean() < 0.01
    assert np.all(gap[differing] < 1e-4)
    same = ~differing
    np.testing.assert_allclose(np.sort(a.weights, -1)[same], np.sort(b.weights, -1)[same], atol=1e-5)


def test_token_texts_decode_to_the_document(tiny_model_dir, tmp_path, write_jsonl):
    from moelens.tokentext import decode

    texts = ["Я люблю ¿qué? 東京 — naïve café 🙂", "plain ascii text"]
    data = write_jsonl(tmp_path / "mb.jsonl", [{"text": t} for t in texts])
    out = tmp_path / "mb.duckdb"
    moelens.trace(str(tiny_model_dir), str(data), out=str(out), progress=False)
    con = duckdb.connect(str(out), read_only=True)
    for doc_id, text in enumerate(texts):
        pieces = [r[0] for r in con.execute("SELECT token FROM tokens WHERE doc_id = ? ORDER BY pos", [doc_id]).fetchall()]
        assert all(pieces) and decode(pieces) == text  # characters cut by byte-level tokens: <0x..> bytes
    con.close()
