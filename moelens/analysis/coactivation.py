"""Expert co-activation: how often two experts are chosen for the same token.

OLMoE (§5.2) defines co-activation as ``N(e_i, e_j) / N(e_i)``: of the tokens routed to
``e_i``, the fraction also routed to ``e_j``. Here ``N(e_i, e_j)`` counts tokens whose top-k set
holds both, over **all** ``k(k-1)/2`` pairs of the set (``pairs="all"``, the paper's
definition); uniform top-k routing gives ``(k-1)/(E-1)``. OLMoE's released script instead counts
only **adjacent** pairs of the rank-ordered top-k list (``more_itertools.pairwise``): ``k-1``
pairs per token, so ranks far apart never count; ``pairs="adjacent"`` reproduces it (counted in
both directions), with uniform baseline ``2(k-1) / (k(E-1))``. ``lift`` is the ratio to the
baseline.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from moelens.analysis._common import CHUNK, LayerView, layer_views
from moelens.analysis.routing import from_arrays
from moelens.errors import ConfigError

__all__ = ["coactivation_counts", "coactivation_pairs", "coactivation_summary", "coactivation_baseline", "summary_row",
           "summary_from_counts"]


def coactivation_counts(experts: Any, num_experts: int | None = None, pairs: str = "all") -> np.ndarray:
    """``[E, E]`` symmetric pair counts of one layer (``[T, k]`` experts or a LayerView); diagonal ``N(e)``."""
    view = experts if isinstance(experts, LayerView) else None
    if view is None:
        view = LayerView(from_arrays(np.asarray(experts), num_experts=num_experts), 0)
    E, slots, k = view.E, view.slots, view.k
    if pairs not in ("all", "adjacent"):
        raise ConfigError(f"pairs must be 'all' or 'adjacent'; got {pairs!r}.")
    M = np.zeros(E * E + 1, np.int64)
    T = view.T
    first = np.empty(CHUNK, np.int64)
    keys = np.empty((max(k - 1, 1), CHUNK), np.int64)
    bad = view.invalid.T if view.dropped else None
    for lo in range(0, T, CHUNK):  # token chunks: the keys stay in cache
        hi = min(T, lo + CHUNK)
        for r in range(k - 1):
            stop = k if pairs == "all" else r + 2
            key = keys[:stop - r - 1, :hi - lo]
            np.multiply(slots[r, lo:hi], E, out=first[:hi - lo])
            np.add(first[None, :hi - lo], slots[r + 1:stop, lo:hi], out=key)
            if bad is not None:
                np.copyto(key, E * E, where=bad[r, lo:hi][None, :] | bad[r + 1:stop, lo:hi])
            M += np.bincount(key.reshape(-1), minlength=E * E + 1)[:E * E + 1]
    M = M[:-1].reshape(E, E)
    M = M + M.T
    M[np.diag_indices(E)] = view.counts
    return M


def coactivation_baseline(num_experts: int, k: float, pairs: str = "all") -> float:
    """``N(e_i, e_j) / N(e_i)`` under uniform top-k routing."""
    E = num_experts
    if E < 2 or k < 2:
        return 0.0
    return (k - 1) / (E - 1) if pairs == "all" else 2 * (k - 1) / (k * (E - 1))


def coactivation_pairs(routing: Any, layers: Iterable[int] | None = None, pairs: str = "all"):
    """One row per (layer, expert, partner != expert): ``count``, ``expert_count``, ``conditional``, baseline, lift."""
    import polars as pl

    E = routing.num_experts
    frames = []
    for view in layer_views(routing, layers):
        M = coactivation_counts(view, pairs=pairs)
        n = np.diag(M).astype(np.float64)
        base = coactivation_baseline(E, view.k_eff, pairs)
        i, j = np.nonzero(~np.eye(E, dtype=bool))
        with np.errstate(divide="ignore", invalid="ignore"):
            cond = M[i, j] / n[i]
        frames.append(pl.DataFrame({"layer": np.full(len(i), view.layer, np.int32),
                                    "expert": i.astype(np.int32), "partner": j.astype(np.int32),
                                    "count": M[i, j], "expert_count": n[i].astype(np.int64), "conditional": cond,
                                    "baseline": np.full(len(i), base), "lift": cond / base if base else cond * np.nan}))
    return pl.concat(frames) if frames else pl.DataFrame()


def summary_row(view: LayerView, pairs: str = "all", min_count: int = 100) -> dict[str, Any]:
    """One layer of :func:`coactivation_summary`."""
    return summary_from_counts(coactivation_counts(view, pairs=pairs), view.layer, view.k_eff, pairs, min_count)


def summary_from_counts(M: np.ndarray, layer: int, k_eff: float, pairs: str = "all", min_count: int = 100) -> dict[str, Any]:
    """The summary row of one layer from its ``[E, E]`` pair counts (diagonal ``N(e)``): the strongest pair
    among experts with at least ``min_count`` tokens - per-token and stats-mode runs alike."""
    E = M.shape[0]
    M = M.astype(np.float64)
    n = np.diag(M).copy()
    np.fill_diagonal(M, -1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        cond = np.where((n[:, None] >= min_count) & (n[:, None] > 0), M / n[:, None], np.nan)
    row = {"layer": int(layer), "baseline": coactivation_baseline(E, k_eff, pairs),
           "max_conditional": float("nan"), "expert": None, "partner": None, "mean_top_partner": float("nan")}
    seen = np.isfinite(cond).any(1)
    if seen.any():
        flat = int(np.nanargmax(cond))
        row.update(max_conditional=float(cond.flat[flat]), expert=flat // E, partner=flat % E,
                   mean_top_partner=float(np.nanmax(cond[seen], axis=1).mean()))
    return row


def coactivation_summary(routing: Any, layers: Iterable[int] | None = None, pairs: str = "all", min_count: int = 100):
    """One row per layer: the strongest pair (largest conditional among experts with ``min_count`` tokens),
    the mean over experts of their strongest partner's conditional, and the uniform baseline."""
    import polars as pl

    rows = [summary_row(view, pairs, min_count) for view in layer_views(routing, layers)]
    return pl.DataFrame(rows) if rows else pl.DataFrame()
