"""The parts of a report that every kind of run shares, computed by one piece of code.

A report (schema :data:`SCHEMA`) is built from a per-token run by :mod:`~moelens.analysis.report`
and from a stats-mode run by :mod:`~moelens.analysis.stats_report`; both use this module for the
run header (with its status), the options, the analytic baselines and the per-layer load rows,
so the two kinds of report cannot drift apart. Neither report module imports the other.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moelens.analysis import coactivation
from moelens.analysis.load import layer_load_stats
from moelens.analysis.options import ReportOptions
from moelens.analysis.runs import INCOMPLETE
from moelens.analysis.temporal import any_overlap_baseline, first_or_second_baseline
from moelens.errors import option

__all__ = ["SCHEMA", "Report", "Clock", "clean", "records", "run_header", "options_record", "baselines",
           "layer_row", "unavailable", "LAYER_METRICS", "RANKING_RULE"]

SCHEMA = "moelens.report/1"

# the per-layer load metrics every report carries (docs/metrics.md), in this order
LAYER_METRICS = ("max_over_mean", "imbalance_ratio", "cv", "gini", "entropy", "entropy_norm", "effective_experts",
                 "effective_fraction", "min_utilization", "max_utilization", "dead_experts", "dead_fraction",
                 "never_routed", "collapsed", "collapse_reason")

RANKING_RULE = ("cells are ranked by the lower bound of the lift's bootstrap interval (ci_low), then lift; "
                "a cell is significant only when q <= alpha, ci_low > 1, lift >= min_lift and it has support: "
                "count >= min_count, share >= min_share_ratio x the uniform share k/E, and an expert whose load at "
                "the layer is at least min_utilization of a fair share (dead and near-dead experts are never "
                "specialists)")


@dataclass
class Report:
    data: dict[str, Any]
    frames: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class Clock:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self._last
        self._last = now


def clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN / inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [clean(v) for v in value.tolist()]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


def records(frame: Any, columns: list[str] | None = None) -> list[dict[str, Any]]:
    if frame is None or not frame.height:
        return []
    return clean(frame.select(columns).to_dicts() if columns else frame.to_dicts())


def unavailable(config: dict[str, Any] | None, *, logits: bool | None = None) -> dict[str, str]:
    """``{what: reason}`` for what the run's source does not record (``config.source``, contract 1;
    a run without the key is a transformers trace that records everything)."""
    source = (config or {}).get("source") or {}
    kind = source.get("kind", "transformers")
    out: dict[str, str] = {}
    if source.get("weights") is False:
        out["weights"] = f"{kind} records expert ids only, no gate weights (routes.weight is NULL)"
    if source.get("token_ids") is False:
        out["vocabulary"] = f"no token ids: {kind} records none"
    if source and source.get("token_text") is False:
        out["token_text"] = f"no token text: {kind} records none"
    if logits is False:
        out["confidence"] = (f"no router logits: {kind} records none" if source
                             else f"no router logits stored (trace with {option('logits', True)})")
    return out


def run_header(run: Any, db_path: str | None, *, mode: str) -> dict[str, Any]:
    """The report's ``run`` object: identity, size, layers, and the status with a note when incomplete."""
    meta = (run.config or {}).get("routing", {})
    status = getattr(run, "status", None) or "complete"
    return {"run_id": run.run_id, "database": db_path, "family": meta.get("family"), "scoring": meta.get("scoring"),
            "num_experts": int(run.num_experts), "top_k": int(run.top_k), "tokens": int(run.num_tokens),
            "documents": int(run.documents.height), "layers": [int(x) for x in run.layers], "mode": mode,
            "status": status, "complete": status == "complete",
            "status_note": None if status == "complete" else INCOMPLETE.format(status=status)}


def options_record(options: ReportOptions, *, per_token: bool) -> dict[str, Any]:
    load = options.load
    out: dict[str, Any] = {"dead_threshold": load.dead_threshold, "collapse_effective": load.collapse_effective,
                           "collapse_dead": load.collapse_dead, "devices": list(load.devices),
                           "coactivation_min_count": options.coactivation_min_count}
    if per_token:
        s = options.specialization
        out.update({"bootstrap": s.bootstrap, "confidence": s.confidence, "alpha": s.alpha, "min_lift": s.min_lift,
                    "min_tokens": s.min_tokens, "min_docs": s.min_docs, "min_count": s.min_count,
                    "min_share_ratio": s.min_share_ratio, "min_utilization": s.min_utilization, "seed": s.seed,
                    "top": options.top, "vocabulary_min_count": options.vocabulary.min_count,
                    "ranking": RANKING_RULE})
    return clean(out)


def baselines(num_experts: int, top_k: int) -> dict[str, Any]:
    """Uniform-routing baselines of every metric (docs/metrics.md)."""
    E, k = num_experts, top_k
    return clean({"share": 1.0 / E, "specialization_share": k / E, "lift": 1.0, "first_choice": 1.0 / E,
                  "first_or_second": first_or_second_baseline(E) if k >= 2 else None,
                  "any_overlap": any_overlap_baseline(E, k), "coactivation": coactivation.coactivation_baseline(E, k),
                  "saturation": k / E, "transition": 1.0 / E})


def layer_row(layer: int, tokens: int, stats: dict[str, Any]) -> dict[str, Any]:
    """One entry of the report's ``layers`` list from :func:`~moelens.analysis.load.layer_load_stats`."""
    return {"layer": int(layer), "tokens": int(tokens), "load": stats["share"],
            **{name: stats[name] for name in LAYER_METRICS},
            "balancedness": {key[len("balancedness_"):]: stats[key] for key in stats if key.startswith("balancedness_")}}


def layer_rows_from_counts(layers: Any, counts: np.ndarray, tokens: Any, options: ReportOptions) -> list[dict]:
    """:func:`layer_row` for each layer of a ``counts[L, E]`` matrix."""
    return [layer_row(layer, t, layer_load_stats(c, options.load)) for layer, c, t in zip(layers, counts, tokens)]
