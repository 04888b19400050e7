"""Adapters: turn what a router (or MoE block) returns into (expert ids, gate weights, logits).

One small function per routing convention of :mod:`moelens.models.family_spec`. Each takes the
module's output (and, for conventions whose ids only appear further down, what the hooks saw
there) and returns a :class:`RawRoute`: ``experts[T, k]`` int64 with ``-1`` for a choice that
was dropped (capacity) or skipped (zaya's skip class), ``weights[T, k]`` exactly as the experts
received them (``0`` where dropped), and the router's logits ``[T, E']`` as returned.

Adapters never modify the tensors they are given; they only read, index and allocate new ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from moelens.errors import CaptureError

__all__ = ["RawRoute", "adapt_router_output", "dbrx_route", "doge_route", "mark_skips"]


@dataclass(slots=True)
class RawRoute:
    experts: torch.Tensor  # [T, k] int64, -1 = dropped / skipped
    weights: torch.Tensor  # [T, k]
    logits: torch.Tensor | None  # [T, E'] as the router returned it (None if it returns none)


def _flat(t: torch.Tensor, last: int | None = None) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1] if last is None else last)


def _convention_a(out: Any, family: str) -> RawRoute:
    if not isinstance(out, (tuple, list)) or len(out) < 3:
        raise CaptureError(
            f"{family} router returned {type(out).__name__} where (logits, weights, indices) was expected;"
            " the installed transformers may have changed this family's router.",
            hint="Run with --verify to compare against the experts module, or report the version.",
        )
    logits, weights, indices = out[0], out[1], out[2]
    if indices.dtype.is_floating_point or not weights.dtype.is_floating_point:
        raise CaptureError(f"{family} router output is not (logits, weights, indices): got dtypes "
                           f"{logits.dtype}, {weights.dtype}, {indices.dtype}.")
    return RawRoute(_flat(indices).detach().long(), _flat(weights).detach(), _flat(logits).detach())


def _convention_c(out: Any, family: str, module: Any) -> RawRoute:
    # llama4: (scores[T,E] = sigmoid(top-k logits scattered into -inf), logits[T,E]).
    scores, logits = out[0], out[1]
    # The router itself called topk(logits, top_k, dim=1); the same call on the same tensor picks
    # the same ids in the same order.
    indices = torch.topk(logits, module.top_k, dim=1).indices
    return RawRoute(indices.detach(), scores.gather(1, indices).detach(), logits.detach())


def _convention_d(out: Any, family: str) -> RawRoute:
    # jetmoe: (index_sorted_experts, batch_index, batch_gates, expert_size, logits)
    order, _batch_index, gates, sizes, logits = out
    num_experts = len(sizes)
    tokens = logits.shape[0]
    k = order.numel() // max(tokens, 1) if tokens else 1
    sizes_t = torch.as_tensor(sizes, device=order.device)
    expert_of_sorted = torch.repeat_interleave(torch.arange(num_experts, device=order.device), sizes_t)
    flat_ids = torch.empty_like(order)
    flat_ids[order] = expert_of_sorted
    flat_w = torch.empty_like(gates)
    flat_w[order] = gates
    return RawRoute(flat_ids.view(tokens, k), flat_w.view(tokens, k).detach(), logits.detach())


def _switch(out: Any, family: str) -> RawRoute:
    # (one_hot_after_capacity[B,S,E], max_prob[B,S,1], logits[B,S,E]); top-1.
    mask, probs, logits = out
    mask = _flat(mask)
    kept = mask.sum(dim=-1) > 0
    ids = torch.where(kept, mask.argmax(dim=-1), torch.full_like(kept, -1, dtype=torch.long))
    w = torch.where(kept, _flat(probs)[:, 0], torch.zeros((), dtype=probs.dtype, device=probs.device))
    return RawRoute(ids.view(-1, 1), w.view(-1, 1).detach(), _flat(logits).detach())


def _nllb(out: Any, family: str) -> RawRoute:
    # (top1_mask[T,E] after capacity, combine_weights[T,E] = gates1 + gates2, logits[T,E]).
    # A kept top-1 choice is the one set in top1_mask; a kept second choice is the other non-zero
    # combine weight. Choices dropped at capacity are -1 with weight 0.
    top1_mask, combine, logits = _flat(out[0]), _flat(out[1]), _flat(out[2])
    has1 = top1_mask.sum(dim=-1) > 0
    id1 = torch.where(has1, top1_mask.argmax(dim=-1), torch.full_like(has1, -1, dtype=torch.long))
    other = combine.masked_fill(top1_mask.bool(), 0)
    has2 = (other != 0).any(dim=-1)
    id2 = torch.where(has2, (other != 0).float().argmax(dim=-1), torch.full_like(has2, -1, dtype=torch.long))
    zero = torch.zeros((), dtype=combine.dtype, device=combine.device)
    w1 = torch.where(has1, combine.gather(1, id1.clamp(min=0)[:, None])[:, 0], zero)
    w2 = torch.where(has2, combine.gather(1, id2.clamp(min=0)[:, None])[:, 0], zero)
    return RawRoute(torch.stack([id1, id2], 1), torch.stack([w1, w2], 1).detach(), logits.detach())


_CAPACITY = {"top1_mask": _switch, "top2_combine": _nllb}


def adapt_router_output(spec: Any, out: Any, module: Any) -> RawRoute:
    """Read one router call's output according to its family row (conventions A, A+, C, D, E).

    ``spec`` is the :class:`~moelens.models.family_spec.Family` row; a router with a skip class
    gets its masked skip choices recovered as -1 (:func:`mark_skips`).
    """
    convention, family = spec.convention, spec.family
    if convention in ("A", "A+"):
        route = _convention_a(out, family)
    elif convention == "C":
        route = _convention_c(out, family, module)
    elif convention == "D":
        route = _convention_d(out, family)
    elif convention == "E":
        route = _CAPACITY[spec.capacity](out, family)
    else:
        raise CaptureError(f"convention {convention} ({family}) is not read from the router output alone.")
    return mark_skips(route, module) if spec.skip_class else route


def dbrx_route(logits: torch.Tensor | None, experts_args: tuple) -> RawRoute:
    """Convention B: the experts module receives ``(hidden, top_k_index, top_k_weights)``."""
    indices, weights = experts_args[1], experts_args[2]
    return RawRoute(_flat(indices).detach().long(), _flat(weights).detach(),
                    None if logits is None else _flat(logits).detach())


def doge_route(block: torch.nn.Module, router_logits: torch.Tensor, indices: torch.Tensor) -> RawRoute:
    """Convention F (doge): ids as passed to ``down_embed``; weights recomputed by the block's rule.

    The recomputation repeats the block's own operations on the logits it returned (product-key
    top-k, softmax, optional renormalisation), so it gives the weights the block multiplied by.
    """
    (scores_x, scores_y), (indices_x, _) = router_logits.topk(block.num_keys, dim=-1)
    all_scores = (scores_x.unsqueeze(-1) + scores_y.unsqueeze(-2)).flatten(-2)
    scores, _ = all_scores.topk(block.top_k, dim=-1)
    weights = torch.nn.functional.softmax(scores, dim=-1)
    if block.norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    del indices_x
    # The block viewed its gate output [B, S, 2K] as [2, B*S, K]; undo the view to get each
    # token's own 2K key scores.
    logits = router_logits.reshape(router_logits.shape[1], -1)
    return RawRoute(_flat(indices).detach().long(), weights.detach(), logits.detach())


def mark_skips(route: RawRoute, router: torch.nn.Module) -> RawRoute:
    """A router with a skip class (zaya) masks a skip choice to (expert 0, weight 0) before the
    experts see it; recover those choices as -1 from the logits.

    The skip class is the last logits column; the router's selection adds its ``balancing_biases``
    to the softmax probabilities and takes the top k, which is repeated here on the same tensors.
    """
    if route.logits is None:
        return route
    num_experts = route.logits.shape[-1] - 1
    probs = torch.softmax(route.logits, dim=-1)
    biased = probs.detach().to(torch.float32) + router.balancing_biases
    chosen = torch.topk(biased, route.experts.shape[1], dim=-1).indices
    skipped = (chosen == num_experts) & (route.experts == 0) & (route.weights == 0)
    # no `if skipped.any()` shortcut: that would synchronise with the device on every router call
    return RawRoute(route.experts.masked_fill(skipped, -1), route.weights, route.logits)
