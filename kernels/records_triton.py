"""Fused Triton kernel for per-token routing records (imports triton: load lazily).

:func:`route_records` has the signature, return type and semantics of
:func:`moelens.kernels.records_torch.route_records_torch`, its specification. One launch per
router call reads a ``[BLOCK_T, E]`` logits tile per program, computes logsumexp, entropy and
the top-1 margin in fp32, writes the dispatched (or recomputed) ids and weights into the record
buffer at ``row_offset`` and atomically adds the per-expert counts. Nothing is read back to the
host; the wrapper looks only at shapes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from moelens.errors import ConfigError
from moelens.kernels._checks import check_record_call
from moelens.kernels._triton_common import block_rows, next_pow2, num_warps, pick_max
from moelens.kernels.backend import require_triton_device
from moelens.kernels.records_torch import RouteRecords

__all__ = ["route_records"]


@triton.jit
def _records_kernel(
    logits_ptr, s_lt, s_le,
    in_ids_ptr, s_it, s_ik, in_w_ptr, s_wt, s_wk,
    valid_ptr, counts_ptr,
    out_ids_ptr, s_ot, s_ok, out_w_ptr, s_pt, s_pk,
    ent_ptr, margin_ptr, lse_ptr, s_stat,
    T, E, K,
    HAS_IDS: tl.constexpr, HAS_VALID: tl.constexpr, HAS_COUNTS: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BLOCK_E)
    ok = rows < T
    if HAS_VALID:
        ok = ok & (tl.load(valid_ptr + rows, mask=ok, other=0) != 0)
    rows64 = rows.to(tl.int64)
    col_ok = cols < E
    x = tl.load(
        logits_ptr + rows64[:, None] * s_lt + cols[None, :] * s_le,
        mask=ok[:, None] & col_ok[None, :],
        other=float("-inf"),
    ).to(tl.float32)
    x = tl.where(ok[:, None], x, 0.0)  # rows that are not written stay finite (no NaN noise)

    # softmax statistics; e is exp(x - max), so the largest probability is 1 / s
    m = tl.max(x, axis=1)
    z = tl.where(col_ok[None, :], x - m[:, None], 0.0)  # padding columns: finite, weight 0
    e = tl.where(col_ok[None, :], tl.exp(z), 0.0)
    s = tl.sum(e, axis=1)
    log_s = tl.log(s)
    entropy = log_s - tl.sum(tl.where(e > 0.0, e * z, 0.0), axis=1) / s
    taken = (cols[None, :] + tl.zeros([BLOCK_T, 1], dtype=tl.int32)) >= E
    _top, first = pick_max(x, taken, cols, BLOCK_E)
    second, _second_id = pick_max(x, taken | (cols[None, :] == first[:, None]), cols, BLOCK_E)
    margin = (1.0 - tl.exp(second - m)) / s
    tl.store(ent_ptr + rows64 * s_stat, entropy, mask=ok)
    tl.store(margin_ptr + rows64 * s_stat, margin, mask=ok)
    tl.store(lse_ptr + rows64 * s_stat, m + log_s, mask=ok)

    if HAS_IDS:
        slots = tl.arange(0, BLOCK_K)
        tile_ok = ok[:, None] & (slots[None, :] < K)
        ids = tl.load(in_ids_ptr + rows64[:, None] * s_it + slots[None, :] * s_ik, mask=tile_ok, other=-1)
        w = tl.load(in_w_ptr + rows64[:, None] * s_wt + slots[None, :] * s_wk, mask=tile_ok, other=0.0)
        tl.store(out_ids_ptr + rows64[:, None] * s_ot + slots[None, :] * s_ok, ids.to(tl.int16), mask=tile_ok)
        tl.store(
            out_w_ptr + rows64[:, None] * s_pt + slots[None, :] * s_pk,
            w.to(tl.float32).to(out_w_ptr.dtype.element_ty),
            mask=tile_ok,
        )
        if HAS_COUNTS:
            ones = tl.full([BLOCK_T, BLOCK_K], 1, dtype=counts_ptr.dtype.element_ty)
            tl.atomic_add(counts_ptr + ids, ones, mask=tile_ok & (ids >= 0) & (ids < E))
    else:
        for j in range(0, K):
            value, idx = pick_max(x, taken, cols, BLOCK_E)
            taken = taken | (cols[None, :] == idx[:, None])
            weight = tl.exp(value - m) / s
            tl.store(out_ids_ptr + rows64 * s_ot + j * s_ok, idx.to(tl.int16), mask=ok)
            tl.store(out_w_ptr + rows64 * s_pt + j * s_pk, weight.to(out_w_ptr.dtype.element_ty), mask=ok)
            if HAS_COUNTS:
                ones = tl.full([BLOCK_T], 1, dtype=counts_ptr.dtype.element_ty)
                tl.atomic_add(counts_ptr + idx, ones, mask=ok)


def route_records(
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
    """Triton version of :func:`moelens.kernels.records_torch.route_records_torch` (same contract)."""
    call = check_record_call(
        logits, topk_ids, topk_weights, k, out, row_offset, counts, valid, weight_dtype
    )
    out = call.out if call.out is not None else RouteRecords.empty(
        call.rows, call.k, device=logits.device, weight_dtype=weight_dtype
    )
    require_triton_device(logits.device)
    if call.rows == 0:
        return out
    dst = out.rows(row_offset, row_offset + call.rows)
    block_e = next_pow2(call.experts)
    block_t = block_rows(block_e)
    has_ids = topk_ids is not None
    ids_in = topk_ids if has_ids else dst.ids  # placeholders are never read
    w_in = topk_weights if has_ids else dst.weights
    grid = (triton.cdiv(call.rows, block_t),)
    _records_kernel[grid](
        logits, logits.stride(0), logits.stride(1),
        ids_in, ids_in.stride(0), ids_in.stride(1), w_in, w_in.stride(0), w_in.stride(1),
        valid if valid is not None else dst.ids,
        counts if counts is not None else dst.ids,
        dst.ids, dst.ids.stride(0), dst.ids.stride(1),
        dst.weights, dst.weights.stride(0), dst.weights.stride(1),
        dst.entropy, dst.margin, dst.lse, _stat_stride(dst),
        call.rows, call.experts, call.k,
        HAS_IDS=has_ids, HAS_VALID=valid is not None, HAS_COUNTS=counts is not None,
        BLOCK_T=block_t, BLOCK_E=block_e, BLOCK_K=next_pow2(call.k),
        num_warps=num_warps(block_t, block_e),
    )  # fmt: skip
    return out


def _stat_stride(dst: RouteRecords) -> int:
    strides = {dst.entropy.stride(0), dst.margin.stride(0), dst.lse.stride(0)}
    if len(strides) != 1:  # RouteRecords.empty and RecordBuffer views always share one stride
        raise ConfigError("entropy, margin and lse of the record buffer must share one row stride.")
    return strides.pop()
