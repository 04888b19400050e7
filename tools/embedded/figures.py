"""The model card's routing figures, read from a trace database with ``moelens.open``.

Everything here is the product's own analysis, so the card doubles as a regression test of it
(``tests/test_embedded_card_regression.py`` re-traces the checkpoints and compares):

* load per layer: :meth:`Trace.load` (max/mean, effective experts ``exp(H)``, dead experts,
  collapse verdict) and :meth:`Trace.expert_load` (each expert's load, summing to 1);
* router diagnostics from the stored router logits and gate weights (runs traced with
  ``logits=True``), through :meth:`Trace.sql` on the public schema: median top-1 minus top-2
  logit, the fraction of tokens whose last top-k slot has gate weight exactly 0 (softmax
  underflow; ``torch.topk`` then fills that slot by tie-breaking among zero-probability experts)
  and ``exp(H)`` when the slots are ranked by logit instead (no ties);
* specialization: :meth:`Trace.specialization` (OLMoE share, lift, bootstrap interval of the lift,
  Benjamini-Hochberg q-value, ``significant``); per (value, layer) the card keeps the expert with
  the largest share, and counts the significant cells of the label;
* router saturation of the early checkpoint against the final one: :meth:`Trace.compare`.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

LABELS = ("language", "domain")
SPEC_FIELDS = ("value", "layer", "expert", "count", "tokens", "docs", "share", "overall_share", "lift",
               "ci_low", "ci_high", "q_value", "tested", "significant")


def _exp_entropy(counts: Iterable[float]) -> float:
    c = [float(x) for x in counts if x > 0]
    total = sum(c)
    return math.exp(-sum(x / total * math.log(x / total) for x in c)) if total > 0 else 0.0


def router_diagnostics(t: Any, run: str, top_k: int) -> dict[int, dict[str, float]]:
    """Per layer: ``median_logit_gap``, ``last_slot_zero_weight``, ``effective_experts_logit_rank``."""
    p = {"run": run}
    gap = t.sql("SELECT layer, median(l[1] - l[2])::DOUBLE AS gap FROM (SELECT layer, "
                "list_sort(logits, 'DESC') AS l FROM router_logits WHERE run_id = $run) GROUP BY layer", p)
    zero = t.sql("SELECT layer, avg((weight = 0)::DOUBLE) AS zero FROM routes WHERE run_id = $run "
                 "AND rank = $last GROUP BY layer", {**p, "last": top_k - 1})
    ranked = t.sql("SELECT layer, e AS expert, count(*) AS n FROM (SELECT layer, unnest(list_slice("
                   "list_grade_up(logits, 'DESC'), 1, $k)) AS e FROM router_logits WHERE run_id = $run) "
                   "GROUP BY ALL ORDER BY ALL", {**p, "k": top_k})
    if not gap.height:
        raise ValueError(f"run {run!r} stored no router logits: trace it with logits=True")
    out: dict[int, dict[str, float]] = {}
    zero_of = dict(zip(zero["layer"].to_list(), zero["zero"].to_list()))
    for layer, g in zip(gap["layer"].to_list(), gap["gap"].to_list()):
        counts = ranked.filter(ranked["layer"] == layer)["n"].to_list()
        out[int(layer)] = {"median_logit_gap": float(g), "last_slot_zero_weight": float(zero_of.get(layer, 0.0)),
                           "effective_experts_logit_rank": _exp_entropy(counts)}
    return out


def load_figures(t: Any, run: str, top_k: int, diagnostics: bool = True) -> list[dict]:
    """One entry per layer: the load metrics the card quotes, each expert's load and the diagnostics."""
    summary = t.load(run).sort("layer")
    experts = t.expert_load(run).sort("layer", "expert")
    diag = router_diagnostics(t, run, top_k) if diagnostics else {}
    rows = []
    for r in summary.iter_rows(named=True):
        layer = int(r["layer"])
        load = experts.filter(experts["layer"] == layer)["share"].to_list()
        rows.append({
            "layer": layer, "tokens": int(r["tokens"]), "max_over_mean": r["max_over_mean"],
            "effective_experts": r["effective_experts"], "entropy_norm": r["entropy_norm"],
            "dead_experts": [int(e) for e in r["dead_experts"]], "collapsed": bool(r["collapsed"]),
            "min_load": min(load), "max_load": max(load), "load": [round(x, 6) for x in load],
            **diag.get(layer, {})})
    return rows


def best_experts(t: Any, run: str, label: str) -> tuple[list[dict], dict[str, int]]:
    """Per (value, layer) the row of the expert with the largest share; and how many of the label's
    (layer, value, expert) cells were tested and found significant."""
    import polars as pl

    frame = t.specialization(label, run)
    best = (frame.sort(["value", "layer", "share", "expert"], descending=[False, False, True, False])
            .group_by(["value", "layer"], maintain_order=True).first())
    rows = [{k: _plain(r[k]) for k in SPEC_FIELDS} for r in best.iter_rows(named=True)]
    cells = {"cells": frame.height, "tested": int(frame["tested"].sum()),
             "significant": int(frame.filter(pl.col("significant")).height)}
    return rows, cells


def _plain(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def checkpoint_figures(t: Any, run: str, labels: Iterable[str] = LABELS) -> dict:
    """Everything the card says about one traced checkpoint (run id = checkpoint name)."""
    runs = t.runs()
    info = runs.filter(runs["run_id"] == run).row(0, named=True)
    E, k = int(info["num_experts"]), int(info["top_k"])
    out: dict = {"num_experts": E, "top_k": k, "uniform_share": k / E,
                 "load": load_figures(t, run, k), "specialization": {}, "cells": {}}
    for label in labels:
        out["specialization"][label], out["cells"][label] = best_experts(t, run, label)
    return out


def saturation(t: Any, early: str, final: str) -> dict:
    """Router saturation ``|top-k early ∩ top-k final| / k`` and top-1 agreement per layer."""
    frame = t.compare(early, final, labels=[]).sort("layer")
    return {"runs": [early, final], "layers": frame["layer"].to_list(),
            "saturation": frame["saturation"].to_list(), "top1_agreement": frame["top1_agreement"].to_list(),
            "baseline_saturation": float(frame["baseline_saturation"][0])}


def acceptance(checkpoints: dict) -> dict:
    """The acceptance checks of the embedded default, on the product's figures.

    Specialization: some language's expert at some layer receives at least twice the uniform
    share k/E and moelens calls it significant. Collapse: the collapsed variant's effective experts
    are at most half the balanced model's in most layers (also with slots ranked by logit)."""
    bal, col = checkpoints["moelens-mini"], checkpoints["moelens-mini-collapsed"]
    u = bal["uniform_share"]
    rows = bal["specialization"]["language"]
    passing = [r for r in rows if r["share"] >= 2 * u and r["significant"]]
    best = max(rows, key=lambda r: (r["share"], r["lift"]))
    eff_b = [r["effective_experts"] for r in bal["load"]]
    halved = [c["effective_experts"] <= b / 2 for b, c in zip(eff_b, col["load"])]
    ranked = [c["effective_experts_logit_rank"] <= b / 2 for b, c in zip(eff_b, col["load"])]
    return {"specialization_pass": bool(passing), "specialized_pairs": len(passing),
            "best_language_expert": best, "collapse_layers_halved": int(sum(halved)),
            "collapse_layers_halved_logit_rank": int(sum(ranked)),
            "collapse_pass": sum(halved) > len(halved) / 2,
            "collapsed_layers_flagged": int(sum(r["collapsed"] for r in col["load"]))}
