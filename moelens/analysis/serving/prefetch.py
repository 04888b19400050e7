"""Prefetch accuracy: how well the experts a token will need can be guessed before its router runs.

Two predictors, each a lookup table fitted on half of the documents and scored on the other half
(both ways, pooled: cross-fitted by document, as :mod:`~moelens.analysis.crosslayer`):

* ``next_layer`` - from the token's first choice at MoE layer ``l``, guess its experts at the next
  traced MoE layer: the ``k`` experts most often chosen at ``l+1`` by training tokens with the same
  first choice at ``l`` (what a prefetcher can start loading while layer ``l`` runs);
* ``previous_token`` - from the previous token's first choice at the same layer (same document),
  the ``k`` experts most often chosen next (what can be loaded one decode step ahead).

Accuracy = fraction of the token's routed experts that were in the guessed set (precision and
recall at once: both sets have ``k`` members). Baselines: ``uniform`` = ``k / E`` (guessing at
random; the expected accuracy of any guess when routing is independent of the predictor's input)
and ``popular`` = always guessing the ``k`` most frequent experts of the target layer (cross-fitted
too), the best guess that ignores the input. A first choice never seen in training falls back to
``popular``; ties go to the lower expert id.
"""

from __future__ import annotations

import numpy as np

from moelens.analysis._common import _popcount, set_bitmasks

__all__ = ["fold_counts", "prediction_masks", "prefetch_accuracy", "layer_masks"]


def layer_masks(experts: np.ndarray, num_experts: int) -> np.ndarray:
    """``[words, T]`` bitmask of each token's routed experts."""
    return set_bitmasks(experts, num_experts)


def fold_counts(source: np.ndarray, target: np.ndarray, fold: np.ndarray, num_experts: int) -> np.ndarray:
    """``[2, E, E]`` counts of (source first choice, target expert) in each fold."""
    E = int(num_experts)
    bins = 2 * E * E
    s = source.astype(np.int32)
    base = fold.astype(np.int32) * (E * E) + s * E
    bad_source = (s < 0) | (s >= E)
    if bad_source.any():
        base[bad_source] = bins
    out = np.zeros(bins + E + 1, np.int64)
    for r in range(target.shape[1]):  # one slot at a time: no [T, k] key array
        t = target[:, r].astype(np.int32)
        key = base + t
        bad = (t < 0) | (t >= E)
        if bad.any():
            key[bad] = bins
        out += np.bincount(key, minlength=len(out))[:len(out)]
    return out[:bins].reshape(2, E, E)


def _mask_rows(ids: np.ndarray, num_experts: int) -> np.ndarray:
    """``[words, rows]`` bitmasks of the id sets in the rows of ``ids``."""
    return set_bitmasks(ids, num_experts)


def prediction_masks(counts: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """``(table [words, E], popular [words])`` masks of the ``top`` most frequent targets per source and overall."""
    E = counts.shape[0]
    overall = counts.sum(0)
    popular = np.argsort(-overall, kind="stable")[:top]
    table = np.argsort(-counts, axis=1, kind="stable")[:, :top]
    table[counts.sum(1) == 0] = popular
    return _mask_rows(table, E), _mask_rows(popular[None, :], E)[:, 0]


def prefetch_accuracy(source: np.ndarray, target_masks: np.ndarray, target: np.ndarray, fold: np.ndarray,
                      num_experts: int, top: int) -> tuple[int, int, int]:
    """``(hits, popular hits, targets)``: each token scored with the table fitted on the other fold."""
    E = int(num_experts)
    counts = fold_counts(source, target, fold, E)
    n_target = (target >= 0).sum(1)
    score = (source >= 0) & (source < E) & (n_target > 0)
    other = (~fold.astype(bool)).astype(np.int64)  # fitted on the fold the token is not in
    fitted = [prediction_masks(counts[f], top) for f in (0, 1)]
    # one lookup per word: rows [fold 0's table, fold 1's table, an empty guess for unscored tokens]
    guess_row = np.where(score, other * E + np.where(score, source, 0).astype(np.int64), 2 * E)
    popular_row = np.where(score, other, 2)
    hits = pop = 0
    for w in range(target_masks.shape[0]):
        tables = np.concatenate([fitted[0][0][w], fitted[1][0][w], np.zeros(1, np.uint64)])
        popular = np.array([fitted[0][1][w], fitted[1][1][w], 0], np.uint64)
        hits += int(_popcount(np.take(tables, guess_row) & target_masks[w]).sum(dtype=np.int64))
        pop += int(_popcount(np.take(popular, popular_row) & target_masks[w]).sum(dtype=np.int64))
    return hits, pop, int(n_target[score].sum())


def row(predictor: str, layer_from: int, layer: int, hits: int, pop: int, total: int, E: int, k: int) -> dict:
    return {"predictor": predictor, "layer_from": int(layer_from), "layer": int(layer), "targets": total,
            "accuracy": hits / total if total else float("nan"), "popular": pop / total if total else float("nan"),
            "uniform": min(k, E) / E}
