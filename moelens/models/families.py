"""The family table: one row per transformers MoE family, everything moelens needs to know about it.

One :class:`~moelens.models.family_spec.Family` row per model family (``config.model_type``) of
transformers 5.x, from the capture survey in the project's design notes
(``reference/transformers-moe-families.md``): the model and config classes, the router classes to
hook, the routing convention, the config keys of E, k and the shared experts, the logits layout,
zero-compute experts, skip classes, capacity masks, looped layers, and what a tiny random build of
the family needs. Adding a family is adding one row. Discovery (:mod:`moelens.models.discover`),
the hooks and the trace pipeline read these fields and never branch on a family's name; a family
that is not here but follows convention A is captured by the generic adapter found by structure.
Nothing here imports torch or transformers.
"""

from __future__ import annotations

from typing import Any, Callable

from moelens.errors import UnknownArchitectureError
from moelens.models.family_spec import SOFTMAX_BIAS, Family, Loop, Shared, Sizes, Tiny

__all__ = ["FAMILIES", "get_family", "supported_families", "family_for_router_class", "router_class_names"]


def _row(family: str, convention: str, scoring: str, model: str, config: str, routers: tuple[str, ...], *,
         experts: str, k: str | None, **fields: Any) -> Family:
    return Family(family, convention, scoring, model, config, tuple(routers), experts, k, **fields)


# -- tiny-build recipes shared by several rows ----------------------------------------------------

def _hybrid(linear: str = "linear_attention", attention: str = "full_attention") -> Callable[[Sizes], list[str]]:
    """Hybrid stacks alternate linear and attention layers; a single layer is attention.

    Their caches need one attention layer, which resampling the default pattern (3 linear : 1
    attention, linear first) does not guarantee at tiny depths.
    """

    def layer_types(s: Sizes) -> list[str]:
        return [attention] if s.num_layers == 1 else [(linear, attention)[i % 2] for i in range(s.num_layers)]

    return layer_types


def _mrope(s: Sizes, partial_rotary_factor: float = 1.0, rotary_dim: int | None = None) -> dict[str, Any]:
    """Multimodal RoPE whose three sections fill the rotary half of a tiny head (or of ``rotary_dim``)."""
    half = (rotary_dim or int(s.head_dim * partial_rotary_factor)) // 2
    side = max(1, 3 * half // 8)  # two equal sections (ernie requires it), the rest to the third
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [side, side, half - 2 * side]}
    if partial_rotary_factor != 1.0:
        rope["partial_rotary_factor"] = partial_rotary_factor
    return rope


def _nemotron_blocks(s: Sizes) -> list[str]:
    """One mixer per block: attention first, MoE from 2 blocks, mamba from 3, dense MLP from 5.

    The first block holds a cache: transformers 5.25 reads the cache length from layer 0, which an
    MoE block (no cache) cannot answer (real Nemotron-H stacks start with a mamba block).
    """
    cycle = ("full_attention", "moe", "linear_attention", "moe", "mlp", "moe")
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

_ROWS = [
    _row("mixtral", "A", "S1", "MixtralForCausalLM", "MixtralConfig", ("MixtralTopKRouter",),
         experts="num_local_experts", k="num_experts_per_tok",
         rule="softmax -> top-k -> renorm",
    ),
    _row("minimax", "A", "S1", "MiniMaxForCausalLM", "MiniMaxConfig", ("MiniMaxTopKRouter",),
         experts="num_local_experts", k="num_experts_per_tok",
         rule="softmax -> top-k -> renorm",
         tiny=Tiny({"block_size": 4}),
    ),
    _row("qwen2_moe", "A", "S1", "Qwen2MoeForCausalLM", "Qwen2MoeConfig", ("Qwen2MoeTopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         shared=Shared("shared_expert_intermediate_size", "size", "shared_expert x sigmoid(shared_expert_gate)"),
         rule="softmax -> top-k -> renorm iff norm_topk_prob; + sigmoid(shared_expert_gate) * shared expert",
    ),
    _row("qwen3_moe", "A", "S1", "Qwen3MoeForCausalLM", "Qwen3MoeConfig", ("Qwen3MoeTopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         rule="softmax -> top-k -> renorm iff norm_topk_prob",
    ),
    _row("qwen3_next", "A", "S1", "Qwen3NextForCausalLM", "Qwen3NextConfig", ("Qwen3NextTopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         shared=Shared("shared_expert_intermediate_size", "size", "shared_expert x sigmoid(shared_expert_gate)"),
         rule="softmax -> top-k -> renorm iff norm_topk_prob; sigmoid shared_expert_gate",
         tiny=Tiny({"layer_types": _hybrid()}),
    ),
    _row("qwen3_5_moe", "A", "S1", "Qwen3_5MoeForCausalLM", "Qwen3_5MoeTextConfig", ("Qwen3_5MoeTopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         shared=Shared("shared_expert_intermediate_size", "size", "shared_expert x sigmoid(shared_expert_gate)"),
         rule="softmax -> top-k -> always renorm; sigmoid shared_expert_gate",
         tiny=Tiny({"layer_types": _hybrid()}),
    ),
    _row("qwen4_exp", "A", "S1", "Qwen4ExpForCausalLM", "Qwen4ExpTextConfig", ("Qwen4ExpTextTopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         shared=Shared("shared_expert_intermediate_size", "size", "shared_expert x sigmoid(shared_expert_gate)"),
         rule="softmax -> top-k -> renorm iff norm_topk_prob; sigmoid shared_expert_gate",
         tiny=Tiny(  # the QSA indexer fields must be set together (else `None // None` at build)
              {"indexer_n_heads": 2, "indexer_kv_heads": 1, "indexer_head_dim": lambda s: s.head_dim,
               "indexer_budget": 8, "indexer_compress_ratio": 2, "hc_lowrank": 8, "layer_types": _INDEXED}),
    ),
    _row("qwen3_vl_moe", "A", "S1", "Qwen3VLMoeTextModel", "Qwen3VLMoeTextConfig", ("Qwen3VLMoeTextTopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         rule="softmax -> top-k -> always renorm",
    ),
    _row("qwen3_omni_moe", "A", "S1", "Qwen3OmniMoeThinkerTextModel", "Qwen3OmniMoeTextConfig", ("Qwen3OmniMoeThinkerTextTopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         rule="softmax -> top-k -> renorm iff norm_topk_prob (thinker); talker adds sigmoid shared gate",
    ),
    _row("olmoe", "A", "S1", "OlmoeForCausalLM", "OlmoeConfig", ("OlmoeTopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         rule="softmax -> top-k -> renorm iff norm_topk_prob",
    ),
    _row("flex_olmo", "A", "S1", "FlexOlmoForCausalLM", "FlexOlmoConfig", ("FlexOlmoTopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         rule="softmax -> top-k -> renorm iff norm_topk_prob",
    ),
    _row("mellum", "A", "S1", "MellumForCausalLM", "MellumConfig", ("MellumTopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         rule="softmax -> top-k -> renorm iff norm_topk_prob",
    ),
    _row("jamba", "A", "S1", "JambaForCausalLM", "JambaConfig", ("JambaTopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         rule="softmax -> top-k, NO renorm",
         tiny=Tiny(  # one attention layer among the mamba ones (default: every 8th); MoE stays on odd layers
              {"attn_layer_period": 4, "attn_layer_offset": lambda s: min(2, s.num_layers - 1)}),
    ),
    _row("lara_mini", "A", "S1", "LaraMiniForCausalLM", "LaraMiniConfig", ("LaraMiniTopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         shared=Shared("shared_expert_intermediate_size", "size", "shared_expert (ungated, always added)"),
         rule="fp32 logits -> softmax -> top-k -> renorm iff norm_topk_prob; + ungated shared expert",
    ),
    _row("hunyuan_v1_moe", "A", "S1", "HunYuanMoEV1ForCausalLM", "HunYuanMoEV1Config", ("HunYuanMoEV1Gate",),
         experts="num_experts", k="moe_topk",
         shared=Shared(None, None, "shared_mlp (ungated)"),
         rule="softmax -> top-k -> renorm (per-layer num_experts/topk lists allowed); + ungated shared_mlp",
    ),
    _row("dbrx", "B", "S1", "DbrxForCausalLM", "DbrxConfig", ("DbrxRouter",),
         experts="ffn_config.moe_num_experts", k="ffn_config.moe_top_k",
         rule="router=bare Linear (logits); block: softmax -> top-k -> divide by L_p norm (moe_normalize_expert_weights)",
         tiny=Tiny(  # nested configs; clip_qkv=None crashes the forward, and attention reads a rope_theta
              {"attn_config": {"clip_qkv": 8.0, "kv_n_heads": 2, "rope_theta": 10000.0},
               "ffn_config": lambda s: {"ffn_hidden_size": s.expert_ffn, "moe_num_experts": s.num_experts,
                                        "moe_top_k": s.top_k}}),
    ),
    _row("gemma4", "A", "S1", "Gemma4ForCausalLM", "Gemma4TextConfig", ("Gemma4TextRouter",),
         experts="num_experts", k="top_k_experts",
         rule="RMSNorm(no scale)*scale*d^-0.5 -> proj -> softmax -> top-k -> renorm -> * per_expert_scale[idx]; output[0] = PROBS",
         logits="probs",
         tiny=Tiny(  # MoE runs beside the dense MLP in every layer; per-layer embeddings default to 262k x L*256;
              # full-attention layers default to 512-wide heads
              {"enable_moe_block": True, "vocab_size_per_layer_input": lambda s: s.vocab_size,
               "hidden_size_per_layer_input": 16, "global_head_dim": lambda s: 2 * s.head_dim}),
    ),
    _row("diffusion_gemma", "A", "S1", "DiffusionGemmaEncoderTextModel", "DiffusionGemmaTextConfig", ("DiffusionGemmaTextRouter",),
         experts="num_experts", k="top_k_experts",
         rule="as gemma4 (output[0] = softmax PROBS, * per_expert_scale)",
         logits="probs",
         tiny=Tiny({"global_head_dim": lambda s: 2 * s.head_dim}),
    ),
    _row("ernie4_5_moe", "A", "S6", "Ernie4_5_MoeForCausalLM", "Ernie4_5_MoeConfig", ("Ernie4_5_MoeTopKRouter",),
         experts="moe_num_experts", k="moe_k",
         shared=Shared("moe_num_shared_experts", "count", "shared_experts (ungated)"),
         rule="softmax; top-k on (probs + e_score_correction_bias) [moe_statics]; weights=probs/clamp(sum,norm_min)",
         tiny=Tiny(bias_std=SOFTMAX_BIAS),
    ),
    _row("ernie4_5_vl_moe", "A", "S6", "Ernie4_5_VLMoeTextModel", "Ernie4_5_VLMoeTextConfig", ("Ernie4_5_VLMoeMoeTopKRouter",),
         experts="moe_num_experts", k="moe_k",
         shared=Shared("moe_num_shared_experts", "count", "mlp.shared_experts on the modality block (ungated)"),
         rule="as ernie4_5_moe, separate text/vision routers (modality-isolated)",
         tags={"text_moe": "text", "vision_moe": "vision"}, secondary_tags=("vision",),
         tiny=Tiny(  # [text, vision] expert sizes; mrope_section must sum to head_dim / 2
              {"moe_intermediate_size": lambda s: [s.expert_ffn, s.expert_ffn], "rope_parameters": _mrope},
              bias_std=SOFTMAX_BIAS),
    ),
    _row("gpt_oss", "A", "S2", "GptOssForCausalLM", "GptOssConfig", ("GptOssTopKRouter",),
         experts="num_local_experts", k="num_experts_per_tok",
         rule="Linear WITH bias -> top-k on logits -> softmax over the k",
    ),
    _row("openai_privacy_filter", "A", "S2", "OpenAIPrivacyFilterForTokenClassification", "OpenAIPrivacyFilterConfig", ("OpenAIPrivacyFilterTopKRouter",),
         experts="num_local_experts", k="num_experts_per_tok",
         rule="Linear with bias -> top-k on logits -> softmax over k -> / top_k",
    ),
    _row("granitemoe", "A", "S2", "GraniteMoeForCausalLM", "GraniteMoeConfig", ("GraniteMoeTopKRouter",),
         experts="num_local_experts", k="num_experts_per_tok",
         rule="top-k on logits -> softmax over k",
    ),
    _row("granitemoeshared", "A", "S2", "GraniteMoeSharedForCausalLM", "GraniteMoeSharedConfig", ("GraniteMoeSharedTopKRouter",),
         experts="num_local_experts", k="num_experts_per_tok",
         shared=Shared("shared_intermediate_size", "size", "decoder-layer shared_mlp (ungated, if shared_intermediate_size>0)"),
         rule="top-k on logits -> softmax over k (+ ungated shared MLP)",
    ),
    _row("granitemoe_swa", "A", "S2", "GraniteMoeSWAForCausalLM", "GraniteMoeSWAConfig", ("GraniteMoeSWATopKRouter",),
         experts="num_local_experts", k="num_experts_per_tok",
         shared=Shared("shared_intermediate_size", "size", "decoder-layer shared_mlp (ungated, if shared_intermediate_size>0)"),
         rule="top-k on logits -> softmax over k",
    ),
    _row("granitemoehybrid", "A", "S2", "GraniteMoeHybridForCausalLM", "GraniteMoeHybridConfig", ("GraniteMoeHybridTopKRouter",),
         experts="num_local_experts", k="num_experts_per_tok",
         shared=Shared("shared_intermediate_size", "size", "decoder-layer shared_mlp (ungated)"),
         rule="top-k on logits -> softmax over k",
         tiny=Tiny({"layer_types": _hybrid(attention="attention")},),  # default: all mamba
    ),
    _row("aria", "A", "S2", "AriaTextForCausalLM", "AriaTextConfig", ("AriaTextTopKRouter",),
         experts="moe_num_experts", k="moe_topk",
         shared=Shared("moe_num_shared_experts", "count", "shared_experts (ungated)"),
         rule="top-k on logits -> softmax over k (+ shared experts)",
    ),
    _row("jetmoe", "D", "S2", "JetMoeForCausalLM", "JetMoeConfig", ("JetMoeTopKGating",),
         experts="num_local_experts", k="num_experts_per_tok",
         rule="top-k on logits -> softmax over k; ALSO mixture-of-attention-heads router per layer",
         tags={"self_attention": "attention"}, secondary_tags=("attention",),
         notes="a second router per layer routes attention heads (mixture of attention)",
    ),
    _row("cohere2_moe", "A", "S2", "Cohere2MoeForCausalLM", "Cohere2MoeConfig", ("Cohere2MoeTopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         shared=Shared("num_shared_experts", "count", "shared_experts, combined by sum or average"),
         rule="top-k on logits -> softmax over k (expert_selection_fn=softmax) or sigmoid(+renorm)",
    ),
    _row("minimax_m2", "A", "S3", "MiniMaxM2ForCausalLM", "MiniMaxM2Config", ("MiniMaxM2TopKRouter",),
         experts="num_local_experts", k="num_experts_per_tok",
         rule="sigmoid; +e_score_correction_bias (held by BLOCK, passed as arg) for choice; renorm",
    ),
    _row("minimax_m3_vl", "A", "S3", "MiniMaxM3VLForCausalLM", "MiniMaxM3VLTextConfig", ("MiniMaxM3VLTopKRouter",),
         experts="num_local_experts", k="num_experts_per_tok",
         shared=Shared("shared_intermediate_size", "size", "shared_experts (ungated)"),
         rule="sigmoid; +bias (router buffer) for choice; renorm; routed_scaling_factor applied to block OUTPUT",
    ),
    _row("step3p7", "A", "S3", "Step3p7TextModel", "Step3p7TextConfig", ("Step3p7TopKRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("share_expert_dim", "size", "shared_experts (ungated)"),
         rule="sigmoid; +bias for choice; renorm; moe_router_scaling_factor applied to block OUTPUT",
         tiny=Tiny({"sliding_window": 8},),  # the model builds a sliding mask even without sliding layers
    ),
    _row("laguna", "A", "S3", "LagunaForCausalLM", "LagunaConfig", ("LagunaTopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         shared=Shared("shared_expert_intermediate_size", "size", "shared_experts (ungated)"),
         rule="optional tanh soft-cap of logits; sigmoid; +bias for choice; renorm; scaling on block OUTPUT",
         logits="softcapped",
    ),
    _row("hy_v3", "A", "S3", "HYV3ForCausalLM", "HYV3Config", ("HYV3TopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         shared=Shared("num_shared_experts", "count", "shared_experts (ungated)"),
         rule="sigmoid; +bias (BLOCK buffer, passed as arg) for choice; renorm(+1e-20); * router_scaling_factor",
    ),
    _row("afmoe", "A", "S3", "AfmoeForCausalLM", "AfmoeConfig", ("AfmoeTokenChoiceRouter",),
         experts="num_experts", k="num_experts_per_tok",
         shared=Shared("num_shared_experts", "count", "shared_experts (ungated)"),
         rule="sigmoid; +expert_bias (BLOCK param, passed as arg) for choice; renorm(+1e-20); * route_scale",
    ),
    _row("lfm2_moe", "A", "S3", "Lfm2MoeForCausalLM", "Lfm2MoeConfig", ("Lfm2MoeTopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         rule="sigmoid; +expert_bias (BLOCK buffer, arg) iff use_expert_bias; renorm(+1e-6) iff norm_topk_prob; * routed_scaling_factor",
         tiny=Tiny({"layer_types": _hybrid(linear="conv")},),  # the default (None) crashes
    ),
    _row("inkling", "A+", "S3", "InklingForCausalLM", "InklingTextConfig", ("InklingTopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts weighted by router output[3] (shared_gammas)"),
         rule="sigmoid over routed+shared logits; +bias for choice among routed; weights = softmax(logsigmoid) JOINTLY with shared experts * route_scale * global_scale; returns 4-tuple",
         logits="routed_only",
    ),
    _row("inkling2", "A", "S3", "Inkling2ForCausalLM", "Inkling2TextConfig", ("Inkling2TopKRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         rule="score_fn(config.scoring_func); +bias for choice; renorm(+1e-20); * routed_scaling_factor",
    ),
    _row("inkling2_loop", "A", "S3", "Inkling2LoopForCausalLM", "Inkling2LoopTextConfig", ("Inkling2LoopTopKRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         rule="as inkling2 (score_fn; +bias for choice; renorm(+1e-20); * routed_scaling_factor); the looped layers run"
              " loop_num_passes times per forward, each pass routing anew",
         loop=Loop("loop_layer_index_start", "loop_layer_index_end", "loop_num_passes"),
         # one layer per residual block so that a 4-layer model loops layers 1-2 twice
         tiny=Tiny({"n_layers_per_attn_res_block": 1, "loop_layer_index_start": 1, "loop_num_passes": 2,
                    "loop_layer_index_end": lambda s: max(2, s.num_layers - 1), "loop_gate_rank": 8,
                    "unpadded_vocab_size": lambda s: s.vocab_size, "d_rel": 4}, min_layers=2),
    ),
    _row("deepseek_v4", "A", "S3", "DeepseekV4ForCausalLM", "DeepseekV4Config", ("DeepseekV4HashRouter", "DeepseekV4TopKRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="score_fn(scoring_func); +bias for choice; renorm; * scale. First layers = HASH routing (tid2eid[input_ids])",
         notes="first layers use hash routing (tid2eid[input_ids])",
         tiny=Tiny(  # no dense layers: the leading layer is hash-routed; grouped output projection (default 8 x 1024)
              {"mlp_layer_types": lambda s: s.mlp_types(dense="hash_moe", sparse="moe"),
               "o_lora_rank": 16, "o_groups": 2}),
    ),
    _row("muse_spark", "A", "S3", "MuseSparkTextModel", "MuseSparkTextConfig", ("MuseSparkTopkRouter",),
         experts="num_local_experts", k="num_experts_per_tok",
         rule="logits*output_multiplier; sigmoid; +bias for choice; renorm(+1e-15); * routed_scaling_factor",
         notes="logits already multiplied by output_multiplier",
         tiny=Tiny(router_gain=32**0.5,),  # undo the router"s output_multiplier (1/sqrt(32)) on its logits
    ),
    _row("kolibri1", "A", "S3", "Kolibri1ForCausalLM", "Kolibri1Config", ("Kolibri1TopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         shared=Shared("shared_expert_intermediate_size", "size", "shared_experts (ungated)"),
         rule="top-k on (LOGITS + bias); weight = sigmoid(gathered logit); renorm iff norm_topk_prob",
         tiny=Tiny(bias_std=0.3,),  # its bias is added to the logits, not to sigmoid scores
    ),
    _row("kolibri1_1", "A", "S3", "Kolibri1_1ForCausalLM", "Kolibri1_1Config", ("Kolibri1_1TopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         shared=Shared("shared_expert_intermediate_size", "size", "shared_experts (ungated)"),
         rule="top-k on (LOGITS + bias); weight = sigmoid(gathered logit); renorm iff norm_topk_prob",
         tiny=Tiny({"head_dim": lambda s: 16 * -(-s.head_dim // 16)},  # NVFP4 key rounding: multiples of 16
                   bias_std=0.3),  # as kolibri1: the bias is added to the logits
    ),
    _row("ergo", "A", "S3", "ErgoForCausalLM", "ErgoConfig", ("ErgoTopkRouter",),
         experts="num_experts", k="num_experts_per_tok",
         shared=Shared("shared_intermediate_size", "size", "shared_experts (ungated, RMS-normed output)"),
         rule="fp32 logits -> sigmoid -> + selection bias -> top-k -> gather unbiased -> renorm(+eps) -> x moe_routed_scaling_factor",
         tiny=Tiny({"initializer_range": 0.2},  # wider embeddings: default ones route every token alike
                   randomize=("ErgoTopkRouter.linear",)),  # the router's weight lives in its linear
    ),
    _row("flint", "A", "S3", "FlintForCausalLM", "FlintConfig", ("FlintTopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         shared=Shared("shared_expert_intermediate_size", "size", "shared_expert (ungated)"),
         rule="sigmoid -> top-k (no bias) -> renorm iff norm_topk_prob; + ungated shared expert",
    ),
    _row("deepseek_v3", "A", "S4", "DeepseekV3ForCausalLM", "DeepseekV3Config", ("DeepseekV3TopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="sigmoid; +bias; group-limited (top-2-sum per group, keep topk_group, -inf fill); renorm iff norm_topk_prob; * routed_scaling_factor",
    ),
    _row("deepseek_v32", "A", "S4", "DeepseekV32ForCausalLM", "DeepseekV32Config", ("DeepseekV32TopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V3 rule",
    ),
    _row("glm4_moe", "A", "S4", "Glm4MoeForCausalLM", "Glm4MoeConfig", ("Glm4MoeTopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V3 rule",
    ),
    _row("param2moe", "A", "S4", "Glm4MoeForCausalLM", "Param2MoeConfig", ("Glm4MoeTopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V3 rule (glm4_moe's model classes under its own config type)", config_of="glm4_moe",
    ),
    _row("minicpm5_moe", "A", "S4", "MiniCPM5MoeForCausalLM", "MiniCPM5MoeConfig", ("MiniCPM5MoeTopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated, one MLP n_shared_experts wide)"),
         rule="DeepSeek-V3 rule (fp32 logits, renorm iff norm_topk_prob)",
    ),
    _row("glm4_moe_lite", "A", "S4", "Glm4MoeLiteForCausalLM", "Glm4MoeLiteConfig", ("Glm4MoeLiteTopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V3 rule",
    ),
    _row("glm4v_moe", "A", "S4", "Glm4vMoeTextModel", "Glm4vMoeTextConfig", ("Glm4vMoeTextTopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V3 rule",
         tiny=Tiny({"rope_parameters": lambda s: _mrope(s, partial_rotary_factor=0.5)}),
    ),
    _row("glm5_next", "A", "S4", "Glm5NextTextModel", "Glm5NextTextConfig", ("Glm5NextTextTopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V3 rule",
         tiny=Tiny(  # validator: NoPE latent attention, index_topk % index_kpool == 0
              {"qk_rope_head_dim": 0, "qk_nope_head_dim": lambda s: s.head_dim, "index_kpool": 4, "layer_types": _INDEXED}),
    ),
    _row("glm_moe_dsa", "A", "S4", "GlmMoeDsaForCausalLM", "GlmMoeDsaConfig", ("GlmMoeDsaTopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V3 rule",
    ),
    _row("dots1", "A", "S4", "Dots1ForCausalLM", "Dots1Config", ("Dots1TopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V3 rule",
    ),
    _row("dots3_note", "A", "S4", "Dots3NoteForCausalLM", "Dots3NoteTextConfig", ("Dots3NoteTextTopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V3 rule",
         tiny=Tiny(  # the sliding-window layers have latent-attention dims of their own (default: 77M parameters)
              {"swa_num_attention_heads": lambda s: s.num_heads, "swa_num_key_value_heads": lambda s: s.num_heads,
               "swa_q_lora_rank": lambda s: 2 * s.head_dim, "swa_kv_lora_rank": 16, "swa_head_dim": lambda s: s.head_dim,
               "swa_qk_nope_head_dim": lambda s: s.head_dim - s.mla_rope_dim, "swa_v_head_dim": lambda s: s.head_dim}),
    ),
    _row("kimi_linear", "A", "S4", "KimiLinearForCausalLM", "KimiLinearConfig", ("KimiLinearTopkRouter",),
         experts="num_local_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V3 rule (config keys num_expert_group / moe_renormalize)",
         tiny=Tiny({"layer_types": _hybrid()}),
    ),
    _row("bailing_hybrid", "A", "S4", "BailingHybridForCausalLM", "BailingHybridConfig", ("BailingHybridTopkRouter",),
         experts="num_local_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V3 rule (config keys num_expert_group / moe_renormalize)",
         tiny=Tiny({"layer_types": _hybrid()}),
    ),
    _row("exaone_moe", "A", "S4", "ExaoneMoeForCausalLM", "ExaoneMoeConfig", ("ExaoneMoeTopkRouter",),
         experts="num_experts", k="num_experts_per_tok",
         shared=Shared("num_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V3 rule",
    ),
    _row("mimo_v2_flash", "A", "S4", "MiMoV2FlashForCausalLM", "MiMoV2FlashConfig", ("MiMoV2FlashTopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         rule="DeepSeek-V3 rule (no shared experts)",
    ),
    _row("nemotron_h", "A", "S4", "NemotronHForCausalLM", "NemotronHConfig", ("NemotronHTopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V3 rule (+ optional latent projection around experts)",
         tiny=Tiny({"layers_block_type": _nemotron_blocks},  # sets the depth; num_hidden_layers is derived from it
              min_layers=2,),  # one block is one mixer: MoE and attention need two
    ),
    _row("solar_open", "A", "S4", "SolarOpenForCausalLM", "SolarOpenConfig", ("SolarOpenTopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V3 rule",
    ),
    _row("hy_v4", "A", "S4", "HYV4ForCausalLM", "HYV4Config", ("HYV4TopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V3 rule",
    ),
    _row("hy_v4_vl", "A", "S4", "HYV4VLTextModel", "HYV4VLTextConfig", ("HYV4VLTopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V3 rule (text tower of the vision-language model)",
         # latent attention: mrope_section must fill half the rotary part of a tiny head
         tiny=Tiny({"rope_parameters": lambda s: _mrope(s, rotary_dim=s.mla_rope_dim)}),
    ),
    _row("axk1", "A", "S4", "AXK1ForCausalLM", "AXK1Config", ("AXK1TopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V3 rule",
    ),
    _row("axk2", "A", "S4", "AXK2ForCausalLM", "AXK2Config", ("AXK2TopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V3 rule but masked groups filled with 0.0 (not -inf); grouping skipped if n_group is None",
    ),
    _row("beam", "A", "S4", "BeamForCausalLM", "BeamConfig", ("BeamTopKRouter",),
         experts="num_experts", k="num_experts_per_tok",
         rule="DeepSeek-V3 rule, sorted top-k; routed_scaling_factor applied to block OUTPUT (not weights)",
    ),
    _row("deepseek_v2", "A", "S5", "DeepseekV2ForCausalLM", "DeepseekV2Config", ("DeepseekV2TopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="softmax; top-k greedy, or group_limited_greedy (max per group, 0.0 fill); NO renorm; * routed_scaling_factor",
    ),
    _row("deepseek_ocr2", "A", "S5", "DeepseekOcr2TextModel", "DeepseekOcr2TextConfig", ("DeepseekOcr2TextTopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V2 rule",
    ),
    _row("unlimited_ocr", "A", "S5", "UnlimitedOcrTextModel", "UnlimitedOcrTextConfig", ("UnlimitedOcrTextTopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="DeepSeek-V2 rule",
    ),
    _row("mistral4", "A", "S5", "Mistral4ForCausalLM", "Mistral4Config", ("Mistral4TopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="softmax; group-limited (top-2-sum, 0.0 fill), no bias; renorm iff norm_topk_prob; * routed_scaling_factor",
    ),
    _row("mistral_large4", "A", "S5", "MistralLarge4TextModel", "MistralLarge4TextConfig", ("MistralLarge4TextTopkRouter",),
         experts="n_routed_experts", k="num_experts_per_tok",
         shared=Shared("n_shared_experts", "count", "shared_experts (ungated)"),
         rule="as mistral4, fp32 logits, always renorm",
    ),
    _row("longcat_flash", "A", "S6", "LongcatFlashForCausalLM", "LongcatFlashConfig", ("LongcatFlashTopkRouter",),
         experts="n_routed_experts", k="moe_topk",
         zero_experts_key="zero_expert_num",
         rule="softmax over routed+ZERO experts; +bias for choice; NO renorm; * routed_scaling_factor; idx>=n_routed_experts are identity experts",
         notes="ids >= n_routed_experts are zero-compute identity experts",
         tiny=Tiny(  # head_dim must equal qk_rope_head_dim; zero-compute identity experts (default 256)
              {"head_dim": lambda s: s.mla_rope_dim, "zero_expert_num": lambda s: max(1, s.num_experts // 4)},
              bias_std=SOFTMAX_BIAS,
              min_top_k=2,),  # its experts squeeze the k axis away when k == 1
    ),
    _row("zaya", "A+", "S6", "ZayaForCausalLM", "ZayaConfig", ("ZayaRouter",),
         experts="num_experts", k="num_experts_per_tok", skip_class=True,
         rule="MLP router (down_proj + EDA state from prev layer) -> softmax over E+1 (skip expert); +balancing_biases for choice; skip choices masked to (idx 0, w 0)",
         notes="skip-class choices are recorded as -1 (the router masks them to expert 0, weight 0)",
         tiny=Tiny(  # the validator allows top-1 only; the router is an MLP (default 256 wide)
              {"num_experts_per_tok": 1, "router_hidden_size": lambda s: s.hidden_size},
              bias_std=SOFTMAX_BIAS),
    ),
    _row("llama4", "C", "S7", "Llama4ForCausalLM", "Llama4TextConfig", ("Llama4Router",),
         experts="num_local_experts", k="num_experts_per_tok",
         shared=Shared(None, None, "shared_expert (ungated)"),
         rule="top-k on logits; weight = sigmoid(top logit) (no renorm); experts get dense [E*T,H] input pre-scaled by scores",
    ),
    _row("phimoe", "A", "S7", "PhimoeForCausalLM", "PhimoeConfig", ("PhimoeTopKRouter",),
         experts="num_local_experts", k="num_experts_per_tok",
         rule="sparsemixer (top-2 with jitter-eps masked softmax; stochastic in training)",
    ),
    _row("doge", "F", "S7", "DogeForCausalLM", "DogeConfig", ("DogeCDMoE",),
         experts="num_experts", k="num_experts_per_tok", logits="product_keys",
         shared=Shared(None, None, "inline dense gate/up/down MLP in the block (ungated)"),
         rule="product-key routing: 2 x sqrt(E) keys, top-k over sum of key scores, softmax (+renorm)",
         notes="routing is computed inline by the MoE block and mixes tokens in a full forward",
         tiny=Tiny(  # no router module: product-key routing inline in the block
              {"is_moe": True, "num_experts": _square_experts}, randomize=("DogeCDMoE.router_gate",)),
    ),
    _row("switch_transformers", "E", "S8", "SwitchTransformersForConditionalGeneration", "SwitchTransformersConfig", ("SwitchTransformersTop1Router",),
         experts="num_experts", k=None,
         rule="softmax -> argmax (top-1) -> capacity drop per sequence (expert_capacity); weight = max prob",
         tags={"encoder": "encoder", "decoder": "decoder"}, fixed_top_k=1, capacity="top1_mask",
         tiny=Tiny(  # capacity per sequence: at tiny sizes a few tokens get dropped (default 64: none)
              {"encoder_sparse_step": _sparse_step, "decoder_sparse_step": _sparse_step, "expert_capacity": 3},
              seq2seq=True),
    ),
    _row("nllb_moe", "E", "S8", "NllbMoeForConditionalGeneration", "NllbMoeConfig", ("NllbMoeTop2Router",),
         experts="num_experts", k=None,
         rule="softmax -> top-1 + top-2 (argmax of logits excluding top-1) -> capacity drop (cumsum over all B*S tokens) -> renorm over surviving",
         tags={"encoder": "encoder", "decoder": "decoder"}, fixed_top_k=2, capacity="top2_combine",
         notes="transformers 5.23 experts ignore the routing decision (model bug); the router decision is recorded",
         tiny=Tiny({"encoder_sparse_step": _sparse_step, "decoder_sparse_step": _sparse_step},
              seq2seq=True),
    ),
]

FAMILIES: dict[str, Family] = {row.family: row for row in _ROWS}
_BY_ROUTER_CLASS: dict[str, Family] = {cls: row for row in _ROWS if row.config_of is None for cls in row.routers}
if len(FAMILIES) != len(_ROWS) or len(_BY_ROUTER_CLASS) != sum(len(r.routers) for r in _ROWS if r.config_of is None):
    raise ValueError("the family table names a family or a router class twice")
if any(row.config_of is not None and set(row.routers) - set(FAMILIES[row.config_of].routers) for row in _ROWS):
    raise ValueError("a config alias row (config_of) must use its owner's router classes")


def supported_families() -> tuple[str, ...]:
    """Names (``config.model_type``) of every family in the table."""
    return tuple(FAMILIES)


def get_family(name: str) -> Family:
    """The table row for ``name``; raises :class:`UnknownArchitectureError` for others."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownArchitectureError(
            f"no moelens adapter knows the architecture {name!r}.",
            hint=f"Supported families ({len(FAMILIES)}): run `moelens families` to list them.",
        ) from None


def family_for_router_class(class_name: str) -> Family | None:
    """The family whose router (or inline MoE block) class is ``class_name``, if any."""
    return _BY_ROUTER_CLASS.get(class_name)


def router_class_names() -> frozenset[str]:
    return frozenset(_BY_ROUTER_CLASS)
