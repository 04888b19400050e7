"""The dashboard's "Serving" view as JSON-able dicts (a thin presentation layer renders them).

Shapes (every number a float or ``None``):

* ``placement``: ``[{ep, redundant, placement, series, vllm_balancedness, sglang_balancedness,
  trtllm_imbalance, fit_on, eval_on}]`` (``series`` names a line across EP sizes; the oracle plan is left
  out when it was fitted on the traffic it is evaluated on);
* ``drops``: ``[{capacity_factor, batch_tokens, drop_rate}]`` over all layers, plus ``drops_by_layer``;
* ``cache``: ``[{policy, cache_size, hit_rate, bytes_per_token}]`` (Belady is the bound);
* ``coverage``: ``[{batch, distinct, uniform, activation}]`` averaged over layers;
* ``prefetch``: ``[{predictor, accuracy, popular, uniform}]`` averaged over layer pairs;
* ``notes``: what was unavailable and why.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["serving_view"]


def _rows(frame, columns) -> list[dict[str, Any]]:
    if frame is None or not getattr(frame, "height", 0):
        return []
    out = []
    for row in frame.select([c for c in columns if c in frame.columns]).to_dicts():
        out.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()})
    return out


def _series(row: dict[str, Any]) -> str:
    """A name for a placement line across EP sizes: contiguous, EPLB, EPLB + 1 copy per GPU, ..."""
    if row["placement"] == "contiguous":
        return "contiguous"
    extra = row["redundant"]
    name = "EPLB" + ("" if not extra else " + 1 copy per GPU" if extra == row["ep"] else f" + {extra} copies")
    return name + (" (fitted on the evaluation traffic)" if row["placement"] == "eplb_oracle" else "")


def serving_view(report: Any) -> dict[str, Any]:
    """The view's data for a :class:`~moelens.analysis.serving.report.ServingReport`."""
    import polars as pl

    f = report.frames
    view: dict[str, Any] = {"run_id": report.run_id, "num_experts": report.num_experts, "top_k": report.top_k,
                            "expert_bytes": report.expert_bytes, "notes": list(report.notes)}
    view["placement"] = []
    for row in _rows(f.get("placement"), ["ep", "redundant", "placement", "vllm_balancedness", "sglang_balancedness",
                                          "trtllm_imbalance", "fit_on", "eval_on"]):
        if row["placement"] == "eplb_oracle" and row["fit_on"] == row["eval_on"]:
            continue  # fitted and evaluated on the same traffic: the oracle is the plan itself
        view["placement"].append({**row, "series": _series(row)})
    cap = f.get("capacity")
    if cap is not None and cap.height:
        drops = cap.group_by(["capacity_factor", "batch_tokens"]).agg(
            drop_rate=pl.col("dropped").sum() / pl.col("assignments").sum()).sort(["batch_tokens", "capacity_factor"])
        view["drops"] = _rows(drops, ["capacity_factor", "batch_tokens", "drop_rate"])
        view["drops_by_layer"] = _rows(cap, ["layer", "capacity_factor", "batch_tokens", "drop_rate"])
    else:
        view["drops"], view["drops_by_layer"] = [], []
    view["cache"] = _rows(f.get("cache_summary"), ["policy", "cache_size", "hit_rate", "bytes_per_token"])
    cov = f.get("coverage")
    if cov is not None and cov.height:
        cov = cov.group_by("batch").agg(pl.col("distinct").mean(), pl.col("uniform").first(),
                                        pl.col("activation").mean()).sort("batch")
    view["coverage"] = _rows(cov, ["batch", "distinct", "uniform", "activation"])
    pre = f.get("prefetch")
    if pre is not None and pre.height:
        pre = pre.group_by("predictor").agg(pl.col("accuracy").mean(), pl.col("popular").mean(),
                                            pl.col("uniform").first()).sort("predictor")
    view["prefetch"] = _rows(pre, ["predictor", "accuracy", "popular", "uniform"])
    return view
