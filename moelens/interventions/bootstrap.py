"""Bootstrap intervals of token-weighted means, resampling documents (tokens of a document move together).

Tokens of one document are not independent, so intervals resample whole documents: each draw picks
``D`` documents with replacement and the statistic is ``sum(doc sums) / sum(doc token counts)``
over the draw. :func:`doc_bootstrap` is vectorised (one bincount per draw);
:func:`doc_bootstrap_reference` is the obviously-correct loop it is tested against.
"""

from __future__ import annotations

import numpy as np

__all__ = ["doc_bootstrap", "doc_bootstrap_reference", "per_document"]


def per_document(doc: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sums, counts)`` per distinct document of ``doc`` (in sorted document order)."""
    _, inverse = np.unique(doc, return_inverse=True)
    sums = np.bincount(inverse, weights=values.astype(np.float64))
    counts = np.bincount(inverse).astype(np.float64)
    return sums, counts


def _draws(n_docs: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_docs, size=(n_boot, n_docs))


def doc_bootstrap(sums: np.ndarray, counts: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95) -> tuple[float, float]:
    """The ``level`` percentile interval of ``sum(sums[d]) / sum(counts[d])`` over document resamples."""
    n = len(sums)
    if n == 0:
        return float("nan"), float("nan")
    picks = _draws(n, n_boot, seed)
    weights = np.stack([np.bincount(row, minlength=n) for row in picks]).astype(np.float64)
    stats = (weights @ sums) / np.maximum(weights @ counts, 1e-300)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(lo), float(hi)


def doc_bootstrap_reference(sums: np.ndarray, counts: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                            level: float = 0.95) -> tuple[float, float]:
    """The same interval, one draw and one document at a time."""
    n = len(sums)
    if n == 0:
        return float("nan"), float("nan")
    stats = []
    for row in _draws(n, n_boot, seed):
        total, tokens = 0.0, 0.0
        for d in row:
            total += float(sums[d])
            tokens += float(counts[d])
        stats.append(total / tokens)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(np.asarray(stats), [tail, 100 - tail])
    return float(lo), float(hi)
