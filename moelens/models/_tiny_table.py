"""The per-family table behind :mod:`moelens.models.tiny`: classes, routers and config quirks.

One row per MoE text family of transformers 5.23, in the order of the capture survey (design
notes, ``reference/transformers-moe-families.md``, Table 1). A row names the model class (the
``*ForCausalLM``, or the text tower of a composite model, or the seq2seq model), its config class,
the router classes whose weights get re-drawn, and the config overrides that the generic recipe in
``tiny.py`` cannot infer (survey Table 2, "quirks"). Override values are constants or callables
taking the requested :class:`Sizes`; they apply after the generic keys and before the caller's
own overrides. Nothing here imports torch or transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

__all__ = ["Sizes", "Family", "FAMILIES"]


@dataclass(frozen=True)
class Sizes:
    """The sizes a caller asked for, and the ones derived from them that every family shares."""

    num_layers: int
    hidden_size: int
    num_experts: int
    top_k: int
    vocab_size: int

    @property
    def n_dense(self) -> int:
        """Leading dense layers, where a family has them: one, when 2 MoE layers remain."""
        return 1 if self.num_layers >= 3 else 0

    @property
    def num_heads(self) -> int:
        return 4

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mla_rope_dim(self) -> int:
        """RoPE part of a latent-attention head; the other half has no RoPE."""
        return self.head_dim // 2

    @property
    def ffn(self) -> int:
        return 2 * self.hidden_size

    @property
    def expert_ffn(self) -> int:
        return self.hidden_size // 2

    def mlp_types(self, dense: str = "dense", sparse: str = "sparse") -> list[str]:
        return [dense] * self.n_dense + [sparse] * (self.num_layers - self.n_dense)


@dataclass(frozen=True)
class Family:
    """One family: where its classes live, which modules route, and what the recipe must set."""

    model: str  # class exported by transformers
    config: str  # its config class (the text config for composite models)
    routers: tuple[str, ...]  # router classes; "Class.attr" names a submodule of Class
    overrides: Mapping[str, Any] = field(default_factory=dict)
    bias_std: float = 0.1  # spread of re-drawn selection biases (sigmoid scores; see SOFTMAX_BIAS)
    router_gain: float = 1.0  # extra gain on re-drawn router weights (routers that shrink logits)
    seq2seq: bool = False
    min_layers: int = 1
    min_top_k: int = 1


SOFTMAX_BIAS = 0.05  # selection biases added to softmax probabilities (the survey's spread)


def _hybrid(linear: str = "linear_attention", attention: str = "full_attention") -> Callable[[Sizes], list[str]]:
    """Hybrid stacks alternate linear and attention layers; a single layer is attention.

    Their caches need one attention layer, which resampling the default pattern (3 linear : 1
    attention, linear first) does not guarantee at tiny depths.
    """

    def layer_types(s: Sizes) -> list[str]:
        return [attention] if s.num_layers == 1 else [(linear, attention)[i % 2] for i in range(s.num_layers)]

    return layer_types


def _mrope(s: Sizes, partial_rotary_factor: float = 1.0) -> dict[str, Any]:
    """Multimodal RoPE whose three sections fill the rotary half of a tiny head."""
    half = int(s.head_dim * partial_rotary_factor) // 2
    side = max(1, 3 * half // 8)  # two equal sections (ernie requires it), the rest to the third
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [side, side, half - 2 * side]}
    if partial_rotary_factor != 1.0:
        rope["partial_rotary_factor"] = partial_rotary_factor
    return rope


def _nemotron_blocks(s: Sizes) -> list[str]:
    """One mixer per block: MoE first, attention from 2 blocks, mamba from 4, dense MLP from 5."""
    cycle = ("moe", "full_attention", "moe", "linear_attention", "mlp", "moe")
    return [cycle[i % len(cycle)] for i in range(s.num_layers)]


def _sparse_step(s: Sizes) -> int:
    """Seq2seq stacks: every other layer sparse (layers 1, 3, ...) when a dense one fits."""
    return 2 if s.n_dense else 1


def _square_experts(s: Sizes) -> int:
    """Doge's product keys need a perfect square: the smallest one >= what was asked (8 -> 9)."""
    root = 1
    while root * root < s.num_experts:
        root += 1
    return root * root


_INDEXED = _hybrid(attention="indexed_attention")

FAMILIES: dict[str, Family] = {
    "mixtral": Family("MixtralForCausalLM", "MixtralConfig", ("MixtralTopKRouter",)),
    "minimax": Family("MiniMaxForCausalLM", "MiniMaxConfig", ("MiniMaxTopKRouter",), {"block_size": 4}),
    "qwen2_moe": Family("Qwen2MoeForCausalLM", "Qwen2MoeConfig", ("Qwen2MoeTopKRouter",)),
    "qwen3_moe": Family("Qwen3MoeForCausalLM", "Qwen3MoeConfig", ("Qwen3MoeTopKRouter",)),
    "qwen3_next": Family(
        "Qwen3NextForCausalLM", "Qwen3NextConfig", ("Qwen3NextTopKRouter",), {"layer_types": _hybrid()}
    ),
    "qwen3_5_moe": Family(
        "Qwen3_5MoeForCausalLM", "Qwen3_5MoeTextConfig", ("Qwen3_5MoeTopKRouter",), {"layer_types": _hybrid()}
    ),
    "qwen4_exp": Family(
        "Qwen4ExpForCausalLM",
        "Qwen4ExpTextConfig",
        ("Qwen4ExpTextTopKRouter",),
        # the QSA indexer fields must be set together (else `None // None` at build)
        {"indexer_n_heads": 2, "indexer_kv_heads": 1, "indexer_head_dim": lambda s: s.head_dim,
         "indexer_budget": 8, "indexer_compress_ratio": 2, "hc_lowrank": 8, "layer_types": _INDEXED},
    ),
    "qwen3_vl_moe": Family("Qwen3VLMoeTextModel", "Qwen3VLMoeTextConfig", ("Qwen3VLMoeTextTopKRouter",)),
    "qwen3_omni_moe": Family(
        "Qwen3OmniMoeThinkerTextModel", "Qwen3OmniMoeTextConfig", ("Qwen3OmniMoeThinkerTextTopKRouter",)
    ),
    "olmoe": Family("OlmoeForCausalLM", "OlmoeConfig", ("OlmoeTopKRouter",)),
    "flex_olmo": Family("FlexOlmoForCausalLM", "FlexOlmoConfig", ("FlexOlmoTopKRouter",)),
    "mellum": Family("MellumForCausalLM", "MellumConfig", ("MellumTopKRouter",)),
    "jamba": Family(
        "JambaForCausalLM",
        "JambaConfig",
        ("JambaTopKRouter",),
        # one attention layer among the mamba ones (default: every 8th); MoE stays on odd layers
        {"attn_layer_period": 4, "attn_layer_offset": lambda s: min(2, s.num_layers - 1)},
    ),
    "hunyuan_v1_moe": Family("HunYuanMoEV1ForCausalLM", "HunYuanMoEV1Config", ("HunYuanMoEV1Gate",)),
    "dbrx": Family(
        "DbrxForCausalLM",
        "DbrxConfig",
        ("DbrxRouter",),
        # nested configs; clip_qkv=None crashes the forward, and attention reads a rope_theta
        {"attn_config": {"clip_qkv": 8.0, "kv_n_heads": 2, "rope_theta": 10000.0},
         "ffn_config": lambda s: {"ffn_hidden_size": s.expert_ffn, "moe_num_experts": s.num_experts,
                                  "moe_top_k": s.top_k}},
    ),
    "gemma4": Family(
        "Gemma4ForCausalLM",
        "Gemma4TextConfig",
        ("Gemma4TextRouter",),
        # MoE runs beside the dense MLP in every layer; per-layer embeddings default to 262k x L*256;
        # full-attention layers default to 512-wide heads
        {"enable_moe_block": True, "vocab_size_per_layer_input": lambda s: s.vocab_size,
         "hidden_size_per_layer_input": 16, "global_head_dim": lambda s: 2 * s.head_dim},
    ),
    "diffusion_gemma": Family(
        "DiffusionGemmaEncoderTextModel", "DiffusionGemmaTextConfig", ("DiffusionGemmaTextRouter",),
        {"global_head_dim": lambda s: 2 * s.head_dim},
    ),
    "ernie4_5_moe": Family(
        "Ernie4_5_MoeForCausalLM", "Ernie4_5_MoeConfig", ("Ernie4_5_MoeTopKRouter",), bias_std=SOFTMAX_BIAS
    ),
    "ernie4_5_vl_moe": Family(
        "Ernie4_5_VLMoeTextModel",
        "Ernie4_5_VLMoeTextConfig",
        ("Ernie4_5_VLMoeMoeTopKRouter",),
        # [text, vision] expert sizes; mrope_section must sum to head_dim / 2
        {"moe_intermediate_size": lambda s: [s.expert_ffn, s.expert_ffn], "rope_parameters": _mrope},
        bias_std=SOFTMAX_BIAS,
    ),
    "gpt_oss": Family("GptOssForCausalLM", "GptOssConfig", ("GptOssTopKRouter",)),
    "openai_privacy_filter": Family(
        "OpenAIPrivacyFilterForTokenClassification", "OpenAIPrivacyFilterConfig", ("OpenAIPrivacyFilterTopKRouter",)
    ),
    "granitemoe": Family("GraniteMoeForCausalLM", "GraniteMoeConfig", ("GraniteMoeTopKRouter",)),
    "granitemoeshared": Family(
        "GraniteMoeSharedForCausalLM", "GraniteMoeSharedConfig", ("GraniteMoeSharedTopKRouter",)
    ),
    "granitemoe_swa": Family("GraniteMoeSWAForCausalLM", "GraniteMoeSWAConfig", ("GraniteMoeSWATopKRouter",)),
    "granitemoehybrid": Family(
        "GraniteMoeHybridForCausalLM", "GraniteMoeHybridConfig", ("GraniteMoeHybridTopKRouter",),
        {"layer_types": _hybrid(attention="attention")},  # default: all mamba
    ),
    "aria": Family("AriaTextForCausalLM", "AriaTextConfig", ("AriaTextTopKRouter",)),
    "jetmoe": Family("JetMoeForCausalLM", "JetMoeConfig", ("JetMoeTopKGating",)),
    "cohere2_moe": Family("Cohere2MoeForCausalLM", "Cohere2MoeConfig", ("Cohere2MoeTopKRouter",)),
    "minimax_m2": Family("MiniMaxM2ForCausalLM", "MiniMaxM2Config", ("MiniMaxM2TopKRouter",)),
    "minimax_m3_vl": Family("MiniMaxM3VLForCausalLM", "MiniMaxM3VLTextConfig", ("MiniMaxM3VLTopKRouter",)),
    "step3p7": Family(
        "Step3p7TextModel", "Step3p7TextConfig", ("Step3p7TopKRouter",),
        {"sliding_window": 8},  # the model builds a sliding mask even without sliding layers
    ),
    "laguna": Family("LagunaForCausalLM", "LagunaConfig", ("LagunaTopKRouter",)),
    "hy_v3": Family("HYV3ForCausalLM", "HYV3Config", ("HYV3TopKRouter",)),
    "afmoe": Family("AfmoeForCausalLM", "AfmoeConfig", ("AfmoeTokenChoiceRouter",)),
    "lfm2_moe": Family(
        "Lfm2MoeForCausalLM", "Lfm2MoeConfig", ("Lfm2MoeTopKRouter",),
        {"layer_types": _hybrid(linear="conv")},  # the default (None) crashes
    ),
    "inkling": Family("InklingForCausalLM", "InklingTextConfig", ("InklingTopkRouter",)),
    "inkling2": Family("Inkling2ForCausalLM", "Inkling2TextConfig", ("Inkling2TopKRouter",)),
    "deepseek_v4": Family(
        "DeepseekV4ForCausalLM",
        "DeepseekV4Config",
        ("DeepseekV4HashRouter", "DeepseekV4TopKRouter"),
        # no dense layers: the leading layer is hash-routed; grouped output projection (default 8 x 1024)
        {"mlp_layer_types": lambda s: s.mlp_types(dense="hash_moe", sparse="moe"),
         "o_lora_rank": 16, "o_groups": 2},
    ),
    "muse_spark": Family(
        "MuseSparkTextModel", "MuseSparkTextConfig", ("MuseSparkTopkRouter",),
        router_gain=32**0.5,  # undo the router's output_multiplier (1/sqrt(32)) on its logits
    ),
    "kolibri1": Family(
        "Kolibri1ForCausalLM", "Kolibri1Config", ("Kolibri1TopKRouter",),
        bias_std=0.3,  # its bias is added to the logits, not to sigmoid scores
    ),
    "flint": Family("FlintForCausalLM", "FlintConfig", ("FlintTopKRouter",)),
    "deepseek_v3": Family("DeepseekV3ForCausalLM", "DeepseekV3Config", ("DeepseekV3TopkRouter",)),
    "deepseek_v32": Family("DeepseekV32ForCausalLM", "DeepseekV32Config", ("DeepseekV32TopkRouter",)),
    "glm4_moe": Family("Glm4MoeForCausalLM", "Glm4MoeConfig", ("Glm4MoeTopkRouter",)),
    "glm4_moe_lite": Family("Glm4MoeLiteForCausalLM", "Glm4MoeLiteConfig", ("Glm4MoeLiteTopkRouter",)),
    "glm4v_moe": Family(
        "Glm4vMoeTextModel", "Glm4vMoeTextConfig", ("Glm4vMoeTextTopkRouter",),
        {"rope_parameters": lambda s: _mrope(s, partial_rotary_factor=0.5)},
    ),
    "glm5_next": Family(
        "Glm5NextTextModel",
        "Glm5NextTextConfig",
        ("Glm5NextTextTopkRouter",),
        # validator: NoPE latent attention, index_topk % index_kpool == 0
        {"qk_rope_head_dim": 0, "qk_nope_head_dim": lambda s: s.head_dim, "index_kpool": 4, "layer_types": _INDEXED},
    ),
    "glm_moe_dsa": Family("GlmMoeDsaForCausalLM", "GlmMoeDsaConfig", ("GlmMoeDsaTopkRouter",)),
    "dots1": Family("Dots1ForCausalLM", "Dots1Config", ("Dots1TopkRouter",)),
    "dots3_note": Family(
        "Dots3NoteForCausalLM",
        "Dots3NoteTextConfig",
        ("Dots3NoteTextTopkRouter",),
        # the sliding-window layers have latent-attention dims of their own (default: 77M parameters)
        {"swa_num_attention_heads": lambda s: s.num_heads, "swa_num_key_value_heads": lambda s: s.num_heads,
         "swa_q_lora_rank": lambda s: 2 * s.head_dim, "swa_kv_lora_rank": 16, "swa_head_dim": lambda s: s.head_dim,
         "swa_qk_nope_head_dim": lambda s: s.head_dim - s.mla_rope_dim, "swa_v_head_dim": lambda s: s.head_dim},
    ),
    "kimi_linear": Family(
        "KimiLinearForCausalLM", "KimiLinearConfig", ("KimiLinearTopkRouter",), {"layer_types": _hybrid()}
    ),
    "bailing_hybrid": Family(
        "BailingHybridForCausalLM", "BailingHybridConfig", ("BailingHybridTopkRouter",), {"layer_types": _hybrid()}
    ),
    "exaone_moe": Family("ExaoneMoeForCausalLM", "ExaoneMoeConfig", ("ExaoneMoeTopkRouter",)),
    "mimo_v2_flash": Family("MiMoV2FlashForCausalLM", "MiMoV2FlashConfig", ("MiMoV2FlashTopkRouter",)),
    "nemotron_h": Family(
        "NemotronHForCausalLM", "NemotronHConfig", ("NemotronHTopkRouter",),
        {"layers_block_type": _nemotron_blocks},  # sets the depth; num_hidden_layers is derived from it
        min_layers=2,  # one block is one mixer: MoE and attention need two
    ),
    "solar_open": Family("SolarOpenForCausalLM", "SolarOpenConfig", ("SolarOpenTopkRouter",)),
    "hy_v4": Family("HYV4ForCausalLM", "HYV4Config", ("HYV4TopkRouter",)),
    "axk1": Family("AXK1ForCausalLM", "AXK1Config", ("AXK1TopkRouter",)),
    "axk2": Family("AXK2ForCausalLM", "AXK2Config", ("AXK2TopkRouter",)),
    "beam": Family("BeamForCausalLM", "BeamConfig", ("BeamTopKRouter",)),
    "deepseek_v2": Family("DeepseekV2ForCausalLM", "DeepseekV2Config", ("DeepseekV2TopkRouter",)),
    "deepseek_ocr2": Family("DeepseekOcr2TextModel", "DeepseekOcr2TextConfig", ("DeepseekOcr2TextTopkRouter",)),
    "unlimited_ocr": Family("UnlimitedOcrTextModel", "UnlimitedOcrTextConfig", ("UnlimitedOcrTextTopkRouter",)),
    "mistral4": Family("Mistral4ForCausalLM", "Mistral4Config", ("Mistral4TopkRouter",)),
    "mistral_large4": Family("MistralLarge4TextModel", "MistralLarge4TextConfig", ("MistralLarge4TextTopkRouter",)),
    "longcat_flash": Family(
        "LongcatFlashForCausalLM",
        "LongcatFlashConfig",
        ("LongcatFlashTopkRouter",),
        # head_dim must equal qk_rope_head_dim; zero-compute identity experts (default 256)
        {"head_dim": lambda s: s.mla_rope_dim, "zero_expert_num": lambda s: max(1, s.num_experts // 4)},
        bias_std=SOFTMAX_BIAS,
        min_top_k=2,  # its experts squeeze the k axis away when k == 1
    ),
    "zaya": Family(
        "ZayaForCausalLM",
        "ZayaConfig",
        ("ZayaRouter",),
        # the validator allows top-1 only; the router is an MLP (default 256 wide)
        {"num_experts_per_tok": 1, "router_hidden_size": lambda s: s.hidden_size},
        bias_std=SOFTMAX_BIAS,
    ),
    "llama4": Family("Llama4ForCausalLM", "Llama4TextConfig", ("Llama4Router",)),
    "phimoe": Family("PhimoeForCausalLM", "PhimoeConfig", ("PhimoeTopKRouter",)),
    "doge": Family(
        "DogeForCausalLM", "DogeConfig",
        ("DogeCDMoE.router_gate",),  # no router module: product-key routing inline in the block
        {"is_moe": True, "num_experts": _square_experts},
    ),
    "switch_transformers": Family(
        "SwitchTransformersForConditionalGeneration",
        "SwitchTransformersConfig",
        ("SwitchTransformersTop1Router",),
        # capacity per sequence: at tiny sizes a few tokens get dropped (default 64: none)
        {"encoder_sparse_step": _sparse_step, "decoder_sparse_step": _sparse_step, "expert_capacity": 3},
        seq2seq=True,
    ),
    "nllb_moe": Family(
        "NllbMoeForConditionalGeneration", "NllbMoeConfig", ("NllbMoeTop2Router",),
        {"encoder_sparse_step": _sparse_step, "decoder_sparse_step": _sparse_step},
        seq2seq=True,
    ),
}
