"""Assemble the full report of one run: every metric that needs no logits, plus confidence when logits exist.

:func:`build_report` loads the run once (expert ids only) and runs each analysis module over it,
timing every stage. The result's ``data`` is the JSON object printed by ``moelens report --json``
(keys documented in ``docs/metrics.md``, schema ``moelens.report/1``); ``frames`` keeps the full
polars frames for notebooks and the Rich rendering.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moelens.analysis import coactivation
from moelens.analysis.layerpass import LayerPass, default_workers
from moelens.analysis.labels import available_labels, resolve_label
from moelens.analysis.options import ReportOptions
from moelens.analysis.temporal import any_overlap_baseline, first_or_second_baseline

__all__ = ["Report", "build_report", "report_labels", "SCHEMA", "unavailable"]

SCHEMA = "moelens.report/1"


@dataclass
class Report:
    data: dict[str, Any]
    frames: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class _Clock:
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


def _records(frame: Any, columns: list[str] | None = None) -> list[dict[str, Any]]:
    if frame is None or not frame.height:
        return []
    return clean(frame.select(columns).to_dicts() if columns else frame.to_dicts())


def report_labels(routing: Any, options: ReportOptions) -> list[str]:
    """Labels the report tests: the asked ones, else every present label with 2..max_values values + position."""
    if options.labels is not None:
        return list(options.labels)
    out = []
    for name, kind in available_labels(routing).items():
        if kind == "token":
            if name == "position":
                out.append(name)
            continue
        n = len(resolve_label(routing, name).values)
        if 2 <= n <= options.specialization.max_values:
            out.append(name)
    return out


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
                             else "no router logits stored (trace with --logits)")
    return out


def _run_info(routing: Any, db_path: str | None) -> dict[str, Any]:
    meta = (routing.config or {}).get("routing", {})
    return {"run_id": routing.run_id, "database": db_path, "family": meta.get("family"),
            "scoring": meta.get("scoring"), "num_experts": routing.num_experts, "top_k": routing.top_k,
            "tokens": routing.num_tokens, "documents": int(routing.documents.height),
            "layers": [int(x) for x in routing.layers]}


def build_report(db: Any = None, run_id: str | None = None, options: ReportOptions = ReportOptions(), *,
                 routing: Any = None, has_logits: bool | None = None) -> Report:
    """Every section of the report for ``run_id`` in ``db`` (or for an already loaded ``routing``)."""
    from moelens.store.arrays import regular_pages

    clock = _Clock()
    if routing is None and db is not None:
        from moelens.analysis.stats_report import build_stats_report, is_stats_run
        from moelens.store import Store

        store = db if isinstance(db, Store) else Store(db, read_only=True)
        try:
            if is_stats_run(store, run_id):
                return Report(build_stats_report(store, run_id, options), {}, clock.timings)
        finally:
            if store is not db:
                store.close()
    with regular_pages():
        if routing is None:
            from moelens.analysis.routing import load_run

            routing = load_run(db, run_id, layers=options.layers)
        clock.lap("load")
        return _build(db, routing, options, clock, has_logits)


def _build(db: Any, routing: Any, options: ReportOptions, clock: _Clock, has_logits: bool | None) -> Report:
    layers = options.layers
    E, k = routing.num_experts, routing.top_k
    frames: dict[str, Any] = {}
    data: dict[str, Any] = {"schema": SCHEMA, "run": _run_info(routing, getattr(db, "path", None) or (str(db) if db else None))}
    sopt = options.specialization
    data["options"] = clean({"dead_threshold": options.load.dead_threshold, "collapse_effective": options.load.collapse_effective,
                             "collapse_dead": options.load.collapse_dead, "devices": list(options.load.devices),
                             "bootstrap": sopt.bootstrap, "confidence": sopt.confidence, "alpha": sopt.alpha,
                             "min_lift": sopt.min_lift, "min_tokens": sopt.min_tokens, "min_docs": sopt.min_docs,
                             "min_count": sopt.min_count, "seed": sopt.seed, "top": options.top,
                             "vocabulary_min_count": options.vocabulary.min_count})
    data["baselines"] = clean({"share": 1.0 / E, "specialization_share": k / E, "lift": 1.0,
                               "first_choice": 1.0 / E, "first_or_second": first_or_second_baseline(E) if k >= 2 else None,
                               "any_overlap": any_overlap_baseline(E, k), "coactivation": coactivation.coactivation_baseline(E, k),
                               "saturation": k / E, "transition": 1.0 / E})

    # -- one pass over the layers (see layerpass.py) --------------------------------------------
    import polars as pl

    labels = report_labels(routing, options)
    layer_pass = LayerPass(routing, labels, options)
    clock.lap("setup")
    workers = options.workers if options.workers is not None else default_workers(routing)
    result = layer_pass.run(workers)
    clock.lap(f"layers ({workers} worker{'s' if workers > 1 else ''})")
    rows = []
    for s in result.load:
        bal = {key[len("balancedness_"):]: s[key] for key in s if key.startswith("balancedness_")}
        rows.append({"layer": s["layer"], "tokens": s["tokens"], "load": s["share"], **{
            name: s[name] for name in ("max_over_mean", "imbalance_ratio", "cv", "gini", "entropy", "entropy_norm",
                                       "effective_experts", "effective_fraction", "min_utilization", "max_utilization",
                                       "dead_experts", "dead_fraction", "never_routed", "collapsed", "collapse_reason")},
            "balancedness": bal})
    data["layers"] = clean(rows)
    frames["load"] = pl.DataFrame([{k: v for k, v in r.items() if k not in ("load", "balancedness")} for r in rows])

    analyses = layer_pass.specialization(result)
    data["specialization"], data["specialization_tests"], data["nmi"] = {}, {}, {}
    cols = ["layer", "expert", "value", "share", "lift", "ci_low", "ci_high", "count", "tokens", "docs", "q_value"]
    for a in analyses:
        sig = (a.tests.filter(pl.col("significant")).sort("lift", descending=True)
               .group_by("layer", "value", maintain_order=True).head(options.top)
               .sort(["value", "layer", "lift"], descending=[False, False, True]))
        data["specialization"][a.label] = _records(sig, cols)
        data["specialization_tests"][a.label] = {"kind": a.kind, "tested": int(a.tests["tested"].sum()),
                                                 "significant": int(a.tests["significant"].sum())}
        data["nmi"][a.label] = _records(a.nmi, ["layer", "nmi", "nmi_baseline", "nmi_permuted"])
        frames[f"specialization:{a.label}"] = a.tests
        frames[f"nmi:{a.label}"] = a.nmi
    pos_tests = frames.get("specialization:position")
    if pos_tests is not None and pos_tests.height:
        first = (pos_tests.filter(pl.col("value") == "0").sort("share", descending=True)
                 .group_by("layer", maintain_order=True).head(3).sort("layer", "share", descending=[False, True]))
        data["position"] = {"first_token": _records(first, ["layer", "expert", "share", "lift", "ci_low", "ci_high",
                                                             "significant"])}
    else:
        data["position"] = {"first_token": []}
    clock.lap("specialization")

    frames["vocabulary"] = pl.DataFrame(result.vocabulary) if result.vocabulary else pl.DataFrame()
    frames["coactivation"] = pl.DataFrame(result.coactivation) if result.coactivation else pl.DataFrame()
    rates = pl.DataFrame(result.rates) if result.rates else pl.DataFrame()
    reuse = pl.DataFrame(result.reuse) if result.reuse else pl.DataFrame()
    frames["temporal"] = rates.join(reuse.rename({c: f"reuse_{c}" for c in reuse.columns if c != "layer"}), on="layer") \
        if rates.height and reuse.height else rates
    frames["crosslayer"] = pl.DataFrame(result.crosslayer) if result.crosslayer else pl.DataFrame()
    for name in ("vocabulary", "coactivation", "temporal", "crosslayer"):
        data[name] = _records(frames[name])
    missing = unavailable(routing.config)
    if "vocabulary" in missing:  # token id -1 everywhere: the numbers would be about nothing
        data["vocabulary"], frames["vocabulary"] = [], pl.DataFrame()
    clock.lap("assemble")
    stage_times = {f"  {stage} (in layer pass)": seconds for stage, seconds in result.timings.items()}

    # -- router confidence (only with logits) ------------------------------------------------
    data["confidence"] = None
    if options.confidence_section and db is not None and (has_logits if has_logits is not None else _has_logits(db, routing)):
        from moelens.analysis.confidence import confidence_summary

        frames["confidence"] = confidence_summary(db, routing, layers)
        data["confidence"] = _records(frames["confidence"])
        clock.lap("confidence")
    elif options.confidence_section:
        missing = {**missing, **unavailable(routing.config, logits=False)}
    data["source"] = (routing.config or {}).get("source", {"kind": "transformers"})
    data["unavailable"] = missing
    return Report(data, frames, {**clock.timings, **stage_times})


def _has_logits(db: Any, routing: Any) -> bool:
    from moelens.store import Store
    from moelens.store.schema import logits_table

    store = db if isinstance(db, Store) else Store(db, read_only=True)
    try:
        info = store.get_run(routing.run_id)
        return info is not None and logits_table(info.run_key) in store._tables()
    finally:
        if not isinstance(db, Store):
            store.close()
