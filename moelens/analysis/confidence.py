"""Router confidence from stored router logits (runs traced with ``--logits``).

Router probabilities ``p`` follow the run's scoring rule (``runs.scoring``) and what the router
output held (``config.routing.logits_kind``): ``softmax`` scoring takes the softmax of logits
(``probs`` are used as stored); ``sigmoid`` scoring takes the sigmoid of logits, normalised to
sum to 1 so that entropies compare across routers; other rules fall back to softmax. Padding
columns (``nan``) are left out; ``with_extra`` columns (zero / skip experts) are kept, as the
router scores them.

Per token: entropy ``H(p)`` (nats; normalized ``H / log E``: 1 = uniform, 0 = one expert),
top-1 margin ``p(1) - p(2)``, and ``logsumexp(logits)``. Per layer: their means (margin median
too), the router z-loss ``mean(logsumexp(logits)^2)`` (ST-MoE; only where raw logits were
stored), and the Switch auxiliary loss ``E * sum_i f_i P_i`` with ``f_i`` = expert ``i``'s share
of the layer's routed assignments and ``P_i`` = its mean router probability. With ``f`` summing
to 1 the uniform baseline is 1 for every ``k`` (transformers' ``load_balancing_loss_func``
returns ``k`` times this value). Baselines of a uniform router: entropy_norm 1, margin 0,
z-loss ``(log E)^2`` (all-zero logits), aux loss 1.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from moelens.analysis._common import counts_per_expert, layer_positions

__all__ = ["router_probabilities", "token_confidence", "confidence_summary", "aux_loss"]

_CHUNK = 1 << 18


def _lse(x: np.ndarray) -> np.ndarray:
    m = np.nanmax(x, axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return (m[:, 0] + np.log(np.nansum(np.exp(x - m), axis=1))).astype(np.float64)


def router_probabilities(logits: np.ndarray, scoring: str = "softmax", logits_kind: str = "logits") -> np.ndarray:
    """``[T, W]`` probabilities (rows sum to 1; ``nan`` columns stay ``nan``, empty rows all ``nan``)."""
    x = np.asarray(logits, dtype=np.float64)
    if logits_kind == "probs":
        s = x
    elif scoring == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-x))
    else:
        return np.exp(x - _lse(x)[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        return s / np.nansum(s, axis=1, keepdims=True)


def token_confidence(logits: np.ndarray, scoring: str = "softmax", logits_kind: str = "logits") -> dict[str, np.ndarray]:
    """Per-token ``entropy``, ``entropy_norm``, ``margin`` and (raw logits only) ``lse``; ``nan`` for absent rows."""
    p = router_probabilities(logits, scoring, logits_kind)
    width = (~np.isnan(p)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        H = -np.nansum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)
        H = np.where(width > 0, H, np.nan)
        norm = np.where(width > 1, H / np.log(np.maximum(width, 2)), np.nan)
    top2 = -np.sort(-np.nan_to_num(p, nan=-1.0), axis=1)[:, :2]
    margin = np.where(width > 1, top2[:, 0] - top2[:, 1], np.nan)
    out = {"entropy": H, "entropy_norm": norm, "margin": margin}
    if logits_kind != "probs":
        out["lse"] = np.where(width > 0, _lse(np.asarray(logits, dtype=np.float64)), np.nan)
    return out


def aux_loss(counts: np.ndarray, mean_probs: np.ndarray) -> float:
    """Switch auxiliary loss ``E * sum_i f_i P_i`` with ``f = counts / counts.sum()``."""
    counts = np.asarray(counts, dtype=np.float64)
    E = len(counts)
    if counts.sum() == 0:
        return float("nan")
    return float(E * (counts / counts.sum() * np.asarray(mean_probs, dtype=np.float64)[:E]).sum())


def confidence_summary(db: Any, routing: Any, layers: Iterable[int] | None = None):
    """One row per layer from the stored logits: confidence means, z-loss and aux loss (see module docstring)."""
    import polars as pl

    from moelens.store.arrays import load_logits

    routing_meta = (routing.config or {}).get("routing", {})
    scoring, kind = routing_meta.get("scoring", "softmax"), routing_meta.get("logits_kind", "logits")
    E = routing.num_experts
    rows = []
    for li in layer_positions(routing.layers, layers):
        layer = int(routing.layers[li])
        logits = load_logits(db, routing, layer)
        sums: dict[str, float] = {"entropy": 0.0, "entropy_norm": 0.0, "margin": 0.0, "lse2": 0.0}
        margins, n = [], 0
        prob_sum = np.zeros(logits.shape[1])
        for lo in range(0, len(logits), _CHUNK):
            part = logits[lo:lo + _CHUNK]
            part = part[~np.isnan(part).all(1)]
            if not len(part):
                continue
            c = token_confidence(part, scoring, kind)
            n += len(part)
            for name in ("entropy", "entropy_norm", "margin"):
                sums[name] += float(np.nansum(c[name]))
            if "lse" in c:
                sums["lse2"] += float(np.nansum(c["lse"] ** 2))
            margins.append(c["margin"])
            prob_sum += np.nansum(router_probabilities(part, scoring, kind), axis=0)
        if n == 0:
            continue
        counts = counts_per_expert(routing.experts[li], E)
        rows.append({
            "layer": layer, "tokens": n, "entropy": sums["entropy"] / n, "entropy_norm": sums["entropy_norm"] / n,
            "margin_mean": sums["margin"] / n, "margin_median": float(np.nanmedian(np.concatenate(margins))),
            "z_loss": sums["lse2"] / n if kind != "probs" else float("nan"),
            "aux_loss": aux_loss(counts, prob_sum[:E] / n),
            "baseline_entropy_norm": 1.0, "baseline_margin": 0.0, "baseline_z_loss": math.log(E) ** 2,
            "baseline_aux_loss": 1.0, "scoring": scoring, "logits_kind": kind})
    return pl.DataFrame(rows) if rows else pl.DataFrame()
