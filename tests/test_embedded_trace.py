"""The embedded checkpoints trace end to end by short name, offline, from the installed package."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import moelens
from moelens.embedded import MODELS, eval_split_path, resolve
from moelens.store.arrays import load_routing


@pytest.mark.parametrize("name", sorted(MODELS))
def test_trace_a_handful_of_eval_documents(name, tmp_path):
    folder = resolve(name)
    assert folder is not None and (folder / "model.safetensors").is_file()
    out = tmp_path / "e.duckdb"
    summary = moelens.trace(name, str(eval_split_path()), out=str(out), max_docs=6, progress=False)
    assert summary.documents == 6 and summary.status == "complete"
    run = load_routing(out)
    assert run.config["model_location"] == str(folder)  # the short name resolved to the shipped folder
    assert run.num_experts == 16 and run.top_k == 2 and run.layers.tolist() == [0, 1, 2, 3]
    rows = [json.loads(line) for line in open(eval_split_path(), encoding="utf-8")][:6]
    assert run.documents["language"].to_list() == [r["language"] for r in rows]
    loaded = moelens.load_model(name)
    ids = run.token_id[run.doc_id == 0].tolist()
    assert ids == loaded.tokenizer(rows[0]["text"])["input_ids"]
    with moelens.capture(loaded.model) as cap, torch.no_grad():
        loaded.model(input_ids=torch.tensor([ids]))
    routes = cap.routes().sort("layer", "pos", "rank")
    assert np.array_equal(run.experts[:, run.doc_id == 0], routes["expert"].to_numpy().reshape(4, len(ids), 2))
