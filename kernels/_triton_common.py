"""Triton building blocks shared by the capture kernels (imports triton: load lazily).

Top-k is done by repeated selection over a register tile ``[BLOCK_T, BLOCK_E]``: each pick
takes the largest entry not yet taken and, among equal values, the lowest column. This is
exact (no packing of values into keys), reproduces the torch reference's tie rule, and costs
k passes over E, which is cheap for router sizes (E <= 512, k <= 16 in practice).
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["block_rows", "num_warps", "pick_max", "take_col"]


def block_rows(block_cols: int, cap: int = 64, budget: int = 4096) -> int:
    """Rows per program: about ``budget`` fp32 elements of register tile, a power of two."""
    return max(1, min(cap, budget // block_cols))


def num_warps(block_rows_: int, block_cols: int) -> int:
    return 8 if block_rows_ * block_cols >= 8192 else 4


@triton.jit
def pick_max(vals, taken, cols, BIG: tl.constexpr):
    """Per row: the largest untaken value and its lowest column (BIG if none is comparable)."""
    cand = tl.where(taken, float("-inf"), vals)
    best = tl.max(cand, axis=1)
    hit = (cand == best[:, None]) & (taken == 0)
    idx = tl.min(tl.where(hit, cols[None, :], BIG), axis=1)
    return best, idx


@triton.jit
def take_col(tile, cols, idx):
    """``tile[r, idx[r]]`` per row, exactly (the other columns contribute zeros)."""
    return tl.sum(tl.where(cols[None, :] == idx[:, None], tile, 0.0), axis=1)


def next_pow2(n: int) -> int:
    return triton.next_power_of_2(max(1, n))
