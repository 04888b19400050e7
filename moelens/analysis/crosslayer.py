"""Cross-layer structure: top-1 transitions between consecutive MoE layers and their predictability.

For consecutive traced MoE layers ``l -> l'`` the transition matrix counts tokens whose top-1
expert is ``i`` at ``l`` and ``j`` at ``l'``; ``p(j | i)`` is its row-normalised form.

Predictability: how often ``l'``'s top-1 expert is the most likely successor of ``l``'s,
``argmax_j p(j | i)``. It is **cross-fitted** by document (successors learnt on the documents of
one half, scored on the other, both ways) so that a small sample cannot memorise itself.
Baselines: ``1/E`` (uniform routing) and ``marginal`` - always predicting ``l'``'s most frequent
top-1 expert (also cross-fitted), the best guess that ignores layer ``l``. ``nmi`` is the
normalized mutual information of the two top-1 experts (0 = independent).
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from moelens.analysis._common import entropy, layer_positions
from moelens.analysis.routing import doc_index

__all__ = ["transition_counts", "transitions", "crosslayer_summary", "pair_row", "document_folds"]


def transition_counts(top1_from: np.ndarray, top1_to: np.ndarray, num_experts: int) -> np.ndarray:
    """``[E, E]`` counts of (expert at the first layer, expert at the second) over tokens with both."""
    E = num_experts
    a, b = top1_from.astype(np.int64), top1_to.astype(np.int64)
    key = np.where((a >= 0) & (b >= 0), a * E + b, E * E)
    return np.bincount(key, minlength=E * E + 1)[:-1].reshape(E, E)


def transitions(routing: Any, layer_from: int, layer_to: int | None = None):
    """One row per (from_expert, to_expert) with a non-zero count: ``count`` and ``p`` = p(to | from)."""
    import polars as pl

    i = layer_positions(routing.layers, [layer_from])[0]
    j = i + 1 if layer_to is None else layer_positions(routing.layers, [layer_to])[0]
    if j >= len(routing.layers):
        from moelens.errors import ConfigError

        raise ConfigError(f"layer {layer_from} is the last traced MoE layer; give layer_to.")
    M = transition_counts(routing.experts[i][:, 0], routing.experts[j][:, 0], routing.num_experts)
    a, b = np.nonzero(M)
    rows = M.sum(1)
    return pl.DataFrame({"layer_from": np.full(len(a), int(routing.layers[i]), np.int32),
                         "layer_to": np.full(len(a), int(routing.layers[j]), np.int32),
                         "from_expert": a.astype(np.int32), "to_expert": b.astype(np.int32),
                         "count": M[a, b], "p": M[a, b] / rows[a]})


def _successors(M: np.ndarray, fallback: int) -> np.ndarray:
    """Most likely successor per row (ties: lowest id); rows never seen fall back to ``fallback``."""
    succ = M.argmax(1)
    succ[M.sum(1) == 0] = fallback
    return succ


def _nmi(M: np.ndarray) -> float:
    if M.sum() == 0:
        return float("nan")
    ha, hb, hj = float(entropy(M.sum(1))), float(entropy(M.sum(0))), float(entropy(M.ravel()))
    return max(ha + hb - hj, 0.0) / ((ha + hb) / 2) if ha + hb > 0 else 0.0


def pair_row(layer_from: int, top1_from: np.ndarray, layer_to: int, top1_to: np.ndarray, fold: np.ndarray,
             num_experts: int) -> dict[str, Any]:
    """One row of :func:`crosslayer_summary` for two layers' top-1 experts; ``fold`` splits documents in two."""
    E = num_experts
    a, b = top1_from, top1_to
    both = (a >= 0) & (b >= 0)
    hits = marg = n = 0
    for f in (False, True):
        train, test = both & (fold != f), both & (fold == f)
        M = transition_counts(a[train], b[train], E)
        top_next = int(M.sum(0).argmax())
        succ = _successors(M, top_next)
        hits += int((succ[a[test].astype(np.int64)] == b[test]).sum())
        marg += int((b[test] == top_next).sum())
        n += int(test.sum())
    return {"layer_from": int(layer_from), "layer_to": int(layer_to), "tokens": int(both.sum()),
            "predictability": hits / n if n else float("nan"),
            "baseline_uniform": 1.0 / E, "baseline_marginal": marg / n if n else float("nan"),
            "nmi": _nmi(transition_counts(a, b, E))}


def document_folds(routing: Any) -> np.ndarray:
    """``[T]`` bool: which half of the documents each token belongs to (cross-fitting)."""
    return (doc_index(routing) % 2).astype(bool)


def crosslayer_summary(routing: Any, layers: Iterable[int] | None = None):
    """One row per consecutive pair of selected layers: cross-fitted predictability, baselines, NMI."""
    import polars as pl

    idx = layer_positions(routing.layers, layers)
    fold = document_folds(routing)
    rows = [pair_row(routing.layers[i], routing.experts[i][:, 0], routing.layers[j], routing.experts[j][:, 0],
                     fold, routing.num_experts) for i, j in zip(idx[:-1], idx[1:])]
    return pl.DataFrame(rows) if rows else pl.DataFrame()
