"""Tiny random models: every MoE family builds, runs, routes for real, and matches the survey.

The expectations come from the capture survey (Table 1 of
``reference/transformers-moe-families.md``, transformers 5.23) and, for the families transformers
5.24 added, from its modeling files; they are copied here as literals so that the module under
test is checked against an independent source, not against its own table.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from moelens.errors import ConfigError, UnknownArchitectureError  # noqa: E402
from moelens.models import tiny  # noqa: E402

# family -> (model class, #experts key, top-k key, router classes), survey Table 1, in its order
TABLE1: dict[str, tuple[str, str, str | None, tuple[str, ...]]] = {
    "mixtral": ("MixtralForCausalLM", "num_local_experts", "num_experts_per_tok", ("MixtralTopKRouter",)),
    "minimax": ("MiniMaxForCausalLM", "num_local_experts", "num_experts_per_tok", ("MiniMaxTopKRouter",)),
    "qwen2_moe": ("Qwen2MoeForCausalLM", "num_experts", "num_experts_per_tok", ("Qwen2MoeTopKRouter",)),
    "qwen3_moe": ("Qwen3MoeForCausalLM", "num_experts", "num_experts_per_tok", ("Qwen3MoeTopKRouter",)),
    "qwen3_next": ("Qwen3NextForCausalLM", "num_experts", "num_experts_per_tok", ("Qwen3NextTopKRouter",)),
    "qwen3_5_moe": ("Qwen3_5MoeForCausalLM", "num_experts", "num_experts_per_tok", ("Qwen3_5MoeTopKRouter",)),
    "qwen4_exp": ("Qwen4ExpForCausalLM", "num_experts", "num_experts_per_tok", ("Qwen4ExpTextTopKRouter",)),
    "qwen3_vl_moe": ("Qwen3VLMoeTextModel", "num_experts", "num_experts_per_tok", ("Qwen3VLMoeTextTopKRouter",)),
    "qwen3_omni_moe": (
        "Qwen3OmniMoeThinkerTextModel", "num_experts", "num_experts_per_tok", ("Qwen3OmniMoeThinkerTextTopKRouter",)
    ),
    "olmoe": ("OlmoeForCausalLM", "num_experts", "num_experts_per_tok", ("OlmoeTopKRouter",)),
    "flex_olmo": ("FlexOlmoForCausalLM", "num_experts", "num_experts_per_tok", ("FlexOlmoTopKRouter",)),
    "mellum": ("MellumForCausalLM", "num_experts", "num_experts_per_tok", ("MellumTopKRouter",)),
    "jamba": ("JambaForCausalLM", "num_experts", "num_experts_per_tok", ("JambaTopKRouter",)),
    # transformers 5.24 (modeling_lara_mini.py: LaraMiniSparseMoeBlock.gate)
    "lara_mini": ("LaraMiniForCausalLM", "num_experts", "num_experts_per_tok", ("LaraMiniTopKRouter",)),
    "hunyuan_v1_moe": ("HunYuanMoEV1ForCausalLM", "num_experts", "moe_topk", ("HunYuanMoEV1Gate",)),
    "dbrx": ("DbrxForCausalLM", "ffn_config.moe_num_experts", "ffn_config.moe_top_k", ("DbrxRouter",)),
    "gemma4": ("Gemma4ForCausalLM", "num_experts", "top_k_experts", ("Gemma4TextRouter",)),
    "diffusion_gemma": (
        "DiffusionGemmaEncoderTextModel", "num_experts", "top_k_experts", ("DiffusionGemmaTextRouter",)
    ),
    "ernie4_5_moe": ("Ernie4_5_MoeForCausalLM", "moe_num_experts", "moe_k", ("Ernie4_5_MoeTopKRouter",)),
    "ernie4_5_vl_moe": ("Ernie4_5_VLMoeTextModel", "moe_num_experts", "moe_k", ("Ernie4_5_VLMoeMoeTopKRouter",)),
    "gpt_oss": ("GptOssForCausalLM", "num_local_experts", "num_experts_per_tok", ("GptOssTopKRouter",)),
    "openai_privacy_filter": (
        "OpenAIPrivacyFilterForTokenClassification", "num_local_experts", "num_experts_per_tok",
        ("OpenAIPrivacyFilterTopKRouter",),
    ),
    "granitemoe": ("GraniteMoeForCausalLM", "num_local_experts", "num_experts_per_tok", ("GraniteMoeTopKRouter",)),
    "granitemoeshared": (
        "GraniteMoeSharedForCausalLM", "num_local_experts", "num_experts_per_tok", ("GraniteMoeSharedTopKRouter",)
    ),
    "granitemoe_swa": (
        "GraniteMoeSWAForCausalLM", "num_local_experts", "num_experts_per_tok", ("GraniteMoeSWATopKRouter",)
    ),
    "granitemoehybrid": (
        "GraniteMoeHybridForCausalLM", "num_local_experts", "num_experts_per_tok", ("GraniteMoeHybridTopKRouter",)
    ),
    "aria": ("AriaTextForCausalLM", "moe_num_experts", "moe_topk", ("AriaTextTopKRouter",)),
    "jetmoe": ("JetMoeForCausalLM", "num_local_experts", "num_experts_per_tok", ("JetMoeTopKGating",)),
    "cohere2_moe": ("Cohere2MoeForCausalLM", "num_experts", "num_experts_per_tok", ("Cohere2MoeTopKRouter",)),
    "minimax_m2": ("MiniMaxM2ForCausalLM", "num_local_experts", "num_experts_per_tok", ("MiniMaxM2TopKRouter",)),
    "minimax_m3_vl": (
        "MiniMaxM3VLForCausalLM", "num_local_experts", "num_experts_per_tok", ("MiniMaxM3VLTopKRouter",)
    ),
    "step3p7": ("Step3p7TextModel", "n_routed_experts", "num_experts_per_tok", ("Step3p7TopKRouter",)),
    "laguna": ("LagunaForCausalLM", "num_experts", "num_experts_per_tok", ("LagunaTopKRouter",)),
    "hy_v3": ("HYV3ForCausalLM", "num_experts", "num_experts_per_tok", ("HYV3TopKRouter",)),
    "afmoe": ("AfmoeForCausalLM", "num_experts", "num_experts_per_tok", ("AfmoeTokenChoiceRouter",)),
    "lfm2_moe": ("Lfm2MoeForCausalLM", "num_experts", "num_experts_per_tok", ("Lfm2MoeTopKRouter",)),
    "inkling": ("InklingForCausalLM", "n_routed_experts", "num_experts_per_tok", ("InklingTopkRouter",)),
    "inkling2": ("Inkling2ForCausalLM", "n_routed_experts", "num_experts_per_tok", ("Inkling2TopKRouter",)),
    # transformers 5.24 (modeling_inkling2_loop.py: Inkling2LoopSparseMoeBlock.gate; layers looped)
    "inkling2_loop": ("Inkling2LoopForCausalLM", "n_routed_experts", "num_experts_per_tok", ("Inkling2LoopTopKRouter",)),
    "deepseek_v4": (
        "DeepseekV4ForCausalLM", "n_routed_experts", "num_experts_per_tok",
        ("DeepseekV4HashRouter", "DeepseekV4TopKRouter"),
    ),
    "muse_spark": ("MuseSparkTextModel", "num_local_experts", "num_experts_per_tok", ("MuseSparkTopkRouter",)),
    "kolibri1": ("Kolibri1ForCausalLM", "num_experts", "num_experts_per_tok", ("Kolibri1TopKRouter",)),
    # transformers 5.25 (modeling_kolibri1_1.py, modeling_ergo.py)
    "kolibri1_1": ("Kolibri1_1ForCausalLM", "num_experts", "num_experts_per_tok", ("Kolibri1_1TopKRouter",)),
    "ergo": ("ErgoForCausalLM", "num_experts", "num_experts_per_tok", ("ErgoTopkRouter",)),
    "flint": ("FlintForCausalLM", "num_experts", "num_experts_per_tok", ("FlintTopKRouter",)),
    "deepseek_v3": ("DeepseekV3ForCausalLM", "n_routed_experts", "num_experts_per_tok", ("DeepseekV3TopkRouter",)),
    "deepseek_v32": (
        "DeepseekV32ForCausalLM", "n_routed_experts", "num_experts_per_tok", ("DeepseekV32TopkRouter",)
    ),
    "glm4_moe": ("Glm4MoeForCausalLM", "n_routed_experts", "num_experts_per_tok", ("Glm4MoeTopkRouter",)),
    # transformers 5.25: param2moe's config builds glm4_moe's classes (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES);
    # modeling_minicpm5_moe.py
    "param2moe": ("Glm4MoeForCausalLM", "n_routed_experts", "num_experts_per_tok", ("Glm4MoeTopkRouter",)),
    "minicpm5_moe": ("MiniCPM5MoeForCausalLM", "n_routed_experts", "num_experts_per_tok", ("MiniCPM5MoeTopkRouter",)),
    "glm4_moe_lite": (
        "Glm4MoeLiteForCausalLM", "n_routed_experts", "num_experts_per_tok", ("Glm4MoeLiteTopkRouter",)
    ),
    "glm4v_moe": ("Glm4vMoeTextModel", "n_routed_experts", "num_experts_per_tok", ("Glm4vMoeTextTopkRouter",)),
    "glm5_next": ("Glm5NextTextModel", "n_routed_experts", "num_experts_per_tok", ("Glm5NextTextTopkRouter",)),
    "glm_moe_dsa": ("GlmMoeDsaForCausalLM", "n_routed_experts", "num_experts_per_tok", ("GlmMoeDsaTopkRouter",)),
    "dots1": ("Dots1ForCausalLM", "n_routed_experts", "num_experts_per_tok", ("Dots1TopkRouter",)),
    "dots3_note": ("Dots3NoteForCausalLM", "n_routed_experts", "num_experts_per_tok", ("Dots3NoteTextTopkRouter",)),
    "kimi_linear": ("KimiLinearForCausalLM", "num_local_experts", "num_experts_per_tok", ("KimiLinearTopkRouter",)),
    "bailing_hybrid": (
        "BailingHybridForCausalLM", "num_local_experts", "num_experts_per_tok", ("BailingHybridTopkRouter",)
    ),
    "exaone_moe": ("ExaoneMoeForCausalLM", "num_experts", "num_experts_per_tok", ("ExaoneMoeTopkRouter",)),
    "mimo_v2_flash": (
        "MiMoV2FlashForCausalLM", "n_routed_experts", "num_experts_per_tok", ("MiMoV2FlashTopkRouter",)
    ),
    "nemotron_h": ("NemotronHForCausalLM", "n_routed_experts", "num_experts_per_tok", ("NemotronHTopkRouter",)),
    "solar_open": ("SolarOpenForCausalLM", "n_routed_experts", "num_experts_per_tok", ("SolarOpenTopkRouter",)),
    "hy_v4": ("HYV4ForCausalLM", "n_routed_experts", "num_experts_per_tok", ("HYV4TopkRouter",)),
    # transformers 5.24 (modeling_hy_v4_vl.py: HYV4VLMoE.gate; text tower)
    "hy_v4_vl": ("HYV4VLTextModel", "n_routed_experts", "num_experts_per_tok", ("HYV4VLTopkRouter",)),
    "axk1": ("AXK1ForCausalLM", "n_routed_experts", "num_experts_per_tok", ("AXK1TopkRouter",)),
    "axk2": ("AXK2ForCausalLM", "n_routed_experts", "num_experts_per_tok", ("AXK2TopkRouter",)),
    "beam": ("BeamForCausalLM", "num_experts", "num_experts_per_tok", ("BeamTopKRouter",)),
    "deepseek_v2": ("DeepseekV2ForCausalLM", "n_routed_experts", "num_experts_per_tok", ("DeepseekV2TopkRouter",)),
    "deepseek_ocr2": (
        "DeepseekOcr2TextModel", "n_routed_experts", "num_experts_per_tok", ("DeepseekOcr2TextTopkRouter",)
    ),
    "unlimited_ocr": (
        "UnlimitedOcrTextModel", "n_routed_experts", "num_experts_per_tok", ("UnlimitedOcrTextTopkRouter",)
    ),
    "mistral4": ("Mistral4ForCausalLM", "n_routed_experts", "num_experts_per_tok", ("Mistral4TopkRouter",)),
    "mistral_large4": (
        "MistralLarge4TextModel", "n_routed_experts", "num_experts_per_tok", ("MistralLarge4TextTopkRouter",)
    ),
    "longcat_flash": ("LongcatFlashForCausalLM", "n_routed_experts", "moe_topk", ("LongcatFlashTopkRouter",)),
    "zaya": ("ZayaForCausalLM", "num_experts", "num_experts_per_tok", ("ZayaRouter",)),
    "llama4": ("Llama4ForCausalLM", "num_local_experts", "num_experts_per_tok", ("Llama4Router",)),
    "phimoe": ("PhimoeForCausalLM", "num_local_experts", "num_experts_per_tok", ("PhimoeTopKRouter",)),
    "doge": ("DogeForCausalLM", "num_experts", "num_experts_per_tok", ("DogeCDMoE",)),
    "switch_transformers": (
        "SwitchTransformersForConditionalGeneration", "num_experts", None, ("SwitchTransformersTop1Router",)
    ),
    "nllb_moe": ("NllbMoeForConditionalGeneration", "num_experts", None, ("NllbMoeTop2Router",)),
}
FAMILIES = list(TABLE1)

# Families whose config can make layers dense (Table 1 "MoE-layer selection keys"), less the three
# whose key is a global switch or a routing kind: gemma4 (enable_moe_block), doge (is_moe),
# deepseek_v4 (hash_moe / moe).
NO_DENSE_LAYERS = {
    "mixtral", "minimax", "qwen3_5_moe", "qwen4_exp", "olmoe", "flex_olmo", "hunyuan_v1_moe", "dbrx", "gemma4",
    "diffusion_gemma", "gpt_oss", "openai_privacy_filter", "granitemoe", "granitemoeshared", "granitemoe_swa",
    "granitemoehybrid", "aria", "jetmoe", "minimax_m2", "inkling2", "deepseek_v4", "kolibri1", "solar_open",
    "longcat_flash", "zaya", "phimoe", "doge", "lara_mini", "inkling2_loop",
}
# Selection that a plain top-k of the router logits does not reproduce: scoring groups S3 (less
# flint, whose sigmoid top-k has no bias), S4 and S6 of the survey, and deepseek_v4's hash layers.
BIASED_SELECTION = [
    "minimax_m2", "minimax_m3_vl", "step3p7", "laguna", "hy_v3", "afmoe", "lfm2_moe", "inkling", "inkling2",
    "deepseek_v4", "muse_spark", "kolibri1",
    "deepseek_v3", "deepseek_v32", "glm4_moe", "glm4_moe_lite", "glm4v_moe", "glm5_next", "glm_moe_dsa", "dots1",
    "dots3_note", "kimi_linear", "bailing_hybrid", "exaone_moe", "mimo_v2_flash", "nemotron_h", "solar_open",
    "hy_v4", "axk1", "axk2", "beam",
    "ernie4_5_moe", "ernie4_5_vl_moe", "longcat_flash", "zaya", "inkling2_loop", "hy_v4_vl",
    "kolibri1_1", "ergo", "minicpm5_moe", "param2moe",
]
# experts modules that do not take (hidden, top_k_index, top_k_weights) (conventions C, D, E, F)
NO_INDEXED_EXPERTS = {"llama4", "jetmoe", "doge", "switch_transformers", "nllb_moe"}

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny ops lose more to thread hand-off than they gain; the shared CI box has 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config_value(config, dotted: str):
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def _layer_stacks(model) -> dict[str, torch.nn.ModuleList]:
    """The decoder (and encoder) layer lists: ModuleLists named layers / blocks / block."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and name.rpartition(".")[2] in {"layers", "blocks", "block"}
    }


def _routers(module, family: str) -> list[torch.nn.Module]:
    classes = set(TABLE1[family][3])
    return [m for m in module.modules() if type(m).__name__ in classes]


def _output(out) -> torch.Tensor:
    logits = getattr(out, "logits", None)
    return logits if logits is not None else out.last_hidden_state


def _dispatches(model, inputs, family: str) -> list[tuple[object, tuple]]:
    """(router output, experts pre-hook args) per MoE block that ran, in call order."""
    records: list[dict] = []
    handles = []
    for name, router in model.named_modules():
        if type(router).__name__ not in TABLE1[family][3]:
            continue
        experts = getattr(model.get_submodule(name.rpartition(".")[0]), "experts", None)
        if experts is None:
            continue
        record: dict = {}
        records.append(record)
        handles.append(router.register_forward_hook(lambda m, a, out, r=record: r.__setitem__("router", out)))
        handles.append(experts.register_forward_pre_hook(lambda m, args, r=record: r.__setitem__("experts", args)))
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return [(r["router"], r["experts"]) for r in records if "router" in r and "experts" in r]


def test_families_are_the_surveys_in_order():
    assert tiny.TINY_FAMILIES == tuple(FAMILIES)
    assert len(set(tiny.TINY_FAMILIES)) == 79


def test_public_api():
    assert sorted(tiny.__all__) == sorted(
        ["TINY_FAMILIES", "tiny_config", "build_tiny_model", "tiny_inputs", "family_model_class", "family_available"]
    )


def test_import_does_not_load_torch():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = "import moelens.models.tiny, sys; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("family", FAMILIES)
def test_builds_and_runs(family):
    model = tiny.build_tiny_model(family)
    assert type(model).__name__ == TABLE1[family][0]
    assert not model.training
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())

    # the requested sizes, read through the survey's config keys
    _, experts_key, top_k_key, _ = TABLE1[family]
    expected_experts = {"doge": 9}.get(family, 8)  # product keys: a perfect square
    assert _config_value(model.config, experts_key) == expected_experts
    if top_k_key is not None:
        assert _config_value(model.config, top_k_key) == (1 if family == "zaya" else 2)
    assert model.config.vocab_size == 256

    # depth, and at least 2 MoE layers; a dense layer wherever the family can have one
    stacks = _layer_stacks(model)
    assert stacks and all(len(layers) == 4 for layers in stacks.values()), {k: len(v) for k, v in stacks.items()}
    with_router = [bool(_routers(layer, family)) for layers in stacks.values() for layer in layers]
    assert sum(with_router) >= 2
    assert len(_routers(model, family)) >= 2
    if family in NO_DENSE_LAYERS:
        assert all(with_router)
    else:
        assert not all(with_router), "expected a layer without routing"

    inputs = tiny.tiny_inputs(family, model)
    with torch.no_grad():
        output = _output(model(**inputs))
    assert output.shape[:2] == inputs.get("decoder_input_ids", inputs["input_ids"]).shape
    assert torch.isfinite(output).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_other_sizes_are_honoured(family):
    model = tiny.build_tiny_model(family, num_layers=5, hidden_size=32, num_experts=16, top_k=4, vocab_size=100)
    _, experts_key, top_k_key, _ = TABLE1[family]
    assert _config_value(model.config, experts_key) == 16
    if top_k_key is not None:
        assert _config_value(model.config, top_k_key) == (1 if family == "zaya" else 4)
    stacks = _layer_stacks(model)
    assert stacks and all(len(layers) == 5 for layers in stacks.values())
    inputs = tiny.tiny_inputs(family, model, batch=3, seq=7)
    assert int(inputs["input_ids"].max()) < 100
    with torch.no_grad():
        assert torch.isfinite(_output(model(**inputs))).all()


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - NO_INDEXED_EXPERTS))
def test_routing_is_not_degenerate(family):
    model = tiny.build_tiny_model(family)
    inputs = tiny.tiny_inputs(family, model)
    tokens = inputs["input_ids"].numel()
    dispatches = _dispatches(model, inputs, family)
    assert dispatches
    for _, (_, index, _) in dispatches:
        first_choice = index[:, 0]
        assert first_choice.unique().numel() >= 3
        assert torch.bincount(index.flatten()).max() < tokens  # no expert takes every token


@pytest.mark.parametrize("family", BIASED_SELECTION)
def test_randomized_selection_differs_from_plain_top_k(family):
    model = tiny.build_tiny_model(family)
    inputs = tiny.tiny_inputs(family, model)
    differing = 0
    for router_output, (_, index, _) in _indexed_dispatches(model, inputs, family):
        logits = router_output[0] if isinstance(router_output, tuple) else router_output
        plain = logits.reshape(index.shape[0], -1).topk(index.shape[1], dim=-1).indices
        differing += int((plain.sort(-1).values != index.sort(-1).values).any(-1).sum())
    assert differing > 0


def _indexed_dispatches(model, inputs, family):
    dispatches = _dispatches(model, inputs, family)
    tokens = inputs["input_ids"].numel()
    assert dispatches
    for _, (_, index, _) in dispatches:
        assert index.shape[0] == tokens and not index.is_floating_point()
    return dispatches


def test_deepseek_v4_hash_layer_routes_by_token_id():
    model = tiny.build_tiny_model("deepseek_v4")
    inputs = tiny.tiny_inputs("deepseek_v4", model)
    hash_layers = [m for m in model.modules() if type(m).__name__ == "DeepseekV4HashRouter"]
    assert len(hash_layers) == 1
    table = hash_layers[0].tid2eid
    assert (table.sort(-1).values[:, 1:] != table.sort(-1).values[:, :-1]).all()  # distinct per token
    assert table.unique().numel() == 8
    router_output, (_, index, _) = _indexed_dispatches(model, inputs, "deepseek_v4")[0]
    assert torch.equal(index, table[inputs["input_ids"].reshape(-1)])
    assert not torch.equal(index.sort(-1).values, router_output[0].topk(2, dim=-1).indices.sort(-1).values)


def test_randomize_routing_touches_only_routing():
    drawn = tiny.build_tiny_model("deepseek_v3", seed=3)
    plain = tiny.build_tiny_model("deepseek_v3", seed=3, randomize_routing=False)
    changed = {name for name, p in drawn.state_dict().items() if not torch.equal(p, plain.state_dict()[name])}
    assert changed and all(".mlp.gate." in name for name in changed)
    assert any(name.endswith("e_score_correction_bias") for name in changed)
    biases = [b for n, b in plain.named_buffers() if n.endswith("e_score_correction_bias")]
    assert biases and all(not b.any() for b in biases)


@pytest.mark.parametrize("family", ["mixtral", "zaya", "doge", "ernie4_5_moe", "afmoe"])
def test_same_seed_same_model_and_global_rng_untouched(family):
    state = torch.random.get_rng_state()
    first = tiny.build_tiny_model(family, seed=7).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    second = tiny.build_tiny_model(family, seed=7).state_dict()
    other = tiny.build_tiny_model(family, seed=8).state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert any(not torch.equal(first[name], other[name]) for name in first)


@pytest.mark.parametrize("family", ["mixtral", "inkling2", "deepseek_v3"])
def test_half_precision_forward(family):
    model = tiny.build_tiny_model(family, dtype="bfloat16")
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.isfinite(_output(model(**tiny.tiny_inputs(family, model))).float()).all()


def test_strict_fp32_modules_stay_fp32():
    model = tiny.build_tiny_model("inkling2", dtype=torch.bfloat16)
    gates = [p for n, p in model.named_parameters() if n.endswith("mlp.gate.weight")]
    assert gates and all(p.dtype == torch.float32 for p in gates)


def test_tiny_inputs():
    model = tiny.build_tiny_model("switch_transformers")
    inputs = tiny.tiny_inputs("switch_transformers", model, batch=3, seq=9, seed=1)
    assert set(inputs) == {"input_ids", "attention_mask", "decoder_input_ids"}
    assert inputs["input_ids"].shape == inputs["attention_mask"].shape == (3, 9)
    assert inputs["decoder_input_ids"].shape == (3, 6)
    assert bool((inputs["attention_mask"] == 1).all())
    assert not (inputs["input_ids"] == model.config.pad_token_id).any()
    again = tiny.tiny_inputs("switch_transformers", model, batch=3, seq=9, seed=1)
    assert torch.equal(inputs["input_ids"], again["input_ids"])
    causal = tiny.build_tiny_model("mixtral")
    assert set(tiny.tiny_inputs("mixtral", causal)) == {"input_ids", "attention_mask"}


def test_config_quirks():
    dbrx = tiny.tiny_config("dbrx")
    assert dbrx.attn_config.clip_qkv is not None
    assert (dbrx.ffn_config.moe_num_experts, dbrx.ffn_config.moe_top_k) == (8, 2)
    assert tiny.tiny_config("zaya", top_k=2).num_experts_per_tok == 1
    assert tiny.tiny_config("doge", num_experts=16).num_experts == 16
    longcat = tiny.tiny_config("longcat_flash")
    assert longcat.head_dim == longcat.qk_rope_head_dim
    deepseek = tiny.tiny_config("deepseek_v3")
    assert (deepseek.n_group, deepseek.topk_group, deepseek.first_k_dense_replace) == (4, 2, 1)
    assert tiny.tiny_config("deepseek_v4").mlp_layer_types == ["hash_moe", "moe", "moe", "moe"]
    assert tiny.tiny_config("jamba").use_mamba_kernels is False
    assert tiny.tiny_config("mixtral", rms_norm_eps=1e-3).rms_norm_eps == 1e-3  # overrides win
    assert tiny.tiny_config("qwen3_next", num_layers=6).layer_types.count("full_attention") >= 1


def test_unknown_family():
    for call in (
        lambda: tiny.tiny_config("not_a_moe"),
        lambda: tiny.build_tiny_model("not_a_moe"),
        lambda: tiny.tiny_inputs("not_a_moe", None),
        lambda: tiny.family_model_class("not_a_moe"),
    ):
        with pytest.raises(UnknownArchitectureError) as error:
            call()
        assert "\n" not in str(error.value) and "TINY_FAMILIES" in str(error.value)


@pytest.mark.parametrize(
    ("family", "sizes"),
    [
        ("mixtral", {"top_k": 9}),
        ("mixtral", {"top_k": 0}),
        ("mixtral", {"hidden_size": 40}),
        ("longcat_flash", {"top_k": 1}),
        ("nemotron_h", {"num_layers": 1}),
    ],
)
def test_sizes_a_family_cannot_build(family, sizes):
    with pytest.raises(ConfigError):
        tiny.tiny_config(family, **sizes)
