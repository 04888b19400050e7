"""The nnsight backend yields the same records as the torch hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import moelens
from moelens.hooks import attach
from moelens.models.discover import plan_model
from moelens.models.tiny import build_tiny_model, tiny_inputs
from moelens.store.arrays import load_routing

pytest.importorskip("nnsight")

from moelens.hooks.nnsight_backend import NNsightRunner  # noqa: E402


class ListSink:
    def __init__(self):
        self.steps, self.events = [], []

    def on_step(self, ctx):
        self.steps.append(ctx)

    def on_route(self, event):
        self.events.append(event)


@pytest.mark.parametrize("family", ["mixtral", "qwen3_moe", "deepseek_v3", "gpt_oss", "llama4", "jetmoe", "dbrx",
                                    "doge", "zaya"])
def test_nnsight_events_equal_torch_hook_events(family):
    model = build_tiny_model(family)
    inputs = tiny_inputs(family, model)
    plan = plan_model(model)
    hooked, traced = ListSink(), ListSink()
    with torch.no_grad():
        with attach(model, plan, hooked, logits=True):
            model(**inputs)
        NNsightRunner(model, plan, traced, logits=True)(**inputs)
    a = {e.site: e for e in hooked.events}
    b = {e.site: e for e in traced.events}
    assert set(a) == set(b) and a
    for site in a:
        assert torch.equal(a[site].experts, b[site].experts)
        assert torch.equal(a[site].weights, b[site].weights)
        assert torch.equal(a[site].logits, b[site].logits)
    assert torch.equal(hooked.steps[0].positions, traced.steps[0].positions)
    assert torch.equal(hooked.steps[0].valid, traced.steps[0].valid)


def test_trace_with_nnsight_backend_writes_the_same_rows(tiny_model_dir, labelled_jsonl, tmp_path):
    a, b = tmp_path / "torch.duckdb", tmp_path / "nnsight.duckdb"
    moelens.trace(str(tiny_model_dir), str(labelled_jsonl), out=str(a), batch_size=4, max_docs=8, progress=False)
    moelens.trace(str(tiny_model_dir), str(labelled_jsonl), out=str(b), batch_size=4, max_docs=8, progress=False,
                  backend="nnsight")
    ra, rb = load_routing(a), load_routing(b)
    assert np.array_equal(ra.token_id, rb.token_id)
    assert np.array_equal(ra.experts, rb.experts) and np.array_equal(ra.weights, rb.weights)


def test_nnsight_backend_refuses_encoder_decoder_models():
    from moelens.errors import ConfigError

    model = build_tiny_model("switch_transformers")
    with pytest.raises(ConfigError, match="--backend torch"):
        NNsightRunner(model, plan_model(model), ListSink())
