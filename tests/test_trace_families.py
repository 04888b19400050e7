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
