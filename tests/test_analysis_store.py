"""The bulk reader ``load_routing`` (and ``load_logits``, ``save_routing``) against the public SQL views."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from moelens.analysis import from_arrays
from moelens.store import Store, TraceWriter, WriteBatch
from moelens.store.arrays import load_logits, load_routing, save_routing


def _write(path, rng, *, shuffle: bool, logits: bool = False):
    """3 layers (sites 0, 1, 2 at decoder layers 1, 4, 7), k = 3 of E = 6, 5 documents of uneven length.
    Rows go in shuffled order, site 2 misses the rows of document 3, and some choices are dropped."""
    E, k = 6, 3
    sites = [{"site": s, "path": f"m.layers.{l}.gate", "layer": l, "tag": "mlp", "primary": True,
              "num_experts": E, "top_k": k} for s, l in enumerate((1, 4, 7))]
    meta = {"family": "test", "scoring": "softmax", "logits_kind": "logits", "num_layers": 8,
            "moe_layers": [1, 4, 7], "num_experts": E, "top_k": k, "num_shared_experts": 0, "sites": sites}
    store = Store(path)
    run = store.create_run(run_id="r", model="m", dataset="d", dtype="float32", revision=None, plan_meta=meta,
                           config={}, logits_width=E if logits else None)
    writer = TraceWriter(store, run, table_k=k)
    lengths = [4, 1, 7, 3, 5]
    for batch_docs in ([0, 2], [1, 3, 4]):
        docs, tok_doc, tok_pos, rows = [], [], [], []
        for d in batch_docs:
            docs.append({"doc_id": d * 10, "domain": "abc"[d % 3], "n_tokens": lengths[d], "meta": {"i": d}})
            tok_doc += [d * 10] * lengths[d]
            tok_pos += list(range(lengths[d]))
            for s in range(3):
                if s == 2 and d == 3:
                    continue
                rows += [(d * 10, p, s) for p in range(lengths[d])]
        rows = np.array(rows)
        if shuffle:
            rows = rows[rng.permutation(len(rows))]
        experts = np.argsort(rng.random((len(rows), E)), axis=1)[:, :k].astype(np.int16)
        experts[rng.random(len(rows)) < 0.2, 2] = -1
        writer.submit(WriteBatch(
            documents=docs, token_doc=np.array(tok_doc), token_pos=np.array(tok_pos, np.int32),
            token_id=rng.integers(0, 50, len(tok_doc)).astype(np.int32),
            route_doc=rows[:, 0].astype(np.int32), route_pos=rows[:, 1].astype(np.int32),
            route_site=rows[:, 2].astype(np.int16), experts=experts,
            weights=rng.random((len(rows), k)).astype(np.float32),
            logits=rng.standard_normal((len(rows), E)).astype(np.float32) if logits else None))
    writer.close()
    store.set_status("r", "complete")
    store.close()


def _view(path, layers=(1, 4, 7)):
    """Dense arrays built from the SQL ``routes`` view: the independent oracle."""
    con = duckdb.connect(str(path), read_only=True)
    toks = con.execute("SELECT doc_id, pos FROM tokens ORDER BY doc_id, pos").fetchall()
    index = {t: i for i, t in enumerate(toks)}
    rows = con.execute("SELECT doc_id, pos, layer, rank, expert, weight FROM routes").fetchall()
    con.close()
    L = {layer: i for i, layer in enumerate(layers)}
    e = np.full((len(L), len(toks), 3), -1, np.int16)
    w = np.zeros((len(L), len(toks), 3), np.float32)
    for doc, pos, layer, rank, expert, weight in rows:
        if layer in L:
            e[L[layer], index[(doc, pos)], rank] = -1 if expert is None else expert
            w[L[layer], index[(doc, pos)], rank] = weight
    return e, w, toks


@pytest.mark.parametrize("shuffle", [False, True])
def test_load_routing_equals_the_routes_view(tmp_path, shuffle):
    path = tmp_path / "r.duckdb"
    _write(path, np.random.default_rng(1), shuffle=shuffle)
    run = load_routing(path)
    e, w, toks = _view(path)
    assert run.layers.tolist() == [1, 4, 7] and run.num_experts == 6 and run.top_k == 3
    assert list(zip(run.doc_id.tolist(), run.pos.tolist())) == toks
    assert np.array_equal(run.experts, e) and np.array_equal(run.weights, w)
    assert (run.experts[2][run.doc_id == 30] == -1).all()  # rows never written stay -1
    assert run.documents["doc_id"].to_list() == [0, 10, 20, 30, 40]
    sub = load_routing(path, layers=[7, 1], weights=False)
    assert sub.layers.tolist() == [1, 7] and sub.weights is None and np.array_equal(sub.experts, e[[0, 2]])
    first = load_routing(path, max_docs=2)
    assert first.documents["doc_id"].to_list() == [0, 10] and np.array_equal(first.experts, e[:, :5])


def test_load_logits_equals_the_router_logits_view(tmp_path):
    path = tmp_path / "l.duckdb"
    _write(path, np.random.default_rng(2), shuffle=True, logits=True)
    run = load_routing(path, weights=False)
    con = duckdb.connect(str(path), read_only=True)
    rows = con.execute("SELECT doc_id, pos, logits FROM router_logits WHERE layer = 4").fetchall()
    con.close()
    index = {t: i for i, t in enumerate(zip(run.doc_id.tolist(), run.pos.tolist()))}
    expected = np.full((run.num_tokens, 6), np.nan, np.float32)
    for doc, pos, logits in rows:
        expected[index[(doc, pos)]] = logits
    assert np.array_equal(load_logits(path, run, 4), expected, equal_nan=True)


def test_save_routing_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    e = np.argsort(rng.random((2, 30, 5)), axis=2)[:, :, :2].astype(np.int16)
    e[0, 4, 1] = -1
    routing = from_arrays(e, num_experts=5, doc_id=np.repeat([3, 8, 9], 10), token_id=rng.integers(0, 9, 30),
                          layers=[2, 6], documents=[{"doc_id": 3, "domain": "a", "meta": {"t": "x"}},
                                                    {"doc_id": 8, "language": "fr"}, {"doc_id": 9}])
    save_routing(routing, tmp_path / "s.duckdb", run_id="saved")
    back = load_routing(tmp_path / "s.duckdb")
    assert back.run_id == "saved" and back.layers.tolist() == [2, 6]
    assert np.array_equal(back.experts, e) and np.array_equal(back.token_id, routing.token_id)
    assert back.documents.select("doc_id", "domain", "language", "n_tokens").rows() == [
        (3, "a", None, 10), (8, None, "fr", 10), (9, None, None, 10)]

