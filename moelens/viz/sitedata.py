"""The dashboard's data for one run (schema ``moelens.site-run/2``, documented in ``docs/site-data.md``).

:func:`run_data` loads a run once (expert ids, gate weights, token text), runs the report over it
and assembles JSON-able parts (:class:`RunFiles`): the run file (run metadata, per-layer load and
collapse, per-(layer, expert) load, every specialization cell with its state - significant, not
significant or untested and why - NMI, the expert cards' material, the list of documents), the
token view's documents in chunks, and the token search index. Floats are rounded to 4 significant
digits; NaN and infinities become ``null``.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from moelens.errors import ConfigError

__all__ = ["SiteCaps", "RunFiles", "run_data", "run_row", "SCHEMA", "SCHEMA_VERSION"]

SCHEMA = "moelens.site-run/2"
SCHEMA_VERSION = 2
FIRST_LABELS = ("domain", "language", "position")


@dataclass(frozen=True)
class SiteCaps:
    """How much of a run the site carries (large runs are sampled so the site stays small).

    Attributes:
        max_docs: documents in the token view and its search index (all of a run up to this many;
            beyond, chosen round-robin over (domain, language)).
        max_doc_tokens: tokens shown per document (the rest is cut, ``shown_tokens < n_tokens``).
        chunk_docs: documents per data file of the token view (the page loads a file when shown).
        contexts_per_expert: example contexts per (layer, expert), at most one per document.
        context_window: tokens of context either side of an example's token.
        top_tokens: characteristic (by lift) and most frequent tokens per expert.
        partners: co-activated partners per expert.
        max_label_values: values per label in the heatmaps (the most frequent ones).
        overloaded: an expert is flagged overloaded at utilization (load / fair load 1/E) >= this.
        max_compare_runs: runs compared pairwise on the overview (router saturation).
    """

    max_docs: int = 1000
    max_doc_tokens: int = 1024
    chunk_docs: int = 25
    contexts_per_expert: int = 5
    context_window: int = 8
    top_tokens: int = 8
    partners: int = 5
    max_label_values: int = 24
    overloaded: float = 2.0
    max_compare_runs: int = 6

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value <= 0:
                raise ConfigError(f"site cap {name} must be positive, got {value}.")


def compact(value: Any) -> Any:
    """JSON-safe copy with floats rounded to 4 significant digits (NaN / inf -> None)."""
    if isinstance(value, dict):
        return {str(k): compact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [compact(v) for v in value]
    if isinstance(value, np.ndarray):
        return compact(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return float(f"{f:.4g}") if math.isfinite(f) else None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _public_dataset(dataset: str | None) -> str | None:
    """A local absolute path is reduced to its file name (a shared site should not reveal folders)."""
    if dataset and os.path.isabs(dataset):
        return os.path.basename(dataset)
    return dataset


def run_row(store: Any, run_id: str) -> dict[str, Any]:
    """The ``runs`` row of ``run_id`` (without its ``config`` JSON), JSON-safe."""
    cur = store.con.cursor()
    try:
        cur.execute("SELECT run_id, model, family, revision, dtype, num_layers, moe_layers, num_experts, top_k, "
                    "num_shared_experts, scoring, dataset, status, created_at, moelens_version, schema_version "
                    "FROM runs WHERE run_id = ?", [run_id])
        names = [d[0] for d in cur.description]
        row = dict(zip(names, cur.fetchone()))
    finally:
        cur.close()
    row["dataset"] = _public_dataset(row.get("dataset"))
    if isinstance(row.get("model"), str) and os.path.isabs(row["model"]):
        row["model"] = os.path.basename(row["model"].rstrip("/"))
    return compact(row)


def _labels(routing: Any, report: Any, caps: SiteCaps, options: Any) -> list[dict[str, Any]]:
    import polars as pl

    from moelens.analysis.labels import resolve_label
    from moelens.viz.states import value_reasons, with_states

    names = [key.split(":", 1)[1] for key in report.frames if key.startswith("specialization:")]
    names.sort(key=lambda n: (FIRST_LABELS.index(n) if n in FIRST_LABELS else len(FIRST_LABELS), n))
    out = []
    for name in names:
        tests = with_states(report.frames[f"specialization:{name}"], options.specialization)
        label = resolve_label(routing, name)
        present = set(tests["value"].unique().to_list())
        # label order: by frequency for document labels, bucket order for position
        values = [v for v in label.values if v in present][:caps.max_label_values]
        index = {v: i for i, v in enumerate(values)}
        t = tests.filter(pl.col("value").is_in(values)).with_columns(
            pl.col("value").replace_strict(index, return_dtype=pl.Int32).alias("value_index")
        ).sort("layer", "value_index", "expert")
        per_value = t.group_by("value_index").agg(pl.col("tokens").max(), pl.col("docs").max()).sort("value_index")
        nmi = report.data["nmi"].get(name, [])
        states = t["state"].to_list()
        why = value_reasons(t, options.specialization)
        out.append({
            "name": name, "kind": label.kind, "values": values,
            "value_tokens": per_value["tokens"].to_list(), "value_docs": per_value["docs"].to_list(),
            "tested": int(tests["tested"].sum()), "significant": int(tests["significant"].sum()),
            "untested": int((~tests["tested"]).sum()), "cells_total": int(tests.height),
            "value_untested": [why.get(v) for v in values],
            "nmi": nmi,
            "cells": {"layer": t["layer"].to_list(), "value": t["value_index"].to_list(),
                      "expert": t["expert"].to_list(), "count": t["count"].to_list(), "share": t["share"].to_list(),
                      "lift": t["lift"].to_list(), "ci_low": t["ci_low"].to_list(), "ci_high": t["ci_high"].to_list(),
                      "q_value": t["q_value"].to_list(), "tested": t["tested"].cast(pl.Int8).to_list(),
                      "significant": t["significant"].cast(pl.Int8).to_list(), "state": states,
                      "untested_reason": t["untested_reason"].to_list()},
        })
    return out


def _experts(routing: Any, views: list[Any], load_frame: Any, caps: SiteCaps, options: Any) -> list[dict[str, Any]]:
    import polars as pl

    from moelens.analysis.coactivation import coactivation_pairs
    from moelens.analysis.options import VocabularyOptions
    from moelens.analysis.vocabulary import expert_top_tokens
    from moelens.viz.sitetokens import expert_tokens

    vopt = VocabularyOptions(min_count=options.vocabulary.min_count, top_tokens=caps.top_tokens,
                             min_pair_count=options.vocabulary.min_pair_count, seed=options.vocabulary.seed)
    from moelens.analysis.report import unavailable

    top = pl.DataFrame() if "vocabulary" in unavailable(routing.config) else expert_top_tokens(routing, None, None, vopt)
    first_view: dict[int, Any] = {}
    for i, v in zip(routing.token_id.tolist(), views):
        first_view.setdefault(i, v)
    pairs = coactivation_pairs(routing)
    if pairs.height:
        pairs = (pairs.filter(pl.col("count") > 0).sort(["layer", "expert", "conditional", "partner"],
                                                        descending=[False, False, True, False])
                 .group_by("layer", "expert", maintain_order=True).head(caps.partners))
    by_key: dict[tuple[int, int], dict[str, list]] = {}
    for r in (top.iter_rows(named=True) if top.height else []):
        by_key.setdefault((r["layer"], r["expert"]), {"top": [], "partners": []})["top"].append(
            {"token_id": r["token_id"], "token": first_view.get(r["token_id"], ""), "count": r["count"],
             "share": r["share"], "lift": r["lift"]})
    for r in (pairs.iter_rows(named=True) if pairs.height else []):
        by_key.setdefault((r["layer"], r["expert"]), {"top": [], "partners": []})["partners"].append(
            {"expert": r["partner"], "count": r["count"], "conditional": r["conditional"], "lift": r["lift"]})
    load_rows = {(r["layer"], r["expert"]): r for r in load_frame.iter_rows(named=True)}
    out = []
    for li, layer in enumerate(routing.layers.tolist()):
        details = expert_tokens(routing, views, li, contexts=caps.contexts_per_expert, window=caps.context_window,
                                frequent=caps.top_tokens)
        for x in range(routing.num_experts):
            lr = load_rows.get((layer, x), {})
            extra = by_key.get((layer, x), {"top": [], "partners": []})
            util = lr.get("utilization")
            out.append({"layer": layer, "expert": x, "count": lr.get("count", 0), "load": lr.get("share"),
                        "utilization": util, "dead": bool(lr.get("dead", False)),
                        "never_routed": lr.get("count", 0) == 0,
                        "overloaded": util is not None and util >= caps.overloaded,
                        **details[x], "top_tokens": extra["top"], "partners": extra["partners"]})
    return out


class RunFiles(NamedTuple):
    """The data files of one run: the run file, the token view's document chunks, the search index."""

    run: dict[str, Any]
    chunks: list[list[dict[str, Any]]]
    search: dict[str, Any]


def _config(store: Any, run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(source, routing)`` from ``runs.config``: what the run's source recorded (key ``source``;
    absent: a transformers trace, everything recorded) and the routing codes the overview explains
    (convention A-F, scoring group S1-S8 and its rule in words, shared experts)."""
    import json

    (config,), = store.con.execute("SELECT config FROM runs WHERE run_id = ?", [run_id]).fetchall()
    try:
        cfg = json.loads(config) if isinstance(config, str) else (config or {})
    except (TypeError, ValueError):
        cfg = {}
    source = {"kind": "transformers", "weights": True, "token_text": True, "token_ids": True, "per_token": True}
    source.update({k: v for k, v in (cfg.get("source") or {}).items() if k in source})
    routing = cfg.get("routing") or {}
    keys = ("convention", "scoring_group", "scoring_rule", "shared_experts", "logits_kind")
    return source, {k: routing.get(k) for k in keys if routing.get(k) not in (None, "")}


def run_data(store: Any, run_id: str, caps: SiteCaps = SiteCaps(), options: Any = None, *,
             routing: Any = None) -> RunFiles:
    """Everything the dashboard shows about ``run_id`` (see the module docstring); ``routing``: the run
    already loaded with ``load_routing(..., weights=True, token_text=True)``."""
    from moelens.analysis.load import expert_load
    from moelens.analysis.options import ReportOptions
    from moelens.analysis.report import build_report
    from moelens.store.arrays import load_routing
    from moelens.viz.sitetokens import export_documents, search_index, token_texts, token_views

    options = options or ReportOptions()
    if routing is None:
        routing = load_routing(store, run_id, weights=True, token_text=True)
    report = build_report(store, run_id, options, routing=routing)
    texts = token_texts(routing)
    views = token_views(routing, texts)
    load_frame = expert_load(routing, None, options.load)
    layers = []
    for row in report.data["layers"]:
        counts = load_frame.filter(load_frame["layer"] == row["layer"]).sort("expert")["count"].to_list()
        layers.append({**{k: v for k, v in row.items() if k != "balancedness"}, "counts": counts,
                       "balancedness": row.get("balancedness")})
    info = run_row(store, run_id)
    summary = {key: report.data.get(key) for key in ("specialization", "specialization_tests", "position",
                                                     "vocabulary", "coactivation", "temporal", "crosslayer",
                                                     "confidence")}
    documents, chunks, spans = export_documents(routing, views, caps.max_docs, caps.max_doc_tokens, caps.chunk_docs)
    source, routing_codes = _config(store, run_id)
    data = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "run": {**info, "layers": [int(x) for x in routing.layers], "tokens": routing.num_tokens,
                "documents": int(routing.documents.height),
                "has_weights": routing.weights is not None and bool(source["weights"]),
                "has_token_text": routing.tokens is not None and bool(source["token_text"]), "source": source,
                "routing": routing_codes, "unavailable": report.data.get("unavailable", {})},
        "options": {**report.data["options"], "overloaded": caps.overloaded},
        "caps": asdict(caps), "baselines": report.data["baselines"],
        "layers": layers,
        "labels": _labels(routing, report, caps, options),
        "experts": _experts(routing, views, load_frame, caps, options),
        "documents": documents, "chunks": len(chunks),
        "report": summary,
        "serving": serving_data(routing),
        "causal": causal_data(store, run_id),
    }
    return RunFiles(compact(data), compact(chunks), compact(search_index(routing, texts, views, spans)))


def serving_data(routing: Any) -> dict[str, Any]:
    """The Serving view (:func:`moelens.analysis.serving.view.serving_view`) at sizes that fit the run."""
    from moelens.analysis.serving.options import ServingOptions
    from moelens.analysis.serving.report import serving_report
    from moelens.analysis.serving.view import serving_view

    E, k = int(routing.num_experts), int(routing.top_k)
    ep = tuple(n for n in (2, 4, 8, 16, 32, 64) if n <= E and E % n == 0) or (1,)
    caches = tuple(sorted({c for c in (1, 2, k, 2 * k, E // 4, E // 2, 3 * E // 4, E) if 1 <= c <= E}))
    options = ServingOptions(ep=ep, cache_sizes=caches, batch_sizes=(1, 4, 16, 64), capacity_tokens=(1024,),
                             workers=1)
    try:
        return serving_view(serving_report(routing, options))
    except Exception as error:  # the dashboard still shows everything else; the view says why it is empty
        from moelens.errors import MoelensError

        if not isinstance(error, (MoelensError, ImportError, ValueError)):
            raise
        return {"notes": [str(error).splitlines()[0]], "placement": [], "drops": [], "cache": [], "coverage": [],
                "prefetch": []}


CAUSAL_CAP = 2000  # rows of the Causal view per run (interventions x label values)


def causal_data(store: Any, run_id: str) -> dict[str, Any]:
    """The Causal view: measured interventions on the run's model with their verdicts and controls."""
    from moelens.analysis.causal import causal_verdicts, read_interventions

    rows = read_interventions(store, run_id)
    if rows is None:
        return {"rows": [], "controls": []}
    verdicts = causal_verdicts(rows).sort("irun_id", "intervention_id", "label_kind", "label_value")
    keep = ["irun_id", "intervention_id", "description", "kind", "layer", "experts", "label_kind", "label_value",
            "n_tokens", "base_loss", "d_loss", "d_loss_lo", "d_loss_hi", "kl", "top1_agree", "control_hi",
            "control_d_loss", "controls", "verdict"]
    import polars as pl

    controls = (rows.filter(pl.col("control")).select("irun_id", "control_for", "label_kind", "label_value", "d_loss",
                                                      "d_loss_lo", "d_loss_hi")
                .sort("irun_id", "control_for", "label_kind", "label_value"))
    def order(row: dict[str, Any]) -> tuple:
        value = row["label_value"]
        bucket = int(value.split("-")[0]) if row["label_kind"] == "position" and value.split("-")[0].isdigit() else 0
        return (row["irun_id"], row.get("intervention_id", row.get("control_for")), row["label_kind"] != "all",
                row["label_kind"], bucket, value)  # position buckets in numeric order

    main_rows = sorted(verdicts.select(keep).to_dicts(), key=order)
    control_rows = sorted(controls.to_dicts(), key=order)
    return {"rows": main_rows[:CAUSAL_CAP], "controls": control_rows[:CAUSAL_CAP], "truncated": len(main_rows) > CAUSAL_CAP}
