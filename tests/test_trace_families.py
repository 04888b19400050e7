"""`moelens trace` end to end on families with unusual routing: what is stored equals what capture saw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import moelens
from moelens.models.tiny import build_tiny_model
from moelens.store.arrays import load_logits, load_routing

FAMILIES = ["zaya", "doge", "longcat_flash", "llama4", "jetmoe", "dbrx", "switch_transformers", "gemma4",
            "deepseek_v3", "nllb_moe"]


@pytest.mark.parametrize("family", FAMILIES)
def test_trace_stores_what_capture_records(family, tmp_path, write_jsonl):
    model = build_tiny_model(family)
    model.save_pretrained(tmp_path / "model")
    vocab = model.get_input_embeddings().num_embeddings
    rng = np.random.default_rng(0)
    docs = [rng.integers(3, vocab, int(n)).tolist() for n in (9, 5, 12)]
    data = write_jsonl(tmp_path / "ids.jsonl", [{"input_ids": d} for d in docs])
    out = tmp_path / "t.duckdb"
    summary = moelens.trace(str(tmp_path / "model"), str(data), out=str(out), batch_size=1, logits=True,
                            progress=False)
    assert summary.documents == 3 and summary.status == "complete"
    run = load_routing(out)
    loaded = moelens.load_model(str(tmp_path / "model"))
    encoder_only = family in ("switch_transformers", "nllb_moe")
    for doc_id, ids in enumerate(docs):
        inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
        with moelens.capture(loaded.model, logits=True) as cap, torch.no_grad():
            (loaded.model.get_encoder() if encoder_only else loaded.model)(**inputs)
        routes = cap.routes().filter(cap.routes()["tag"] != "decoder").sort("layer", "pos", "rank")
        k = run.top_k
        expected = routes["expert"].fill_null(-1).to_numpy().reshape(len(run.layers), len(ids), -1)
        sel = run.doc_id == doc_id
        assert np.array_equal(run.experts[:, sel, :expected.shape[2]], expected)
        weights = routes["weight"].to_numpy().reshape(len(run.layers), len(ids), -1)
        assert np.array_equal(run.weights[:, sel, :weights.shape[2]], weights)
        assert k >= expected.shape[2]
        for li, layer in enumerate(run.layers.tolist()):  # stored logits equal the captured ones
            stored = load_logits(out, run, layer)[sel]
            captured = cap.router_logits(layer)
            assert np.array_equal(stored[:, :captured.shape[1]], captured)


@pytest.mark.families("inkling2_loop")
def test_looped_layers_record_every_pass_under_their_own_layer(tmp_path, write_jsonl):
    """inkling2_loop runs layers 1-2 twice per forward: every pass is stored under the layer's own index,
    with its pass number, equal to what that layer's experts module received on each call."""
    import duckdb

    model = build_tiny_model("inkling2_loop")
    assert (model.config.loop_layer_index_start, model.config.loop_layer_index_end,
            model.config.loop_num_passes) == (1, 3, 2)
    model.save_pretrained(tmp_path / "model")
    ids = np.random.default_rng(1).integers(3, model.config.vocab_size, 11).tolist()
    data = write_jsonl(tmp_path / "ids.jsonl", [{"input_ids": ids}])
    out = tmp_path / "loop.duckdb"
    moelens.trace(str(tmp_path / "model"), str(data), out=str(out), batch_size=1, progress=False)

    # oracle: what each layer's experts module received, call by call, in a plain forward
    loaded = moelens.load_model(str(tmp_path / "model")).model
    calls: dict[int, list] = {}
    handles = [layer.mlp.experts.register_forward_pre_hook(
        lambda m, args, i=i: calls.setdefault(i, []).append((args[1].clone(), args[2].clone())))
        for i, layer in enumerate(loaded.model.layers)]
    try:
        with torch.no_grad():
            loaded(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    finally:
        for h in handles:
            h.remove()
    assert [len(calls[i]) for i in range(4)] == [1, 2, 2, 1]

    con = duckdb.connect(str(out), read_only=True)
    assert con.execute("SELECT layer, pass FROM sites ORDER BY site").fetchall() == [
        (0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0)]
    for layer in range(4):
        for loop_pass, (want_ids, want_w) in enumerate(calls[layer]):
            rows = con.execute("SELECT expert, weight FROM routes_all WHERE layer = ? AND pass = ? ORDER BY pos, rank",
                               [layer, loop_pass]).fetchall()
            got = np.array(rows)
            assert np.array_equal(got[:, 0].reshape(len(ids), -1), want_ids.numpy())
            assert np.array_equal(got[:, 1].astype(np.float32).reshape(len(ids), -1), want_w.numpy())
    # the public routes view holds each pass's choices for the looped layer
    per_layer = dict(con.execute("SELECT layer, count(*) FROM routes GROUP BY layer").fetchall())
    k = model.config.num_experts_per_tok
    assert per_layer == {0: 11 * k, 1: 2 * 11 * k, 2: 2 * 11 * k, 3: 11 * k}
    con.close()
    run = load_routing(out)
    assert run.layers.tolist() == [0, 1, 1, 2, 2, 3] and run.passes.tolist() == [0, 0, 1, 0, 1, 0]
    assert np.array_equal(run.experts[2], calls[1][1][0].numpy())
