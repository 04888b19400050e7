"""Expert selection recomputed from router logits: the torch reference (the specification).

This module owns the scoring rules that :func:`moelens.kernels.select_triton.select_experts`
must match, for what-if analyses (another k) and for traces that kept only the logits. The
rules follow the families surveyed in ``reference/transformers-moe-families.md``:

=================  ==========================================================================
rule               recipe (``x = logits.float()``, ``[T, E]``)
=================  ==========================================================================
``softmax_topk``   S1 (mixtral, qwen*, olmoe): ``p = softmax(x)``; the k largest ``p``;
                   ``w = p[ids]``, divided by ``sum(w) + eps`` if ``renormalize``
``topk_softmax``   S2 (gpt_oss, granite*): the k largest ``x``; ``w = softmax(x[ids])`` (already
                   sums to 1, so ``renormalize`` and ``eps`` do not apply)
``sigmoid_bias``   S3 (minimax_m2, lfm2_moe, ...): ``s = sigmoid(x)``; the k largest ``s + bias``
                   (bias selects only); ``w = s[ids]`` (unbiased), renormalised if asked
``deepseek_v3``    S4: as ``sigmoid_bias``, but only experts in the ``topk_group`` groups (of
                   ``n_group`` equal groups) with the largest sum of their two best biased
                   scores compete; the others are set to -inf
=================  ==========================================================================

Every rule then multiplies the weights by ``scaling_factor``. Selection is exact and
deterministic: ties go to the lower expert (or group) id and the k slots are ordered by
descending selection score. ``softmax_topk`` selects on the logits, whose order is the order of
``softmax`` without its rounding. Families that use ``topk(sorted=False)`` agree as sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from moelens.errors import ConfigError
from moelens.kernels._checks import check_k, check_logits

__all__ = ["RULES", "Selection", "select_experts_torch", "stable_topk"]

RULES = ("softmax_topk", "topk_softmax", "sigmoid_bias", "deepseek_v3")


class Selection(NamedTuple):
    """Chosen experts per token: ``ids [T, k]`` int64 and ``weights [T, k]`` float32."""

    ids: torch.Tensor
    weights: torch.Tensor


@dataclass(frozen=True)
class SelectCall:
    """The validated options of one ``select_experts`` call."""

    rule: str
    k: int
    experts: int
    n_group: int | None
    topk_group: int | None


def stable_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest entries per row, by descending value, equal values by ascending column."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order), order


def check_select_call(logits, k, rule, bias, n_group, topk_group, scaling_factor, eps) -> SelectCall:
    _, experts = check_logits(logits)
    if rule not in RULES:
        raise ConfigError(f"Unknown scoring rule {rule!r}.", hint=f"Use one of {', '.join(RULES)}.")
    check_k(k, experts)
    if bias is not None:
        if rule not in ("sigmoid_bias", "deepseek_v3"):
            raise ConfigError(f"A selection bias applies to sigmoid_bias and deepseek_v3, not {rule}.")
        if not isinstance(bias, torch.Tensor) or bias.shape != (experts,) or not bias.is_floating_point():
            raise ConfigError(f"bias must be a float tensor of shape [{experts}].")
        if bias.device != logits.device:
            raise ConfigError(f"bias is on {bias.device} but the logits are on {logits.device}.")
    if (n_group is None) != (topk_group is None):
        raise ConfigError("Pass n_group and topk_group together.")
    if n_group is not None:
        if rule != "deepseek_v3":
            raise ConfigError(f"Group-limited routing (n_group) applies to deepseek_v3, not {rule}.")
        if not isinstance(n_group, int) or n_group < 1 or experts % n_group or experts // n_group < 2:
            raise ConfigError(
                f"n_group={n_group!r} must split {experts} experts into equal groups of at least 2."
            )
        if not isinstance(topk_group, int) or not 1 <= topk_group <= n_group:
            raise ConfigError(f"topk_group={topk_group!r} must be in [1, n_group={n_group}].")
        if k > topk_group * (experts // n_group):
            raise ConfigError(
                f"k={k} exceeds the {topk_group * (experts // n_group)} experts in the kept groups."
            )
    if not (float(eps) >= 0.0) or scaling_factor != scaling_factor:
        raise ConfigError("eps must be >= 0 and scaling_factor a number.")
    return SelectCall(rule, k, experts, n_group, topk_group)


def select_experts_torch(
    logits: torch.Tensor,
    k: int,
    rule: str,
    *,
    bias: torch.Tensor | None = None,
    n_group: int | None = None,
    topk_group: int | None = None,
    renormalize: bool = True,
    scaling_factor: float = 1.0,
    eps: float = 0.0,
) -> Selection:
    """Recompute the routing decision of ``rule`` from ``logits [T, E]`` (see module docstring).

    ``bias [E]`` (selection only) is for ``sigmoid_bias`` / ``deepseek_v3``; ``n_group`` and
    ``topk_group`` (both or neither) for ``deepseek_v3``. ``eps`` is added to the
    renormalisation denominator (lfm2_moe: 1e-6, deepseek_v3: 1e-20, mixtral/qwen: 0).
    """
    call = check_select_call(logits, k, rule, bias, n_group, topk_group, scaling_factor, eps)
    x = logits.float()
    if rule == "softmax_topk":
        _, ids = stable_topk(x, k)
        weights = torch.softmax(x, dim=-1).gather(1, ids)
    elif rule == "topk_softmax":
        values, ids = stable_topk(x, k)
        weights = torch.softmax(values, dim=-1)
    else:
        scores = torch.sigmoid(x)
        choice = scores if bias is None else scores + bias.float()
        if n_group is not None:
            choice = _limit_groups(choice, n_group, topk_group)
        _, ids = stable_topk(choice, k)
        weights = scores.gather(1, ids)
    if renormalize and rule != "topk_softmax":
        weights = weights / (weights.sum(dim=-1, keepdim=True) + eps)
    return Selection(ids, weights * scaling_factor)


def _limit_groups(choice: torch.Tensor, n_group: int, topk_group: int) -> torch.Tensor:
    rows, experts = choice.shape
    group_scores = choice.view(rows, n_group, experts // n_group).topk(2, dim=-1).values.sum(-1)
    _, kept = stable_topk(group_scores, topk_group)
    keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept, True)
    keep = keep[:, :, None].expand(rows, n_group, experts // n_group).reshape(rows, experts)
    return choice.masked_fill(~keep, float("-inf"))
