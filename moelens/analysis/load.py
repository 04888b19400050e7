"""Expert load per layer: shares, imbalance, entropy, dead experts, collapse, expert-parallel balance.

Definitions (``c_i`` = tokens routed to expert ``i`` at the layer, counting every top-k slot;
``A = sum c_i``; uniform load ``A / E``):

* share ``c_i / A`` (sums to 1; uniform ``1/E``); utilization ``c_i / (A/E)`` (uniform 1; NeMo's
  "expert utilisation ratio" load / (tokens * k / E) when nothing is dropped);
* max/mean ``max c / mean c``; imbalance ratio ``(max - mean) / mean`` (TensorRT-LLM);
  coefficient of variation ``std(c) / mean(c)`` (population std); Gini of ``c``;
* entropy ``H = -sum share log share`` (nats), normalized ``H / log E`` in [0, 1], effective
  experts ``exp(H)`` in [k, E] (``exp(H)/E`` is NeMo's expert diversity);
* dead: utilization below :attr:`LoadOptions.dead_threshold` (default 0.1);
* collapsed: ``exp(H)/E < collapse_effective`` (0.3) or dead fraction ``>= collapse_dead`` (0.5);
* EP balancedness for ``n`` devices: mean device load / max device load (SGLang, vLLM), with
  experts placed contiguously (``E/n`` consecutive ids per device) or greedily
  (DeepSeek EPLB ``balanced_packing`` without replication, :mod:`moelens.analysis.serving.eplb`:
  heaviest expert first onto the lightest device that still has room); replicas, the hierarchical
  policy and fit/evaluate splits are in :mod:`moelens.analysis.serving`.

Baselines under uniform routing: share 1/E, utilization 1, max/mean 1, imbalance 0, CV 0,
Gini 0, normalized entropy 1, effective experts E, balancedness 1.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from moelens.analysis._common import entropy, gini, layer_views
from moelens.analysis.options import LoadOptions

__all__ = ["expert_counts", "layer_load_stats", "device_loads", "balancedness", "expert_load", "load_summary"]

PLACEMENTS = ("contiguous", "greedy")


def expert_counts(routing: Any, layers: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(layers[L], counts[L, E], tokens[L])`` for the selected layers of a RunRouting."""
    views = list(layer_views(routing, layers))
    counts = np.stack([v.counts for v in views]) if views else np.zeros((0, routing.num_experts), np.int64)
    tokens = np.array([v.n_recorded for v in views], dtype=np.int64)
    return np.array([v.layer for v in views], dtype=np.int64), counts, tokens


def device_loads(counts: np.ndarray, devices: int, placement: str = "contiguous") -> np.ndarray:
    """``[devices]`` summed load per device for one layer's ``counts[E]``."""
    counts = np.asarray(counts, dtype=np.float64)
    E = len(counts)
    if placement == "contiguous":
        bounds = np.linspace(0, E, devices + 1).round().astype(int)
        return np.array([counts[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])])
    if placement == "greedy":
        from moelens.analysis.serving.eplb import balanced_packing

        pack, _ = balanced_packing(counts[None], devices)
        return np.bincount(pack[0], weights=counts, minlength=devices)
    from moelens.errors import ConfigError

    raise ConfigError(f"placement must be one of {', '.join(PLACEMENTS)}; got {placement!r}.")


def balancedness(counts: np.ndarray, devices: int, placement: str = "contiguous") -> float:
    """Mean over max device load (1 = perfectly balanced; SGLang's and vLLM's metric)."""
    loads = device_loads(counts, devices, placement)
    top = loads.max() if len(loads) else 0.0
    return float(loads.mean() / top) if top > 0 else 1.0


def layer_load_stats(counts: np.ndarray, options: LoadOptions = LoadOptions()) -> dict[str, Any]:
    """Every per-layer load metric of one layer's ``counts[E]`` (see the module docstring)."""
    c = np.asarray(counts, dtype=np.float64)
    E = len(c)
    total = c.sum()
    mean = total / E if E else 0.0
    share = c / total if total > 0 else np.zeros(E)
    util = c / mean if mean > 0 else np.zeros(E)
    H = float(entropy(c)) if total > 0 else 0.0
    eff = math.exp(H) if total > 0 else 0.0
    dead = np.flatnonzero(util < options.dead_threshold) if total > 0 else np.arange(E)
    dead_fraction = len(dead) / E if E else 0.0
    reasons = []
    if eff / E < options.collapse_effective:
        reasons.append(f"effective experts {eff:.1f} of {E} (< {options.collapse_effective:.0%})")
    if dead_fraction >= options.collapse_dead:
        reasons.append(f"{len(dead)} of {E} experts dead (>= {options.collapse_dead:.0%})")
    out: dict[str, Any] = {
        "assignments": int(total),
        "share": share,
        "utilization": util,
        "max_over_mean": float(c.max() / mean) if mean > 0 else float("nan"),
        "imbalance_ratio": float((c.max() - mean) / mean) if mean > 0 else float("nan"),
        "cv": float(c.std() / mean) if mean > 0 else float("nan"),
        "gini": gini(c),
        "entropy": H,
        "entropy_norm": H / math.log(E) if E > 1 else 0.0,
        "effective_experts": eff,
        "effective_fraction": eff / E if E else 0.0,
        "min_utilization": float(util.min()) if E else float("nan"),
        "max_utilization": float(util.max()) if E else float("nan"),
        "dead_experts": [int(x) for x in dead],
        "dead_fraction": dead_fraction,
        "never_routed": int((c == 0).sum()),
        "collapsed": bool(reasons),
        "collapse_reason": "; ".join(reasons) or None,
    }
    for n in options.devices:
        for placement in PLACEMENTS:
            out[f"balancedness_{placement}_{n}"] = balancedness(c, n, placement)
    return out


def expert_load(routing: Any, layers: Iterable[int] | None = None, options: LoadOptions = LoadOptions()):
    """One row per (layer, expert): ``count``, ``share``, ``utilization``, ``dead``, ``baseline_share``."""
    import polars as pl

    lay, counts, _ = expert_counts(routing, layers)
    E = counts.shape[1]
    rows = []
    for layer, c in zip(lay, counts):
        stats = layer_load_stats(c, options)
        dead = np.zeros(E, bool)
        dead[stats["dead_experts"]] = True
        rows.append(pl.DataFrame({"layer": np.full(E, int(layer), np.int32), "expert": np.arange(E, dtype=np.int32),
                                  "count": c, "share": stats["share"], "utilization": stats["utilization"],
                                  "dead": dead, "baseline_share": np.full(E, 1.0 / E)}))
    return pl.concat(rows) if rows else pl.DataFrame()


def load_summary(routing: Any, layers: Iterable[int] | None = None, options: LoadOptions = LoadOptions()):
    """One row per layer with every load metric (see the module docstring) and the collapse verdict."""
    import polars as pl

    lay, counts, tokens = expert_counts(routing, layers)
    rows = []
    for layer, c, t in zip(lay, counts, tokens):
        stats = layer_load_stats(c, options)
        stats.pop("share")
        stats.pop("utilization")
        rows.append({"layer": int(layer), "tokens": int(t), **stats})
    return pl.DataFrame(rows) if rows else pl.DataFrame()
