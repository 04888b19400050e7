"""Tiny random models for every family of the family table: offline, on CPU, in seconds.

This module owns the recipe that turns a family name (``config.model_type``) into a tiny config, a
seeded random model and matching inputs. The test-suite verifies capture on all 72 families with
it, benchmarks take shapes from it, and users try a pipeline without downloading anything. The
per-family facts (model and config classes, routers, ``tiny`` quirks) are rows of the family table
(:mod:`moelens.models.families`); the generic part of the recipe lives here (the survey's §6,
"Building tiny models"):

* every size, expert, top-k and shared-expert key the family's config class has is set;
* per-layer string lists (``layer_types``, ...) are resampled to the new depth and numeric
  per-layer lists set to ``None``, so that the config regenerates them;
* where a family has dense layers, layer 0 is dense (from 3 layers up, so that 2 MoE layers
  remain); group routing gets ``n_group=4, topk_group=2`` (fewer where the experts do not allow it);
* routers are re-drawn to give unit-variance logits, and selection biases and hash tables so that
  biased, grouped and hashed selection differs from a plain top-k of the logits.

Torch and transformers are imported inside the functions, so importing this module stays cheap.

    >>> from moelens.models.tiny import build_tiny_model, tiny_inputs
    >>> model = build_tiny_model("qwen3_moe")                  # doctest: +SKIP
    >>> logits = model(**tiny_inputs("qwen3_moe", model)).logits  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import TYPE_CHECKING, Any, Callable

from moelens.errors import ConfigError, UnknownArchitectureError
from moelens.models.families import FAMILIES
from moelens.models.family_spec import Family, Sizes

if TYPE_CHECKING:  # pragma: no cover
    import torch
    import transformers

__all__ = ["TINY_FAMILIES", "tiny_config", "build_tiny_model", "tiny_inputs", "family_model_class",
           "family_available"]

TINY_FAMILIES: tuple[str, ...] = tuple(FAMILIES)

# Where selection is biased (never the weights), wherever it lives: router, block or statics module.
_SELECTION_BIASES = frozenset({"e_score_correction_bias", "expert_bias", "balancing_biases"})
_HASH_TABLES = frozenset({"tid2eid"})  # [vocab, k] expert ids of hash-routed layers
_ROUTER_BIAS_STD = 0.1  # additive biases of router linears (gpt_oss, zaya's MLP)


def _groups(s: Sizes) -> tuple[int, int]:
    """(n_group, topk_group): 4 groups keeping 2 when the experts allow it, else fewer."""
    for n_group in (4, 2):
        per_group = s.num_experts // n_group
        if s.num_experts % n_group == 0 and per_group >= 2:
            return n_group, min(n_group, max(n_group // 2, -(-s.top_k // per_group)))
    return 1, 1


def _each(names: str, value: Callable[[Sizes], Any]) -> dict[str, Callable[[Sizes], Any]]:
    return dict.fromkeys(names.split(), value)


# config key -> value; set only where the family's config class has the key
_GENERIC: dict[str, Callable[[Sizes], Any]] = {
    **_each("num_hidden_layers n_layers num_layers num_decoder_layers encoder_layers decoder_layers",
            lambda s: s.num_layers),
    **_each("hidden_size d_model", lambda s: s.hidden_size),
    "vocab_size": lambda s: s.vocab_size,
    **_each("num_attention_heads n_heads num_heads encoder_attention_heads decoder_attention_heads "
            "swa_num_attention_heads num_sliding_attention_heads", lambda s: s.num_heads),
    **_each("num_key_value_heads swa_num_key_value_heads", lambda s: s.num_heads // 2),
    **_each("head_dim swa_head_dim d_kv kv_channels v_head_dim", lambda s: s.head_dim),
    **_each("intermediate_size d_ff encoder_ffn_dim decoder_ffn_dim ffn_hidden_size dense_intermediate_size "
            "intermediate_size_mlp", lambda s: s.ffn),
    **_each("moe_intermediate_size expert_ffn_hidden_size moe_hidden_size shared_expert_intermediate_size "
            "shared_intermediate_size share_expert_dim moe_shared_expert_intermediate_size "
            "shared_experts_intermediate_size", lambda s: s.expert_ffn),
    # experts and routing
    **_each("num_experts num_local_experts n_routed_experts moe_num_experts", lambda s: s.num_experts),
    **_each("num_experts_per_tok moe_topk moe_k top_k_experts num_experts_per_token", lambda s: s.top_k),
    **_each("n_shared_experts num_shared_experts moe_num_shared_experts", lambda s: 1),
    **_each("n_group num_expert_group", lambda s: _groups(s)[0]),
    "topk_group": lambda s: _groups(s)[1],
    "topk_method": lambda s: "group_limited_greedy",  # deepseek_v2 family: let its groups count
    # which layers are MoE
    **_each("first_k_dense_replace num_dense_layers moe_layer_start_index", lambda s: s.n_dense),
    "mlp_only_layers": lambda s: list(range(s.n_dense)),
    "moe_layer_end_index": lambda s: s.num_layers - 1,
    **_each("moe_layer_interval interleave_moe_layer_step", lambda s: 1),
    "mlp_layer_types": lambda s: s.mlp_types(),
    "moe_layers": lambda s: list(range(s.n_dense, s.num_layers)),
    # latent attention, sparse-attention indexers, linear attention, mamba
    "kv_lora_rank": lambda s: 16,
    "qk_rope_head_dim": lambda s: s.mla_rope_dim,
    "qk_nope_head_dim": lambda s: s.head_dim - s.mla_rope_dim,
    **_each("index_n_heads index_num_heads", lambda s: 2),
    **_each("index_head_dim linear_key_head_dim linear_value_head_dim linear_head_dim", lambda s: s.head_dim),
    "index_topk": lambda s: 8,
    **_each("linear_num_key_heads linear_num_heads", lambda s: s.num_heads // 2),
    "linear_num_value_heads": lambda s: s.num_heads,
    "use_mamba_kernels": lambda s: False,
    **_each("mamba_d_state ssm_state_size mamba_dt_rank mamba_chunk_size chunk_size", lambda s: 8),
    **_each("mamba_n_heads mamba_num_heads", lambda s: 2 * s.hidden_size // 16),
    **_each("mamba_d_head mamba_head_dim", lambda s: 16),
    "n_groups": lambda s: 1,
}

# latent attention (any config with kv_lora_rank): the validators want one KV head per query head
_LATENT_ATTENTION: dict[str, Callable[[Sizes], Any]] = {"num_key_value_heads": lambda s: s.num_heads}


def _token_id(fallback: int) -> Callable[[Sizes, Any], Any]:
    """A special token id outside the tiny vocabulary moves to ``fallback`` (lists entry-wise)."""

    def fix(s: Sizes, default: Any) -> Any:
        if isinstance(default, list):
            return [fix(s, d) for d in default]
        return default if default < s.vocab_size else fallback

    return fix


# optional features, resized only where the family's default sets them (not None)
_IF_SET: dict[str, Callable[[Sizes, Any], Any]] = {
    "q_lora_rank": lambda s, default: 2 * s.head_dim,
    "pad_token_id": _token_id(0),
    "bos_token_id": _token_id(1),
    "eos_token_id": _token_id(2),
}


def tiny_config(
    family: str,
    *,
    num_layers: int = 4,
    hidden_size: int = 64,
    num_experts: int = 8,
    top_k: int = 2,
    vocab_size: int = 256,
    **overrides: Any,
) -> transformers.PreTrainedConfig:
    """A tiny config of ``family``'s config class (the text config for composite models).

    Other sizes follow ``hidden_size``: 4 heads (2 KV heads; latent attention: 4), dense FFN 2x,
    expert and shared-expert FFN x/2, one shared expert where the family has them. ``overrides`` are
    config kwargs applied last. Where a family cannot honour a size: zaya is top-1 whatever
    ``top_k`` says (its validator); doge rounds ``num_experts`` up to a perfect square (8 -> 9);
    switch_transformers routes top-1 and nllb_moe top-2 by design; longcat_flash adds
    ``num_experts // 4`` zero-compute experts. Builds no model and reads no file.

    Raises:
        UnknownArchitectureError: ``family`` is not in :data:`TINY_FAMILIES`.
        ConfigError: a size the family cannot build (e.g. ``top_k > num_experts``).
    """
    spec = _family(family)
    _check_sizes(family, spec, num_layers, hidden_size, num_experts, top_k, vocab_size)
    import transformers

    family_model_class(family)  # a clear error where this transformers lacks the family
    config_cls = getattr(transformers, spec.config)
    sizes = Sizes(num_layers, hidden_size, num_experts, top_k, vocab_size)
    keys = _config_keys(config_cls)
    default = config_cls()

    kwargs = {key: value(sizes) for key, value in _GENERIC.items() if key in keys}
    if "kv_lora_rank" in keys:
        kwargs.update({key: value(sizes) for key, value in _LATENT_ATTENTION.items() if key in keys})
    for key, value in _IF_SET.items():
        if key in keys and getattr(default, key, None) is not None:
            kwargs[key] = value(sizes, getattr(default, key))
    explicit = set(kwargs) | set(spec.tiny.overrides) | set(overrides)
    kwargs.update(_per_layer_lists(default, num_layers, skip=explicit))
    kwargs.update({key: value(sizes) if callable(value) else value for key, value in spec.tiny.overrides.items()})
    kwargs.update(overrides)
    return config_cls(**kwargs)


def family_available(family: str) -> bool:
    """Whether the installed transformers has ``family``'s model and config classes (newer families
    of the table are missing from older releases)."""
    spec = _family(family)
    import transformers

    return hasattr(transformers, spec.model) and hasattr(transformers, spec.config)


def family_model_class(family: str) -> type:
    """The transformers class that :func:`build_tiny_model` instantiates for ``family``."""
    spec = _family(family)
    import transformers

    if not family_available(family):
        raise UnknownArchitectureError(
            f"{family} is not in the installed transformers {transformers.__version__} (no {spec.model});"
            " upgrade transformers to build it.")
    return getattr(transformers, spec.model)


def build_tiny_model(
    family: str,
    *,
    seed: int = 0,
    dtype: torch.dtype | str | None = None,
    randomize_routing: bool = True,
    **config_kwargs: Any,
) -> transformers.PreTrainedModel:
    """A seeded random tiny ``family`` model on CPU, in ``eval()`` mode.

    The same ``seed`` gives the same weights; the global torch RNG is left as it was. ``dtype``
    defaults to float32; parameters the class keeps in fp32 under half precision
    (``_keep_in_fp32_modules_strict``) stay fp32, as ``from_pretrained`` leaves them.
    ``randomize_routing`` re-draws router weights (unit-variance logits), selection biases
    (N(0, 0.1) on sigmoid scores, N(0, 0.05) on softmax probabilities) and hash tables (distinct
    random experts per token). Without it routing is transformers' initialisation: near-uniform
    logits, zero biases, and a deepseek_v4 hash table that sends every token to expert 0.
    ``config_kwargs`` go to :func:`tiny_config`.
    """
    spec = _family(family)
    config = tiny_config(family, **config_kwargs)
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = family_model_class(family)(config)
    if randomize_routing:
        _randomize_routing(model, spec, seed)
    model.eval()
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if dtype is not None and dtype != torch.float32:
        _cast(model, dtype)
    return model


def tiny_inputs(family: str, model: Any, *, batch: int = 2, seq: int = 12, seed: int = 0) -> dict[str, Any]:
    """Kwargs for ``model(**inputs)``: random token ids (never the pad id), a full attention mask.

    Seq2seq families also get ``decoder_input_ids``, ``2 * seq // 3`` long: a length unlike the
    encoder's, so that mixing the two up shows.
    """
    spec = _family(family)
    import torch

    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    pad = getattr(model.config, "pad_token_id", None)

    def token_ids(length: int) -> torch.Tensor:
        ids = torch.randint(0, vocab, (batch, length), generator=generator)
        if isinstance(pad, int) and 0 <= pad < vocab:
            ids[ids == pad] = (pad + 1) % vocab
        return ids

    inputs = {"input_ids": token_ids(seq), "attention_mask": torch.ones(batch, seq, dtype=torch.long)}
    if spec.tiny.seq2seq:
        inputs["decoder_input_ids"] = token_ids(max(1, 2 * seq // 3))
    return inputs


def _family(family: str) -> Family:
    try:
        return FAMILIES[family]
    except KeyError:
        raise UnknownArchitectureError(
            f"No tiny model for family {family!r}.",
            hint="moelens.models.tiny.TINY_FAMILIES lists the supported model_type names.",
        ) from None


def _check_sizes(family: str, spec: Family, layers: int, hidden: int, experts: int, k: int, vocab: int) -> None:
    if layers < spec.tiny.min_layers:
        raise ConfigError(f"{family} needs num_layers >= {spec.tiny.min_layers}, got {layers}.")
    if hidden < 32 or hidden % 16:
        raise ConfigError(f"hidden_size must be a multiple of 16 and at least 32 (4 heads), got {hidden}.")
    if not spec.tiny.min_top_k <= k <= experts:
        raise ConfigError(f"{family} needs {spec.tiny.min_top_k} <= top_k <= num_experts, got {k} and {experts}.")
    if vocab < 8:
        raise ConfigError(f"vocab_size must be at least 8 (special token ids live below it), got {vocab}.")


def _config_keys(config_cls: type) -> set[str]:
    fields = {f.name for f in dataclasses.fields(config_cls)} if dataclasses.is_dataclass(config_cls) else set()
    return fields | set(getattr(config_cls, "attribute_map", {}))


def _resample(types: list[str], n: int) -> list[str]:
    """The first entry and the last n-1 (cycled when deeper), then each kind that got lost, if room."""
    tail = types[1:] or types
    repeats = -(-(n - 1) // len(tail))
    out = types[:1] + (tail * repeats)[len(tail) * repeats - (n - 1) :]
    missing = [kind for kind in dict.fromkeys(types) if kind not in out]
    for position in range(1, n):
        if missing and out.count(out[position]) > 1:
            out[position] = missing.pop(0)
    return out


def _per_layer_lists(default: Any, num_layers: int, skip: set[str]) -> dict[str, Any]:
    """Every list the default config keeps per layer: strings resampled, numbers regenerated."""
    depths = (getattr(default, key, None) for key in ("num_hidden_layers", "n_layers", "num_layers"))
    depth = next((value for value in depths if isinstance(value, int)), None)
    out: dict[str, Any] = {}
    for key, value in vars(default).items():
        if key in skip or key.startswith("_") or not isinstance(value, list) or len(value) != depth:
            continue
        out[key] = _resample(value, num_layers) if all(isinstance(v, str) for v in value) else None
    return out


def _router_modules(model: Any, names: tuple[str, ...]) -> list[Any]:
    """Modules of the named router classes ("Class.attr": that submodule of each Class)."""
    attrs = dict(name.partition(".")[::2] for name in names)
    found = []
    for module in model.modules():
        attr = attrs.get(type(module).__name__)
        if attr is not None:
            found.append(getattr(module, attr) if attr else module)
    return found


def _randomize_routing(model: Any, spec: Family, seed: int) -> None:
    """Re-draw router weights, selection biases and hash tables from a generator seeded by ``seed``."""
    import torch

    generator = torch.Generator().manual_seed(seed + 0x5EED)  # not the init stream of the same seed

    def normal_(tensor: torch.Tensor, std: float) -> None:
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * std)

    with torch.no_grad():
        for router in _router_modules(model, spec.tiny.randomize or spec.routers):
            for name, param in router.named_parameters():
                leaf = name.rpartition(".")[2]
                if leaf in _SELECTION_BIASES:
                    continue
                if param.ndim >= 2:  # unit-variance logits from RMS-normalised input
                    normal_(param, spec.tiny.router_gain / math.sqrt(param.shape[-1]))
                elif leaf == "bias":
                    normal_(param, _ROUTER_BIAS_STD)
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            leaf = name.rpartition(".")[2]
            if leaf in _SELECTION_BIASES:
                normal_(tensor, spec.tiny.bias_std)
            elif leaf in _HASH_TABLES:
                num_experts = model.config.num_local_experts
                order = torch.rand((tensor.shape[0], num_experts), generator=generator).argsort(dim=-1)
                tensor.copy_(order[:, : tensor.shape[1]])


def _cast(model: Any, dtype: torch.dtype) -> None:
    """``model.to(dtype)``, keeping ``_keep_in_fp32_modules_strict`` tensors in fp32."""
    import torch

    model.to(dtype)
    patterns = getattr(model, "_keep_in_fp32_modules_strict", None)
    if not patterns:
        return
    keep = re.compile("|".join(pattern.replace("*", ".*") for pattern in patterns))
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if keep.search(name) and tensor.is_floating_point():
            tensor.data = tensor.data.to(torch.float32)
