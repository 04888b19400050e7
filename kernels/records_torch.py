"""Per-token routing records: the :class:`RouteRecords` buffer type and the torch reference.

This module owns the record layout and :func:`route_records_torch`, the specification that the
Triton kernel :func:`moelens.kernels.records_triton.route_records` must match. One call turns
one MoE layer's router output for ``T`` tokens into compact rows of a preallocated buffer:

=========  ===========  ================================================================
field      shape/dtype  meaning
=========  ===========  ================================================================
ids        [N, k] int16 expert ids, slot order as dispatched (or by descending logit when
                        recomputed); -1 = no expert (dropped by a capacity router, or a
                        row never written)
weights    [N, k]       gate weight of each slot, float32 or float16 (chosen by the caller)
entropy    [N] float32  router entropy ``H = -sum_e p_e log p_e`` of ``p = softmax(logits)``
                        over all E experts, in nats, within [0, log E]
margin     [N] float32  top-1 margin ``p(1) - p(2)``: the largest minus the second largest
                        entry of ``p`` over all E experts, whatever was dispatched (equal
                        maxima give 0; E = 1 gives 1)
lse        [N] float32  ``logsumexp(logits)``; router z-loss = mean of ``lse**2``
=========  ===========  ================================================================

Math is fp32 whatever the logits dtype. Rows outside ``[row_offset, row_offset + T)`` and rows
whose ``valid`` flag is False are never written, and their experts are never counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from moelens.kernels._checks import RecordCall, check_record_call
from moelens.kernels.select_torch import stable_topk

__all__ = ["RouteRecords", "route_records_torch"]

FIELDS = ("ids", "weights", "entropy", "margin", "lse")


@dataclass(frozen=True)
class RouteRecords:
    """Row-aligned record tensors (see the module docstring for each field)."""

    ids: torch.Tensor
    weights: torch.Tensor
    entropy: torch.Tensor
    margin: torch.Tensor
    lse: torch.Tensor

    @classmethod
    def empty(
        cls,
        num_rows: int,
        k: int,
        *,
        device: Any = "cpu",
        weight_dtype: torch.dtype = torch.float32,
    ) -> RouteRecords:
        """Rows filled with the "never written" sentinels: id -1, weight 0, NaN statistics."""
        return cls(
            ids=torch.full((num_rows, k), -1, dtype=torch.int16, device=device),
            weights=torch.zeros((num_rows, k), dtype=weight_dtype, device=device),
            entropy=torch.full((num_rows,), float("nan"), dtype=torch.float32, device=device),
            margin=torch.full((num_rows,), float("nan"), dtype=torch.float32, device=device),
            lse=torch.full((num_rows,), float("nan"), dtype=torch.float32, device=device),
        )

    @property
    def num_rows(self) -> int:
        return self.ids.shape[0]

    @property
    def k(self) -> int:
        return self.ids.shape[1]

    def rows(self, start: int, stop: int) -> RouteRecords:
        """Views of rows ``[start, stop)``; writing into them writes into this buffer."""
        return RouteRecords(
            self.ids[start:stop],
            self.weights[start:stop],
            self.entropy[start:stop],
            self.margin[start:stop],
            self.lse[start:stop],
        )

    def fill_(self, *, ids: int = -1, weight: float = 0.0, stat: float = float("nan")) -> None:
        """Reset every row to the given sentinels (device-side, no host sync)."""
        self.ids.fill_(ids)
        self.weights.fill_(weight)
        for t in (self.entropy, self.margin, self.lse):
            t.fill_(stat)

    def to_numpy(self) -> dict[str, Any]:
        """Host copies as numpy arrays (synchronises; not for the per-layer hot path)."""
        return {name: getattr(self, name).cpu().numpy() for name in FIELDS}


def route_records_torch(
    logits: torch.Tensor,
    topk_ids: torch.Tensor | None = None,
    topk_weights: torch.Tensor | None = None,
    *,
    k: int | None = None,
    out: RouteRecords | None = None,
    row_offset: int = 0,
    counts: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    weight_dtype: torch.dtype = torch.float32,
) -> RouteRecords:
    """Write the records of one router call into ``out`` rows ``[row_offset, row_offset + T)``.

    Args:
        logits: ``[T, E]`` router logits, float32/bfloat16/float16.
        topk_ids: ``[T, k]`` integer expert ids the model dispatched (-1 = dropped), or None to
            recompute: top-k of ``softmax(logits)`` (ties to the lower id, slots by descending
            logit) with the softmax probabilities as weights. For another scoring rule call
            :func:`moelens.kernels.select_experts_torch` first and pass its ids and weights.
        topk_weights: ``[T, k]`` the dispatched gate weights; given exactly when ``topk_ids`` is.
        k: slots per token; needed only when neither ``topk_ids`` nor ``out`` fixes it.
        out: buffer to write into; None allocates ``RouteRecords.empty(T, k)``.
        row_offset: first row of ``out`` to write.
        counts: optional ``[E]`` int32/int64 tensor; each recorded id in ``[0, E)`` of a valid
            row adds 1 (dropped ids are not counted).
        valid: optional ``[T]`` bool; False rows (padding) are neither written nor counted.
        weight_dtype: weight dtype when ``out`` is None (float32 or float16).

    Returns:
        ``out`` (the whole buffer, not just the written rows). Never synchronises with the host.
    """
    call = check_record_call(
        logits, topk_ids, topk_weights, k, out, row_offset, counts, valid, weight_dtype
    )
    out = call.out if call.out is not None else RouteRecords.empty(
        call.rows, call.k, device=logits.device, weight_dtype=weight_dtype
    )
    if call.rows == 0:
        return out
    x = logits.float()
    logp = torch.log_softmax(x, dim=-1)
    p = logp.exp()
    entropy = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(dim=-1)
    top = p.topk(min(2, call.experts), dim=-1).values
    margin = top[:, 0] - top[:, 1] if call.experts > 1 else top[:, 0]
    lse = torch.logsumexp(x, dim=-1)
    if topk_ids is None:
        _, ids = stable_topk(x, call.k)
        weights = p.gather(1, ids)
    else:
        ids, weights = topk_ids.long(), topk_weights.float()
    _write(out.rows(row_offset, row_offset + call.rows), call, ids, weights, entropy, margin, lse, valid)
    if counts is not None:
        _count(counts, ids, valid, call)
    return out


def _write(dst: RouteRecords, call: RecordCall, ids, weights, entropy, margin, lse, valid) -> None:
    new = {
        "ids": ids.to(torch.int16),
        "weights": weights.to(dst.weights.dtype),
        "entropy": entropy,
        "margin": margin,
        "lse": lse,
    }
    for name, value in new.items():
        target = getattr(dst, name)
        if valid is not None:
            keep = valid if value.dim() == 1 else valid[:, None]
            value = torch.where(keep, value, target)
        target.copy_(value)


def _count(counts: torch.Tensor, ids: torch.Tensor, valid, call: RecordCall) -> None:
    hit = (ids >= 0) & (ids < call.experts)
    if valid is not None:
        hit &= valid[:, None]
    safe = ids.clamp(0, call.experts - 1)
    counts.scatter_add_(0, safe.reshape(-1), hit.reshape(-1).to(counts.dtype))
