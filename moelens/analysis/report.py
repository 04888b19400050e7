"""Assemble the full report of one run, dispatched on the kind of run data.

:func:`build_report` loads the run once through :func:`moelens.analysis.runs.load_any` and
dispatches on its type: a :class:`~moelens.store.arrays.RunRouting` (per-token routes) gets every
metric that needs no logits, computed in one pass over the layers
(:mod:`~moelens.analysis.layerpass`), plus router confidence when logits exist; a
:class:`~moelens.store.aggregates.RunAggregates` (stats mode) gets what its aggregates determine
(:mod:`~moelens.analysis.stats_report`). The shared sections (header with status, options,
baselines, per-layer load rows) come from :mod:`~moelens.analysis.sections`. The result's ``data``
is the JSON object printed by ``moelens report --json`` (keys documented in ``docs/metrics.md``,
schema ``moelens.report/1``); ``frames`` keeps the full polars frames for notebooks and the Rich
rendering.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from moelens.analysis import stats_report
from moelens.analysis.confidence import confidence_summary
from moelens.analysis.labels import default_labels, resolve_label
from moelens.analysis.layerpass import LayerPass, default_workers
from moelens.analysis.options import ReportOptions
from moelens.analysis.runs import RunData, load_any
from moelens.analysis.sections import (SCHEMA, Clock, Report, baselines, clean, layer_row, options_record, records,
                                       run_header, unavailable)
from moelens.analysis.causal import causal_column, causal_verdicts, read_interventions
from moelens.analysis.specialization import rank_cells
from moelens.store import Store
from moelens.store.aggregates import RunAggregates
from moelens.store.arrays import regular_pages
from moelens.store.schema import logits_table

__all__ = ["Report", "build_report", "report_labels", "SCHEMA", "clean", "share_matrix_record", "unavailable"]

SPEC_COLUMNS = ["layer", "expert", "value", "share", "lift", "ci_low", "ci_high", "count", "tokens", "docs", "q_value"]


def report_labels(run: RunData, options: ReportOptions) -> list[str]:
    """Labels the report tests: the asked ones, else every present label with 2..max_values values + position."""
    return default_labels(run, options.specialization.max_values, options.labels)


def build_report(db: Any = None, run_id: str | None = None, options: ReportOptions = ReportOptions(), *,
                 run: RunData | None = None, routing: Any = None, has_logits: bool | None = None) -> Report:
    """Every section of the report for ``run_id`` in ``db`` (or for an already loaded ``run`` / ``routing``)."""
    clock = Clock()
    run = run if run is not None else routing
    db_path = getattr(db, "path", None) or (str(db) if db is not None else None)
    with regular_pages():
        if run is None:
            run = load_any(db, run_id, layers=options.layers)
            clock.lap("load")
        if isinstance(run, RunAggregates):
            return stats_report.build(run, options, db_path, clock)
        return _build(db, db_path, run, options, clock, has_logits)


def share_matrix_record(tests: Any, values: tuple[str, ...]) -> dict[str, Any]:
    """The full expert x value share matrix of one label (every cell, significant or not), compact:
    ``share[l][v][e]`` = N(e, v) / N(v) over the top-k slots and ``top1_share`` over the first slot."""
    import polars as pl

    layers = sorted(set(tests["layer"].to_list()))
    present = [v for v in values if v in set(tests["value"].to_list())]
    index = {v: i for i, v in enumerate(present)}
    E = int(tests["expert"].max()) + 1 if tests.height else 0
    t = tests.with_columns(pl.col("value").replace_strict(index, return_dtype=pl.Int64).alias("_v")).sort(
        "layer", "_v", "expert")
    shape = (len(layers), len(present), E)
    full = t.height == int(np.prod(shape))

    def grid(column: str, digits: int | None = 6) -> Any:
        if not full:
            return []
        a = t[column].to_numpy().astype(np.float64).reshape(shape)
        return np.round(a, digits) if digits is not None else a.astype(np.int64)

    tokens = t.group_by("layer", "_v").agg(pl.col("tokens").first()).sort("layer", "_v")["tokens"].to_numpy()
    return clean({"layers": layers, "values": present, "num_experts": E,
                  "tokens": tokens.reshape(shape[:2]) if full else [],
                  "share": grid("share"), "top1_share": grid("top1_share"), "count": grid("count", None)})


def _label_summary(a: Any, options: ReportOptions) -> dict[str, Any]:
    """Counts of the label's cells by state and the values left untested, with the reason."""
    import polars as pl

    t = a.tests
    s = options.specialization
    would = (pl.col("tested") & (pl.col("q_value") <= s.alpha) & (pl.col("ci_low") > 1.0) & (pl.col("lift") >= s.min_lift))
    untested_values = (t.filter(pl.col("state") == "untested").filter(pl.col("untested_reason").str.contains("needed"))
                       .group_by("value", maintain_order=True)
                       .agg(pl.col("docs").first(), pl.col("tokens").max(), pl.col("untested_reason").first()))
    return {"kind": a.kind, "tested": int(t["tested"].sum()), "significant": int(t["significant"].sum()),
            "not_significant": int((t["state"] == "not_significant").sum()),
            "untested": int((t["state"] == "untested").sum()),
            "unsupported": int(t.filter(would & ~pl.col("supported")).height),
            "untested_values": clean([{"value": r["value"], "documents": r["docs"], "tokens": r["tokens"],
                                       "reason": r["untested_reason"]} for r in untested_values.iter_rows(named=True)])}


def _build(db: Any, db_path: str | None, routing: Any, options: ReportOptions, clock: Clock,
           has_logits: bool | None) -> Report:
    import polars as pl

    layers = options.layers
    frames: dict[str, Any] = {}
    data: dict[str, Any] = {"schema": SCHEMA, "run": run_header(routing, db_path, mode="routes"),
                            "options": options_record(options, per_token=True),
                            "baselines": baselines(routing.num_experts, routing.top_k)}

    # -- one pass over the layers (see layerpass.py) --------------------------------------------
    labels = report_labels(routing, options)
    repeat = list(options.repeat_labels) if options.repeat_labels is not None else \
        [name for name in labels if resolve_label(routing, name).kind == "document"]
    layer_pass = LayerPass(routing, labels, options, repeat)
    clock.lap("setup")
    workers = options.workers if options.workers is not None else default_workers(routing)
    result = layer_pass.run(workers)
    clock.lap(f"layers ({workers} worker{'s' if workers > 1 else ''})")
    rows = [layer_row(s["layer"], s["tokens"], s) for s in result.load]
    data["layers"] = clean(rows)
    frames["load"] = pl.DataFrame([{k: v for k, v in r.items() if k not in ("load", "balancedness")} for r in rows])

    analyses = layer_pass.specialization(result)
    data["specialization"], data["specialization_tests"], data["nmi"], data["share_matrix"] = {}, {}, {}, {}
    measured = causal_verdicts(found) if db is not None and (found := read_interventions(db, routing.run_id)) is not None \
        else None
    data["causal_measured"] = measured is not None
    for a in analyses:
        sig = (rank_cells(a.tests.filter(pl.col("significant")))
               .group_by("layer", "value", maintain_order=True).head(options.top))
        data["specialization"][a.label] = causal_column(records(rank_cells(sig), SPEC_COLUMNS), a.label, measured)
        data["specialization_tests"][a.label] = _label_summary(a, options)
        data["nmi"][a.label] = records(a.nmi, ["layer", "nmi", "nmi_baseline", "nmi_permuted"])
        data["share_matrix"][a.label] = share_matrix_record(a.tests, resolve_label(routing, a.label).values)
        frames[f"specialization:{a.label}"] = a.tests
        frames[f"nmi:{a.label}"] = a.nmi
    pos_tests = frames.get("specialization:position")
    if pos_tests is not None and pos_tests.height:
        first = (pos_tests.filter(pl.col("value") == "0").sort("share", descending=True)
                 .group_by("layer", maintain_order=True).head(3).sort("layer", "share", descending=[False, True]))
        data["position"] = {"first_token": records(first, ["layer", "expert", "share", "lift", "ci_low", "ci_high",
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
        data[name] = records(frames[name])
    missing = unavailable(routing.config)
    if "vocabulary" in missing:  # token id -1 everywhere: the numbers would be about nothing
        data["vocabulary"], frames["vocabulary"] = [], pl.DataFrame()
    data["repeat_rates_by_label"] = {}
    for label in repeat:
        frame = pl.DataFrame(result.label_rates.get(label, [])) if result.label_rates.get(label) else pl.DataFrame()
        frames[f"repeat_rates:{label}"] = frame
        data["repeat_rates_by_label"][label] = records(frame)
    clock.lap("assemble")
    stage_times = {f"  {stage} (in layer pass)": seconds for stage, seconds in result.timings.items()}

    # -- router confidence (only with logits) ------------------------------------------------
    data["confidence"] = None
    if options.confidence_section and db is not None and (has_logits if has_logits is not None else _has_logits(db, routing)):
        frames["confidence"] = confidence_summary(db, routing, layers)
        data["confidence"] = records(frames["confidence"])
        clock.lap("confidence")
    elif options.confidence_section:
        missing = {**missing, **unavailable(routing.config, logits=False)}
    data["source"] = (routing.config or {}).get("source", {"kind": "transformers"})
    data["unavailable"] = missing
    return Report(data, frames, {**clock.timings, **stage_times})


def _has_logits(db: Any, routing: Any) -> bool:
    store = db if isinstance(db, Store) else Store(db, read_only=True)
    try:
        info = store.get_run(routing.run_id)
        return info is not None and logits_table(info.run_key) in store._tables()
    finally:
        if not isinstance(db, Store):
            store.close()
