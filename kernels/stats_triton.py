"""Fused Triton update of the stats-mode tables (imports triton: load lazily).

:func:`update_stats` has the signature and effect of
:func:`moelens.kernels.stats.update_stats_torch`, its specification: one launch per layer call
adds expert counts, co-activation pairs, entropy-histogram bins, token counts and their
per-label splits with atomic adds. Counts are integers, so the result equals the reference
exactly whatever the order of the atomics.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from moelens.errors import ConfigError
from moelens.kernels._triton_common import next_pow2
from moelens.kernels.backend import require_triton_device
from moelens.kernels.stats_tables import StatsTables, check_update

__all__ = ["update_stats"]


@triton.jit
def _stats_kernel(
    ids_ptr, s_it, s_ik, ent_ptr, s_e, labels_ptr, valid_ptr,
    counts_ptr, coact_ptr, hist_ptr, tokens_ptr, lcounts_ptr, lhist_ptr, ltokens_ptr,
    T, K, E, NL, B, bin_scale,
    HAS_LABELS: tl.constexpr, HAS_VALID: tl.constexpr, HAS_MAIN: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_K: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    rows64 = rows.to(tl.int64)
    ok = rows < T
    if HAS_VALID:
        ok = ok & (tl.load(valid_ptr + rows, mask=ok, other=0) != 0)
    slots = tl.arange(0, BLOCK_K)
    tile_ok = ok[:, None] & (slots[None, :] < K)
    ids = tl.load(ids_ptr + rows64[:, None] * s_it + slots[None, :] * s_ik, mask=tile_ok, other=-1).to(tl.int64)
    hit = tile_ok & (ids >= 0) & (ids < E)
    one = tl.full([BLOCK_T, BLOCK_K], 1, dtype=counts_ptr.dtype.element_ty)
    if HAS_MAIN:
        tl.atomic_add(counts_ptr + ids, one, mask=hit)
        for i in range(0, K):
            pick = slots[None, :] == i
            first = tl.sum(tl.where(pick, ids, 0), axis=1)
            first_hit = tl.max(tl.where(pick & hit, 1, 0), axis=1) != 0
            tl.atomic_add(coact_ptr + first[:, None] * E + ids, one, mask=first_hit[:, None] & hit)

    h = tl.load(ent_ptr + rows64 * s_e, mask=ok, other=0.0).to(tl.float32)
    binnable = ok & (h == h)
    b = tl.minimum(tl.maximum(tl.floor(h * bin_scale), 0.0), B - 1.0)
    b = tl.where(binnable, b, 0.0).to(tl.int64)
    one_row = tl.full([BLOCK_T], 1, dtype=counts_ptr.dtype.element_ty)
    if HAS_MAIN:
        tl.atomic_add(hist_ptr + b, one_row, mask=binnable)
        tl.atomic_add(tokens_ptr, tl.sum(tl.where(ok, 1, 0), axis=0).to(counts_ptr.dtype.element_ty))
    if HAS_LABELS:
        lab = tl.load(labels_ptr + rows, mask=ok, other=0).to(tl.int64)
        lab = tl.where((lab >= 0) & (lab < NL), lab, NL)
        tl.atomic_add(lcounts_ptr + lab[:, None] * E + ids, one, mask=hit)
        tl.atomic_add(lhist_ptr + lab * B + b, one_row, mask=binnable)
        tl.atomic_add(ltokens_ptr + lab, one_row, mask=ok)


def update_stats(tables: StatsTables, layer: int, experts: torch.Tensor, entropy: torch.Tensor,
                 labels: torch.Tensor | None = None, valid: torch.Tensor | None = None, *,
                 main: bool = True) -> None:  # fmt: skip
    """Triton version of :func:`moelens.kernels.stats.update_stats_torch` (same contract)."""
    check_update(tables, layer, experts, entropy, labels, valid)
    if not main and labels is None:
        raise ConfigError("main=False updates the label tables only: pass labels.")
    require_triton_device(experts.device)
    rows, k = experts.shape
    if rows == 0:
        return
    block_k = next_pow2(k)
    block_t = max(1, min(128, 2048 // block_k))
    _stats_kernel[(triton.cdiv(rows, block_t),)](
        experts, experts.stride(0), experts.stride(1), entropy, entropy.stride(0),
        labels if labels is not None else experts, valid if valid is not None else experts,
        tables.expert_counts[layer], tables.coactivation[layer], tables.entropy_hist[layer],
        tables.tokens[layer:], tables.label_expert_counts[layer], tables.label_entropy_hist[layer],
        tables.label_tokens[layer],
        rows, k, tables.num_experts, tables.num_labels, tables.entropy_bins, tables.bin_scale,
        HAS_LABELS=labels is not None, HAS_VALID=valid is not None, HAS_MAIN=main, BLOCK_T=block_t,
        BLOCK_K=block_k,
    )  # fmt: skip
