"""moelens.capture(): notebooks' entry point - generate(), padding, logits, metadata, cleanup."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import moelens
from moelens.models.discover import plan_model
from moelens.models.tiny import build_tiny_model, tiny_inputs


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_captured_logits_and_ids_match_output_router_logits():
    """transformers' own output_router_logits is an independent record of the router logits."""
    model = build_tiny_model("mixtral")
    inputs = tiny_inputs("mixtral", model)
    with moelens.capture(model, logits=True) as cap, torch.no_grad():
        out = model(**inputs, output_router_logits=True)
    k = model.config.num_experts_per_tok
    routes = cap.routes()
    for layer, hf_logits in enumerate(out.router_logits):
        assert np.array_equal(cap.router_logits(layer), hf_logits.float().numpy())
        # Mixtral routes by softmax -> top-k -> renormalise (the documented rule)
        probs = hf_logits.float().softmax(-1)
        top_w, top_i = probs.topk(k, dim=-1)
        top_w = top_w / top_w.sum(-1, keepdim=True)
        got = routes.filter(routes["layer"] == layer).sort("row", "pos", "rank")
        expected_rows = inputs["attention_mask"].reshape(-1).bool()
        assert np.array_equal(got["expert"].to_numpy().reshape(-1, k), top_i[expected_rows].numpy())
        np.testing.assert_allclose(got["weight"].to_numpy().reshape(-1, k), top_w[expected_rows].numpy(), rtol=1e-6)


def test_generate_records_prefill_and_each_decode_step():
    model = build_tiny_model("qwen3_moe")
    ids = torch.randint(0, model.config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding, as generate() expects
    calls = []
    handle = model.model.layers[-1].mlp.gate.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        with moelens.capture(model) as cap, torch.no_grad():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
    finally:
        handle.remove()
    tokens = cap.tokens()
    assert calls == [12, 2, 2, 2]  # router rows seen per forward, including padding
    assert tokens["phase"].to_list().count("prefill") == int(mask.sum())  # padding never recorded
    decode = tokens.filter(tokens["phase"] == "decode").sort("step", "row")
    assert decode["step"].unique().sort().to_list() == [1, 2, 3]
    # positions count real tokens only: row 0 has 6 prompt tokens, row 1 has 4
    assert decode.filter(decode["row"] == 0)["pos"].to_list() == [6, 7, 8]
    assert decode.filter(decode["row"] == 1)["pos"].to_list() == [4, 5, 6]
    # the decode steps saw exactly the tokens generate() produced
    assert decode.filter(decode["row"] == 0)["token_id"].to_list() == out[0, 6:9].tolist()
    routes = cap.routes()
    n_layers = len(plan_model(model).moe_layers)
    assert routes.height == (int(mask.sum()) + 2 * 3) * n_layers * model.config.num_experts_per_tok


def test_padding_is_never_recorded_and_does_not_change_routes():
    model = build_tiny_model("deepseek_v3")
    gen = torch.Generator().manual_seed(3)
    a = torch.randint(0, model.config.vocab_size, (1, 10), generator=gen)
    b = torch.randint(0, model.config.vocab_size, (1, 6), generator=gen)
    batch = torch.zeros(2, 10, dtype=torch.long)
    batch[0], batch[1, :6] = a[0], b[0]
    mask = torch.zeros_like(batch)
    mask[0], mask[1, :6] = 1, 1
    with moelens.capture(model) as cap, torch.no_grad():
        model(input_ids=batch, attention_mask=mask)
    with moelens.capture(model) as alone, torch.no_grad():
        model(input_ids=b, attention_mask=torch.ones_like(b))
    routes = cap.routes()
    k = model.config.num_experts_per_tok
    per_layer = routes.group_by("layer").len()
    assert set(per_layer["len"].to_list()) == {16 * k}
    padded_doc = routes.filter(routes["row"] == 1).sort("layer", "pos", "rank")
    single = alone.routes().sort("layer", "pos", "rank")
    assert padded_doc["pos"].max() == 5
    assert padded_doc["expert"].to_list() == single["expert"].to_list()
    np.testing.assert_allclose(padded_doc["weight"].to_numpy(), single["weight"].to_numpy(), rtol=1e-5)


def test_hooks_are_removed_when_the_forward_raises():
    model = build_tiny_model("olmoe")
    before = _hook_count(model)
    boom = model.model.layers[1].register_forward_pre_hook(lambda m, a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        with moelens.capture(model), torch.no_grad():
            model(**tiny_inputs("olmoe", model))
    boom.remove()
    assert _hook_count(model) == before


@pytest.mark.parametrize("family, dense, shared, scoring", [
    ("mixtral", [], 0, "softmax"),
    ("deepseek_v3", None, None, "sigmoid"),
    ("qwen2_moe", None, 1, "softmax"),
    ("jamba", None, 0, "softmax"),
])
def test_metadata_records_dense_layers_shared_experts_k_and_scoring(family, dense, shared, scoring):
    model = build_tiny_model(family)
    cfg = model.config
    meta = plan_model(model).metadata()
    if family == "deepseek_v3":
        dense = list(range(cfg.first_k_dense_replace))
        shared = cfg.n_shared_experts
    elif family == "qwen2_moe":
        dense = [i for i in range(cfg.num_hidden_layers)
                 if i in cfg.mlp_only_layers or (i + 1) % cfg.decoder_sparse_step != 0]
    elif family == "jamba":
        dense = [i for i in range(cfg.num_hidden_layers)
                 if i % cfg.expert_layer_period != cfg.expert_layer_offset]
    assert meta["dense_layers"] == dense
    assert meta["moe_layers"] == [i for i in range(cfg.num_hidden_layers) if i not in dense]
    assert meta["num_shared_experts"] == shared
    assert meta["scoring"] == scoring
    assert meta["top_k"] == cfg.num_experts_per_tok
    assert meta["family"] == family


def test_non_moe_model_and_unknown_architecture_raise_typed_errors():
    import transformers

    from moelens.errors import NotMoEModelError, UnknownArchitectureError

    dense = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2))
    with pytest.raises(NotMoEModelError, match="no Mixture-of-Experts layers"):
        moelens.capture(dense).__enter__()

    class FakeConfig:
        model_type = "brand_new_moe"
        num_experts = 16

    class Unknown(torch.nn.Module):
        config = FakeConfig()

    with pytest.raises(UnknownArchitectureError, match="moelens families"):
        plan_model(Unknown())
