"""Batch coverage: how many distinct experts one decode step touches at batch size ``B``.

At small batch the memory traffic of an MoE layer is set by the experts whose weights a step
reads: the union of its ``B`` tokens' top-k sets. With ``B`` documents decoded together
(:mod:`~moelens.analysis.serving.schedule`), ``distinct`` is the mean size of that union over the
steps where all ``B`` lanes are busy; ``activation`` = ``distinct / E`` is the fraction of the
layer's expert weights read per step. Baseline: uniform independent routing touches
``E * (1 - (1 - k/E)^B)`` experts in expectation.
"""

from __future__ import annotations

import numpy as np

from moelens.analysis._common import _popcount

__all__ = ["uniform_distinct", "step_distinct"]


def uniform_distinct(num_experts: int, top_k: int, batch: int) -> float:
    """Expected distinct experts of ``batch`` independent uniformly routed top-k tokens."""
    E, k = num_experts, min(top_k, num_experts)
    return E * (1.0 - (1.0 - k / E) ** batch)


def step_distinct(masks: np.ndarray, order: np.ndarray, starts: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """``(distinct[steps], busy[steps])`` from the tokens' ``[words, T]`` expert bitmasks, with the
    tokens in step order (``order``) and each step's first position in it (``starts``)."""
    T = masks.shape[1]
    busy = np.diff(np.r_[starts, T])
    distinct = np.zeros(len(starts), np.int64)
    for w in range(masks.shape[0]):
        m = masks[w] if batch == 1 else np.bitwise_or.reduceat(masks[w][order], starts)
        distinct += _popcount(m).astype(np.int64)
    return distinct, busy
