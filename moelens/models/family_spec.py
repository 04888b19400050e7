"""The shape of one row of the family table: everything moelens' code needs to know about a family.

A :class:`Family` row says how a transformers MoE family routes and where to capture it: the model
and config classes, the router classes to hook, the routing *convention* (how to read a router's
output, see :mod:`moelens.models.adapters`), the config keys of E, k and the shared experts, the
layout of the router's logits, extra expert ids beyond the routed ones (zero-compute experts, a
skip class), capacity-router masks, looped layers, and the quirks a tiny random build needs. Code
reads these fields; it never branches on a family's name.

Conventions:
    A   router returns ``(logits[T,E], weights[T,k], indices[T,k])``
    A+  as A with extra trailing outputs (inkling: shared gammas; zaya: next-layer router state)
    B   router is a bare linear layer returning logits; ids and weights come from the experts call
    C   router returns ``(dense_scores[T,E], logits[T,E])`` (llama4)
    D   router returns a sorted dispatch ``(order, batch_index, gates, sizes, logits)`` (jetmoe)
    E   capacity router returning dispatch masks; dropped choices recorded as -1 (see ``capacity``)
    F   no router module; the MoE block routes inline and returns ``(hidden, logits)`` (doge)

Nothing here imports torch or transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

__all__ = ["Family", "Shared", "Tiny", "Loop", "Sizes", "CONVENTIONS", "SCORING_FUNCTION", "LOGITS_LAYOUTS"]

CONVENTIONS = ("A", "A+", "B", "C", "D", "E", "F")
# scoring group -> the normalisation the router applies to its logits (used for router entropy)
SCORING_FUNCTION = {
    "S1": "softmax", "S2": "softmax", "S3": "sigmoid", "S4": "sigmoid",
    "S5": "softmax", "S6": "softmax", "S7": "special", "S8": "softmax", "S?": "unknown",
}
# what the logits output of a router holds
LOGITS_LAYOUTS = (
    "logits",        # [T, E (+ zero experts) (+ skip class)] pre-activation scores
    "probs",         # softmax probabilities (gemma4): log() gives logits up to a per-token constant
    "softcapped",    # tanh soft-capped logits (laguna)
    "routed_only",   # only the routed experts' columns of a joint routed+shared scoring (inkling)
    "product_keys",  # 2 x sqrt(E) product-key scores per token, not [T, E] (doge)
)
CAPACITY_MASKS = ("top1_mask", "top2_combine")


@dataclass(frozen=True)
class Shared:
    """Shared (always-on) experts: the config key, how to read it, and how they are combined.

    ``kind`` is ``count`` (the key holds the number of shared experts) or ``size`` (the key holds
    the shared expert's width: one shared expert when it is positive). ``key`` None: the family
    has a shared path that moelens does not count as an expert (recorded in words only).
    """

    key: str | None
    kind: str | None
    words: str

    def __post_init__(self) -> None:
        if (self.key is None) != (self.kind is None) or self.kind not in (None, "count", "size"):
            raise ValueError(f"shared experts: kind must be count or size with a key, got {self.key!r}/{self.kind!r}")


@dataclass(frozen=True)
class Loop:
    """Decoder layers that run several times per forward (the same router module called once per pass).

    The keys name config fields: the first looped layer, the layer after the last one, and the
    number of passes. Every pass is recorded under the layer's own index with its pass number.
    """

    start_key: str
    end_key: str
    passes_key: str


@dataclass(frozen=True)
class Sizes:
    """The sizes a tiny build asked for, and the ones derived from them that every family shares."""

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


SOFTMAX_BIAS = 0.05  # selection biases added to softmax probabilities (the survey's spread)


@dataclass(frozen=True)
class Tiny:
    """What a tiny random build of the family needs beyond the generic recipe (:mod:`moelens.models.tiny`).

    ``overrides`` are config values (constants, or callables of :class:`Sizes`) applied after the
    generic keys. ``randomize`` names the modules whose weights are re-drawn when they differ from
    the hooked routers ("Class.attr" is that submodule of Class).
    """

    overrides: Mapping[str, Any] = field(default_factory=dict)
    bias_std: float = 0.1  # spread of re-drawn selection biases (sigmoid scores; softmax: SOFTMAX_BIAS)
    router_gain: float = 1.0  # extra gain on re-drawn router weights (routers that shrink logits)
    seq2seq: bool = False
    min_layers: int = 1
    min_top_k: int = 1
    randomize: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Family:
    """One row of the family table (see the module docstring for the conventions).

    Attributes:
        family: ``config.model_type`` of the family (the outer model's, for composite models).
        convention, scoring: routing convention (A-F) and scoring-rule group (S1-S8) of the survey.
        model, config: transformers class names: the model a tiny build instantiates (a causal LM,
            or the text tower of a composite model) and its config class.
        routers: class names of the modules to hook (for F: the MoE block).
        experts_key, top_k_key: config keys (dotted for nested configs) of E and k.
        rule: the scoring rule in words (recorded in each run's metadata).
        shared: shared experts, see :class:`Shared`.
        logits: what the router's logits output holds (:data:`LOGITS_LAYOUTS`).
        zero_experts_key: config key of zero-compute (identity) experts whose ids follow the routed
            ones (``E .. E + Z - 1``); they count as experts of the layer.
        skip_class: the router scores one extra "skip" column after the experts and masks a skip
            choice to (expert 0, weight 0) before the experts see it; moelens records it as -1.
        capacity: for convention E, the mask layout (:data:`CAPACITY_MASKS`).
        tags: module-path part -> site tag, for families with several kinds of router.
        secondary_tags: tags whose routers are not the per-layer MLP routing (kept apart).
        fixed_top_k: k when the config has no key for it (capacity routers).
        loop: looped decoder layers, see :class:`Loop`.
        config_of: for a config type that builds another family's model classes (a config alias),
            that family: its router classes are shared, and a router class alone names the owner.
        tiny: quirks of a tiny random build, see :class:`Tiny`.
    """

    family: str
    convention: str
    scoring: str
    model: str
    config: str
    routers: tuple[str, ...]
    experts_key: str
    top_k_key: str | None
    rule: str
    shared: Shared = Shared(None, None, "none")
    logits: str = "logits"
    zero_experts_key: str | None = None
    skip_class: bool = False
    capacity: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    secondary_tags: tuple[str, ...] = ()
    fixed_top_k: int | None = None
    loop: Loop | None = None
    config_of: str | None = None
    notes: str = ""
    tiny: Tiny = Tiny()

    def __post_init__(self) -> None:
        problems = []
        if self.convention not in CONVENTIONS:
            problems.append(f"unknown convention {self.convention!r}")
        if self.scoring not in SCORING_FUNCTION:
            problems.append(f"unknown scoring group {self.scoring!r}")
        if self.logits not in LOGITS_LAYOUTS:
            problems.append(f"unknown logits layout {self.logits!r}")
        if (self.convention == "E") != (self.capacity in CAPACITY_MASKS):
            problems.append("capacity routers (convention E) need a capacity mask layout, and only they")
        if not self.routers:
            problems.append("no router class")
        if problems:
            raise ValueError(f"family table row {self.family}: " + "; ".join(problems))

    @property
    def scoring_function(self) -> str:
        return SCORING_FUNCTION[self.scoring]

    @property
    def device_records(self) -> bool:
        """Whether the router's logits are ``[T, E]`` scores the device record kernels can reduce.

        Product-key scores are not per expert, and a skip column makes the row one wider than E.
        """
        return self.logits != "product_keys" and not self.skip_class

    @property
    def logits_per_expert(self) -> bool:
        """Whether the stored logits have one column per expert id (plus a skip column where scored)."""
        return self.logits != "product_keys"


TinyValue = Callable[[Sizes], Any]
