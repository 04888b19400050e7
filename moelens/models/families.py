"""The family table: how each transformers MoE family routes, declared in one place.

One row per model family (``config.model_type``) of transformers 5.x, taken from the capture
survey in the project's design notes. A row says which routing *convention* the family's router
follows (how to read its output; see :mod:`moelens.models.adapters`), which router classes to
hook, which config keys hold the number of experts, k and the shared experts, and the scoring
rule in words (recorded in each run's metadata). Discovery never guesses structure from names
beyond this table.

Conventions:
    A   router returns ``(logits[T,E], weights[T,k], indices[T,k])``
    A+  as A with extra trailing outputs (inkling: shared gammas; zaya: next-layer router state)
    B   router is a bare linear layer returning logits; ids and weights come from the experts call
    C   router returns ``(dense_scores[T,E], logits[T,E])`` (llama4)
    D   router returns a sorted dispatch ``(order, batch_index, gates, sizes, logits)`` (jetmoe)
    E   capacity router returning one-hot dispatch masks; dropped choices recorded as -1
    F   no router module; the MoE block routes inline and returns ``(hidden, logits)`` (doge)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from moelens.errors import UnknownArchitectureError

__all__ = ["FamilySpec", "FAMILIES", "get_family", "supported_families", "family_for_router_class"]

CONVENTIONS = ("A", "A+", "B", "C", "D", "E", "F")
# scoring group -> the normalisation the router applies to its logits (used for router entropy)
SCORING_FUNCTION = {
    "S1": "softmax", "S2": "softmax", "S3": "sigmoid", "S4": "sigmoid",
    "S5": "softmax", "S6": "softmax", "S7": "special", "S8": "softmax",
}


@dataclass(frozen=True)
class FamilySpec:
    """How one model family routes and where to capture it.

    Attributes:
        family: ``config.model_type`` of the family.
        convention: routing convention (see module docstring).
        scoring: scoring-rule group S1-S8 of the design notes.
        routers: class names of the router modules to hook (for F: the MoE block).
        num_experts_key, top_k_key, shared_key: config keys (dotted for nested configs).
        shared: how shared experts are combined, in words.
        rule: the scoring rule in words.
        logits_kind: what the router's logits output holds: ``logits``, ``probs`` (already
            softmaxed), ``softcapped``, ``routed_only`` or ``with_extra`` (extra zero/skip columns).
        tags: module-path fragment -> site tag, for families with several kinds of router.
        secondary_tags: tags whose routers are not the per-layer MLP routing (kept apart).
        fixed_top_k: k when the config has no key for it (capacity routers).
    """

    family: str
    convention: str
    scoring: str
    routers: tuple[str, ...]
    num_experts_key: str
    top_k_key: str | None
    shared_key: str | None
    shared: str
    rule: str
    logits_kind: str = "logits"
    tags: dict[str, str] = field(default_factory=dict)
    secondary_tags: tuple[str, ...] = ()
    fixed_top_k: int | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise ValueError(f"{self.family}: unknown convention {self.convention!r}")
        if self.scoring not in SCORING_FUNCTION:
            raise ValueError(f"{self.family}: unknown scoring group {self.scoring!r}")

    @property
    def scoring_function(self) -> str:
        return SCORING_FUNCTION[self.scoring]


def _f(family, convention, scoring, routers, num_experts_key, top_k_key, shared_key, **kw) -> FamilySpec:
    return FamilySpec(family, convention, scoring, tuple(routers), num_experts_key, top_k_key, shared_key, **kw)


_ROWS = [
    _f("mixtral", "A", "S1", ('MixtralTopKRouter',), "num_local_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="softmax -> top-k -> renorm"),
    _f("minimax", "A", "S1", ('MiniMaxTopKRouter',), "num_local_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="softmax -> top-k -> renorm"),
    _f("qwen2_moe", "A", "S1", ('Qwen2MoeTopKRouter',), "num_experts", 'num_experts_per_tok', 'shared_expert_intermediate_size',
       shared="shared_expert x sigmoid(shared_expert_gate)",
       rule="softmax -> top-k -> renorm iff norm_topk_prob; + sigmoid(shared_expert_gate) * shared expert"),
    _f("qwen3_moe", "A", "S1", ('Qwen3MoeTopKRouter',), "num_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="softmax -> top-k -> renorm iff norm_topk_prob"),
    _f("qwen3_next", "A", "S1", ('Qwen3NextTopKRouter',), "num_experts", 'num_experts_per_tok', 'shared_expert_intermediate_size',
       shared="shared_expert x sigmoid(shared_expert_gate)",
       rule="softmax -> top-k -> renorm iff norm_topk_prob; sigmoid shared_expert_gate"),
    _f("qwen3_5_moe", "A", "S1", ('Qwen3_5MoeTopKRouter',), "num_experts", 'num_experts_per_tok', 'shared_expert_intermediate_size',
       shared="shared_expert x sigmoid(shared_expert_gate)",
       rule="softmax -> top-k -> always renorm; sigmoid shared_expert_gate"),
    _f("qwen4_exp", "A", "S1", ('Qwen4ExpTextTopKRouter',), "num_experts", 'num_experts_per_tok', 'shared_expert_intermediate_size',
       shared="shared_expert x sigmoid(shared_expert_gate)",
       rule="softmax -> top-k -> renorm iff norm_topk_prob; sigmoid shared_expert_gate"),
    _f("qwen3_vl_moe", "A", "S1", ('Qwen3VLMoeTextTopKRouter',), "num_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="softmax -> top-k -> always renorm"),
    _f("qwen3_omni_moe", "A", "S1", ('Qwen3OmniMoeThinkerTextTopKRouter',), "num_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="softmax -> top-k -> renorm iff norm_topk_prob (thinker); talker adds sigmoid shared gate"),
    _f("olmoe", "A", "S1", ('OlmoeTopKRouter',), "num_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="softmax -> top-k -> renorm iff norm_topk_prob"),
    _f("flex_olmo", "A", "S1", ('FlexOlmoTopKRouter',), "num_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="softmax -> top-k -> renorm iff norm_topk_prob"),
    _f("mellum", "A", "S1", ('MellumTopKRouter',), "num_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="softmax -> top-k -> renorm iff norm_topk_prob"),
    _f("jamba", "A", "S1", ('JambaTopKRouter',), "num_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="softmax -> top-k, NO renorm"),
    _f("hunyuan_v1_moe", "A", "S1", ('HunYuanMoEV1Gate',), "num_experts", 'moe_topk', None,
       shared="shared_mlp (ungated)",
       rule="softmax -> top-k -> renorm (per-layer num_experts/topk lists allowed); + ungated shared_mlp"),
    _f("dbrx", "B", "S1", ('DbrxRouter',), "ffn_config.moe_num_experts", 'ffn_config.moe_top_k', None,
       shared="none",
       rule="router=bare Linear (logits); block: softmax -> top-k -> divide by L_p norm (moe_normalize_expert_weights)"),
    _f("gemma4", "A", "S1", ('Gemma4TextRouter',), "num_experts", 'top_k_experts', None,
       shared="none",
       rule="RMSNorm(no scale)*scale*d^-0.5 -> proj -> softmax -> top-k -> renorm -> * per_expert_scale[idx]; output[0] = PROBS",
       logits_kind="probs"),
    _f("diffusion_gemma", "A", "S1", ('DiffusionGemmaTextRouter',), "num_experts", 'top_k_experts', None,
       shared="none",
       rule="as gemma4 (output[0] = softmax PROBS, * per_expert_scale)",
       logits_kind="probs"),
    _f("ernie4_5_moe", "A", "S6", ('Ernie4_5_MoeTopKRouter',), "moe_num_experts", 'moe_k', 'moe_num_shared_experts',
       shared="shared_experts (ungated)",
       rule="softmax; top-k on (probs + e_score_correction_bias) [moe_statics]; weights=probs/clamp(sum,norm_min)"),
    _f("ernie4_5_vl_moe", "A", "S6", ('Ernie4_5_VLMoeMoeTopKRouter',), "moe_num_experts", 'moe_k', 'moe_num_shared_experts',
       shared="mlp.shared_experts on the modality block (ungated)",
       rule="as ernie4_5_moe, separate text/vision routers (modality-isolated)",
       tags={"text_moe": "text", "vision_moe": "vision"}, secondary_tags=("vision",)),
    _f("gpt_oss", "A", "S2", ('GptOssTopKRouter',), "num_local_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="Linear WITH bias -> top-k on logits -> softmax over the k"),
    _f("openai_privacy_filter", "A", "S2", ('OpenAIPrivacyFilterTopKRouter',), "num_local_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="Linear with bias -> top-k on logits -> softmax over k -> / top_k"),
    _f("granitemoe", "A", "S2", ('GraniteMoeTopKRouter',), "num_local_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="top-k on logits -> softmax over k"),
    _f("granitemoeshared", "A", "S2", ('GraniteMoeSharedTopKRouter',), "num_local_experts", 'num_experts_per_tok', 'shared_intermediate_size',
       shared="decoder-layer shared_mlp (ungated, if shared_intermediate_size>0)",
       rule="top-k on logits -> softmax over k (+ ungated shared MLP)"),
    _f("granitemoe_swa", "A", "S2", ('GraniteMoeSWATopKRouter',), "num_local_experts", 'num_experts_per_tok', 'shared_intermediate_size',
       shared="decoder-layer shared_mlp (ungated, if shared_intermediate_size>0)",
       rule="top-k on logits -> softmax over k"),
    _f("granitemoehybrid", "A", "S2", ('GraniteMoeHybridTopKRouter',), "num_local_experts", 'num_experts_per_tok', 'shared_intermediate_size',
       shared="decoder-layer shared_mlp (ungated)",
       rule="top-k on logits -> softmax over k"),
    _f("aria", "A", "S2", ('AriaTextTopKRouter',), "moe_num_experts", 'moe_topk', 'moe_num_shared_experts',
       shared="shared_experts (ungated)",
       rule="top-k on logits -> softmax over k (+ shared experts)"),
    _f("jetmoe", "D", "S2", ('JetMoeTopKGating',), "num_local_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="top-k on logits -> softmax over k; ALSO mixture-of-attention-heads router per layer",
       tags={"self_attention": "attention"}, secondary_tags=("attention",), notes="a second router per layer routes attention heads (mixture of attention)"),
    _f("cohere2_moe", "A", "S2", ('Cohere2MoeTopKRouter',), "num_experts", 'num_experts_per_tok', 'num_shared_experts',
       shared="shared_experts, combined by sum or average",
       rule="top-k on logits -> softmax over k (expert_selection_fn=softmax) or sigmoid(+renorm)"),
    _f("minimax_m2", "A", "S3", ('MiniMaxM2TopKRouter',), "num_local_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="sigmoid; +e_score_correction_bias (held by BLOCK, passed as arg) for choice; renorm"),
    _f("minimax_m3_vl", "A", "S3", ('MiniMaxM3VLTopKRouter',), "num_local_experts", 'num_experts_per_tok', 'shared_intermediate_size',
       shared="shared_experts (ungated)",
       rule="sigmoid; +bias (router buffer) for choice; renorm; routed_scaling_factor applied to block OUTPUT"),
    _f("step3p7", "A", "S3", ('Step3p7TopKRouter',), "n_routed_experts", 'num_experts_per_tok', 'share_expert_dim',
       shared="shared_experts (ungated)",
       rule="sigmoid; +bias for choice; renorm; moe_router_scaling_factor applied to block OUTPUT"),
    _f("laguna", "A", "S3", ('LagunaTopKRouter',), "num_experts", 'num_experts_per_tok', 'shared_expert_intermediate_size',
       shared="shared_experts (ungated)",
       rule="optional tanh soft-cap of logits; sigmoid; +bias for choice; renorm; scaling on block OUTPUT",
       logits_kind="softcapped"),
    _f("hy_v3", "A", "S3", ('HYV3TopKRouter',), "num_experts", 'num_experts_per_tok', 'num_shared_experts',
       shared="shared_experts (ungated)",
       rule="sigmoid; +bias (BLOCK buffer, passed as arg) for choice; renorm(+1e-20); * router_scaling_factor"),
    _f("afmoe", "A", "S3", ('AfmoeTokenChoiceRouter',), "num_experts", 'num_experts_per_tok', 'num_shared_experts',
       shared="shared_experts (ungated)",
       rule="sigmoid; +expert_bias (BLOCK param, passed as arg) for choice; renorm(+1e-20); * route_scale"),
    _f("lfm2_moe", "A", "S3", ('Lfm2MoeTopKRouter',), "num_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="sigmoid; +expert_bias (BLOCK buffer, arg) iff use_expert_bias; renorm(+1e-6) iff norm_topk_prob; * routed_scaling_factor"),
    _f("inkling", "A+", "S3", ('InklingTopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts weighted by router output[3] (shared_gammas)",
       rule="sigmoid over routed+shared logits; +bias for choice among routed; weights = softmax(logsigmoid) JOINTLY with shared experts * route_scale * global_scale; returns 4-tuple",
       logits_kind="routed_only"),
    _f("inkling2", "A", "S3", ('Inkling2TopKRouter',), "n_routed_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="score_fn(config.scoring_func); +bias for choice; renorm(+1e-20); * routed_scaling_factor"),
    _f("deepseek_v4", "A", "S3", ('DeepseekV4HashRouter', 'DeepseekV4TopKRouter'), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="score_fn(scoring_func); +bias for choice; renorm; * scale. First layers = HASH routing (tid2eid[input_ids])",
       notes="first layers use hash routing (tid2eid[input_ids])"),
    _f("muse_spark", "A", "S3", ('MuseSparkTopkRouter',), "num_local_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="logits*output_multiplier; sigmoid; +bias for choice; renorm(+1e-15); * routed_scaling_factor",
       notes="logits already multiplied by output_multiplier"),
    _f("kolibri1", "A", "S3", ('Kolibri1TopKRouter',), "num_experts", 'num_experts_per_tok', 'shared_expert_intermediate_size',
       shared="shared_experts (ungated)",
       rule="top-k on (LOGITS + bias); weight = sigmoid(gathered logit); renorm iff norm_topk_prob"),
    _f("flint", "A", "S3", ('FlintTopKRouter',), "num_experts", 'num_experts_per_tok', 'shared_expert_intermediate_size',
       shared="shared_expert (ungated)",
       rule="sigmoid -> top-k (no bias) -> renorm iff norm_topk_prob; + ungated shared expert"),
    _f("deepseek_v3", "A", "S4", ('DeepseekV3TopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="sigmoid; +bias; group-limited (top-2-sum per group, keep topk_group, -inf fill); renorm iff norm_topk_prob; * routed_scaling_factor"),
    _f("deepseek_v32", "A", "S4", ('DeepseekV32TopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="DeepSeek-V3 rule"),
    _f("glm4_moe", "A", "S4", ('Glm4MoeTopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="DeepSeek-V3 rule"),
    _f("glm4_moe_lite", "A", "S4", ('Glm4MoeLiteTopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="DeepSeek-V3 rule"),
    _f("glm4v_moe", "A", "S4", ('Glm4vMoeTextTopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="DeepSeek-V3 rule"),
    _f("glm5_next", "A", "S4", ('Glm5NextTextTopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="DeepSeek-V3 rule"),
    _f("glm_moe_dsa", "A", "S4", ('GlmMoeDsaTopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="DeepSeek-V3 rule"),
    _f("dots1", "A", "S4", ('Dots1TopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="DeepSeek-V3 rule"),
    _f("dots3_note", "A", "S4", ('Dots3NoteTextTopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="DeepSeek-V3 rule"),
    _f("kimi_linear", "A", "S4", ('KimiLinearTopkRouter',), "num_local_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="DeepSeek-V3 rule (config keys num_expert_group / moe_renormalize)"),
    _f("bailing_hybrid", "A", "S4", ('BailingHybridTopkRouter',), "num_local_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="DeepSeek-V3 rule (config keys num_expert_group / moe_renormalize)"),
    _f("exaone_moe", "A", "S4", ('ExaoneMoeTopkRouter',), "num_experts", 'num_experts_per_tok', 'num_shared_experts',
       shared="shared_experts (ungated)",
       rule="DeepSeek-V3 rule"),
    _f("mimo_v2_flash", "A", "S4", ('MiMoV2FlashTopkRouter',), "n_routed_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="DeepSeek-V3 rule (no shared experts)"),
    _f("nemotron_h", "A", "S4", ('NemotronHTopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="DeepSeek-V3 rule (+ optional latent projection around experts)"),
    _f("solar_open", "A", "S4", ('SolarOpenTopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="DeepSeek-V3 rule"),
    _f("hy_v4", "A", "S4", ('HYV4TopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="DeepSeek-V3 rule"),
    _f("axk1", "A", "S4", ('AXK1TopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="DeepSeek-V3 rule"),
    _f("axk2", "A", "S4", ('AXK2TopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="DeepSeek-V3 rule but masked groups filled with 0.0 (not -inf); grouping skipped if n_group is None"),
    _f("beam", "A", "S4", ('BeamTopKRouter',), "num_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="DeepSeek-V3 rule, sorted top-k; routed_scaling_factor applied to block OUTPUT (not weights)"),
    _f("deepseek_v2", "A", "S5", ('DeepseekV2TopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="softmax; top-k greedy, or group_limited_greedy (max per group, 0.0 fill); NO renorm; * routed_scaling_factor"),
    _f("deepseek_ocr2", "A", "S5", ('DeepseekOcr2TextTopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="DeepSeek-V2 rule"),
    _f("unlimited_ocr", "A", "S5", ('UnlimitedOcrTextTopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="DeepSeek-V2 rule"),
    _f("mistral4", "A", "S5", ('Mistral4TopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="softmax; group-limited (top-2-sum, 0.0 fill), no bias; renorm iff norm_topk_prob; * routed_scaling_factor"),
    _f("mistral_large4", "A", "S5", ('MistralLarge4TextTopkRouter',), "n_routed_experts", 'num_experts_per_tok', 'n_shared_experts',
       shared="shared_experts (ungated)",
       rule="as mistral4, fp32 logits, always renorm"),
    _f("longcat_flash", "A", "S6", ('LongcatFlashTopkRouter',), "n_routed_experts", 'moe_topk', 'zero_expert_num',
       shared="none",
       rule="softmax over routed+ZERO experts; +bias for choice; NO renorm; * routed_scaling_factor; idx>=n_routed_experts are identity experts",
       logits_kind="with_extra", notes="ids >= n_routed_experts are zero-compute identity experts"),
    _f("zaya", "A+", "S6", ('ZayaRouter',), "num_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="MLP router (down_proj + EDA state from prev layer) -> softmax over E+1 (skip expert); +balancing_biases for choice; skip choices masked to (idx 0, w 0)",
       logits_kind="with_extra", notes="skip-class choices are recorded as -1 (the router masks them to expert 0, weight 0)"),
    _f("llama4", "C", "S7", ('Llama4Router',), "num_local_experts", 'num_experts_per_tok', None,
       shared="shared_expert (ungated)",
       rule="top-k on logits; weight = sigmoid(top logit) (no renorm); experts get dense [E*T,H] input pre-scaled by scores"),
    _f("phimoe", "A", "S7", ('PhimoeTopKRouter',), "num_local_experts", 'num_experts_per_tok', None,
       shared="none",
       rule="sparsemixer (top-2 with jitter-eps masked softmax; stochastic in training)"),
    _f("doge", "F", "S7", ('DogeCDMoE',), "num_experts", 'num_experts_per_tok', None,
       shared="inline dense gate/up/down MLP in the block (ungated)",
       rule="product-key routing: 2 x sqrt(E) keys, top-k over sum of key scores, softmax (+renorm)",
       notes="routing is computed inline by the MoE block and mixes tokens in a full forward"),
    _f("switch_transformers", "E", "S8", ('SwitchTransformersTop1Router',), "num_experts", None, None,
       shared="none",
       rule="softmax -> argmax (top-1) -> capacity drop per sequence (expert_capacity); weight = max prob",
       tags={"encoder": "encoder", "decoder": "decoder"}, fixed_top_k=1),
    _f("nllb_moe", "E", "S8", ('NllbMoeTop2Router',), "num_experts", None, None,
       shared="none",
       rule="softmax -> top-1 + top-2 (argmax of logits excluding top-1) -> capacity drop (cumsum over all B*S tokens) -> renorm over surviving",
       tags={"encoder": "encoder", "decoder": "decoder"}, fixed_top_k=2, notes="transformers 5.23 experts ignore the routing decision (model bug); the router decision is recorded"),
]

FAMILIES: dict[str, FamilySpec] = {row.family: row for row in _ROWS}
_BY_ROUTER_CLASS: dict[str, FamilySpec] = {cls: row for row in _ROWS for cls in row.routers}


def supported_families() -> tuple[str, ...]:
    """Names (``config.model_type``) of every family moelens captures."""
    return tuple(FAMILIES)


def get_family(name: str) -> FamilySpec:
    """The table row for ``name``; raises :class:`UnknownArchitectureError` for others."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownArchitectureError(
            f"no moelens adapter knows the architecture {name!r}.",
            hint=f"Supported families ({len(FAMILIES)}): run `moelens families` to list them.",
        ) from None


def family_for_router_class(class_name: str) -> FamilySpec | None:
    """The family whose router (or inline MoE block) class is ``class_name``, if any."""
    return _BY_ROUTER_CLASS.get(class_name)


def router_class_names() -> frozenset[str]:
    return frozenset(_BY_ROUTER_CLASS)
