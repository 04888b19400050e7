"""Triton kernel for expert selection from router logits (imports triton: load lazily).

:func:`select_experts` has the signature, return type and semantics of
:func:`moelens.kernels.select_torch.select_experts_torch`, its specification: the same four
scoring rules, fp32 math, ties to the lower expert (and group) id, slots by descending
selection score. One program handles ``BLOCK_T`` tokens with the whole expert row in registers.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from moelens.kernels._triton_common import block_rows, next_pow2, num_warps, pick_max, take_col
from moelens.kernels.backend import require_triton_device
from moelens.kernels.select_torch import RULES, Selection, check_select_call

__all__ = ["select_experts"]


@triton.jit
def _keep_groups(choice, cols, E, G, TOPK_G, GROUP, BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr,
                 BLOCK_G: tl.constexpr):  # fmt: skip
    """DeepSeek-V3 group limit: -inf outside the TOPK_G groups with the best top-2 sums."""
    group_of = tl.where(cols < E, cols // GROUP, BLOCK_G)
    gcols = tl.arange(0, BLOCK_G)
    gscore = tl.full([BLOCK_T, BLOCK_G], float("-inf"), dtype=tl.float32)
    for g in range(0, G):
        member = (group_of == g)[None, :]
        outside = member == 0
        best, first = pick_max(choice, outside, cols, BLOCK_E)
        second, _second_id = pick_max(choice, outside | (cols[None, :] == first[:, None]), cols, BLOCK_E)
        gscore = tl.where(gcols[None, :] == g, (best + second)[:, None], gscore)
    gtaken = (gcols[None, :] + tl.zeros([BLOCK_T, 1], dtype=tl.int32)) >= G
    for _j in range(0, TOPK_G):
        _best, gid = pick_max(gscore, gtaken, gcols, BLOCK_G)
        gtaken = gtaken | (gcols[None, :] == gid[:, None])
    kept = gtaken & (gcols[None, :] < G)
    keep = tl.zeros([BLOCK_T, BLOCK_E], dtype=tl.int1)
    for g in range(0, G):
        kept_g = tl.max(tl.where(gcols[None, :] == g, kept, 0), axis=1) != 0
        keep = keep | (kept_g[:, None] & (group_of == g)[None, :])
    return tl.where(keep, choice, float("-inf"))


@triton.jit
def _select_kernel(
    logits_ptr, s_lt, s_le, bias_ptr, ids_ptr, s_it, w_ptr, s_wt,
    T, E, K, G, TOPK_G, GROUP, scale, eps,
    RULE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_GROUPS: tl.constexpr, RENORM: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_G: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    rows64 = rows.to(tl.int64)
    cols = tl.arange(0, BLOCK_E)
    ok = rows < T
    col_ok = cols < E
    x = tl.load(
        logits_ptr + rows64[:, None] * s_lt + cols[None, :] * s_le,
        mask=ok[:, None] & col_ok[None, :],
        other=float("-inf"),
    ).to(tl.float32)
    x = tl.where(ok[:, None], x, 0.0)
    if RULE <= 1:  # softmax_topk, topk_softmax: select on the logits
        source = x
        choice = x
    else:  # sigmoid_bias, deepseek_v3: select on sigmoid (+ bias), weigh by sigmoid
        source = tl.sigmoid(x)
        choice = source
        if HAS_BIAS:
            choice = choice + tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        if HAS_GROUPS:
            choice = _keep_groups(choice, cols, E, G, TOPK_G, GROUP, BLOCK_T, BLOCK_E, BLOCK_G)

    taken = (cols[None, :] + tl.zeros([BLOCK_T, 1], dtype=tl.int32)) >= E
    slots = tl.arange(0, BLOCK_K)
    ids = tl.zeros([BLOCK_T, BLOCK_K], dtype=tl.int32)
    vals = tl.zeros([BLOCK_T, BLOCK_K], dtype=tl.float32)
    for j in range(0, K):
        _value, idx = pick_max(choice, taken, cols, BLOCK_E)
        taken = taken | (cols[None, :] == idx[:, None])
        ids = tl.where(slots[None, :] == j, idx[:, None], ids)
        vals = tl.where(slots[None, :] == j, take_col(source, cols, idx)[:, None], vals)

    slot_ok = slots[None, :] < K
    if RULE == 0:
        m = tl.max(x, axis=1)
        s = tl.sum(tl.where(col_ok[None, :], tl.exp(x - m[:, None]), 0.0), axis=1)
        w = tl.exp(vals - m[:, None]) / s[:, None]
    elif RULE == 1:
        top = tl.max(tl.where(slot_ok, vals, float("-inf")), axis=1)
        w = tl.where(slot_ok, tl.exp(vals - top[:, None]), 0.0)
        w = w / tl.sum(w, axis=1)[:, None]
    else:
        w = vals
    if RENORM:
        w = w / (tl.sum(tl.where(slot_ok, w, 0.0), axis=1)[:, None] + eps)
    w = w * scale
    out_ok = ok[:, None] & slot_ok
    tl.store(ids_ptr + rows64[:, None] * s_it + slots[None, :], ids.to(tl.int64), mask=out_ok)
    tl.store(w_ptr + rows64[:, None] * s_wt + slots[None, :], w, mask=out_ok)


def select_experts(
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
    """Triton version of :func:`moelens.kernels.select_torch.select_experts_torch` (same contract)."""
    call = check_select_call(logits, k, rule, bias, n_group, topk_group, scaling_factor, eps)
    require_triton_device(logits.device)
    rows = logits.shape[0]
    ids = torch.empty((rows, k), dtype=torch.int64, device=logits.device)
    weights = torch.empty((rows, k), dtype=torch.float32, device=logits.device)
    if rows == 0:
        return Selection(ids, weights)
    block_e = next_pow2(call.experts)
    block_t = block_rows(block_e)
    groups = n_group or 0
    _select_kernel[(triton.cdiv(rows, block_t),)](
        logits, logits.stride(0), logits.stride(1), bias if bias is not None else logits,
        ids, ids.stride(0), weights, weights.stride(0),
        rows, call.experts, k, groups, topk_group or 0, call.experts // max(groups, 1),
        float(scaling_factor), float(eps),
        RULE=RULES.index(rule), HAS_BIAS=bias is not None, HAS_GROUPS=groups > 0,
        RENORM=bool(renormalize) and rule != "topk_softmax",
        BLOCK_T=block_t, BLOCK_E=block_e, BLOCK_K=next_pow2(k), BLOCK_G=next_pow2(groups),
        num_warps=num_warps(block_t, block_e),
    )  # fmt: skip
    return Selection(ids, weights)
