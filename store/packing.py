"""The compact physical layout of routes: k expert ids and k weights packed into BIGINT arrays.

One physical row holds one token at one router site. Its k expert ids (int16, -1 = dropped) are
packed four to a BIGINT, its k weights (the exact float32 bit patterns) two to a BIGINT, so a
row costs ``ceil(k/4) + ceil(k/2)`` stored values instead of ``2k``; DuckDB ingests values at a
roughly fixed rate, so this is what makes ingest fast. Unpacking is a zero-copy numpy view, and
the public ``routes`` view unpacks the same bits in SQL (see :mod:`moelens.store.schema`).
Byte order is little-endian (the physical layout of every platform DuckDB and numpy run on here).
"""

from __future__ import annotations

import numpy as np

__all__ = ["expert_words", "weight_words", "pack_experts", "pack_weights", "unpack_experts", "unpack_weights"]


def expert_words(k: int) -> int:
    return -(-k // 4)


def weight_words(k: int) -> int:
    return -(-k // 2)


def pack_experts(experts: np.ndarray) -> np.ndarray:
    """``[n, k]`` integer ids -> ``[n, ceil(k/4)]`` int64 words (padding slots are -1)."""
    n, k = experts.shape
    if k % 4 == 0 and experts.dtype == np.dtype("<i2") and experts.flags.c_contiguous:
        return experts.view("<i8")
    padded = np.full((n, expert_words(k) * 4), -1, dtype="<i2")
    padded[:, :k] = experts
    return padded.view("<i8")


def pack_weights(weights: np.ndarray) -> np.ndarray:
    """``[n, k]`` float weights -> ``[n, ceil(k/2)]`` int64 words holding float32 bit patterns."""
    n, k = weights.shape
    if k % 2 == 0 and weights.dtype == np.dtype("<f4") and weights.flags.c_contiguous:
        return weights.view("<i8")
    padded = np.zeros((n, weight_words(k) * 2), dtype="<f4")
    padded[:, :k] = weights
    return padded.view("<i8")


def unpack_experts(words: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`pack_experts`: ``[n, words]`` int64 -> ``[n, k]`` int16 (a view)."""
    return np.ascontiguousarray(words, dtype="<i8").view("<i2")[:, :k]


def unpack_weights(words: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`pack_weights`: ``[n, words]`` int64 -> ``[n, k]`` float32 (a view)."""
    return np.ascontiguousarray(words, dtype="<i8").view("<f4")[:, :k]
