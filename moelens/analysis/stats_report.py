"""The report of a stats-mode run, computed from its aggregates (:class:`~moelens.store.aggregates.RunAggregates`).

A stats run keeps no per-token rows, only aggregates (expert counts per layer and per label,
co-activation, router-entropy histograms). Everything the aggregates determine is reported with
the same definitions and the same code as for a routes run (:mod:`~moelens.analysis.sections`,
:func:`~moelens.analysis.coactivation.summary_from_counts` with the same ``min_count`` floor):
the per-layer load metrics and collapse verdict, co-activation N(i, j)/N(i), router entropy.
Specialization needs per-document counts for its bootstrap interval and significance test, which
a stats run does not keep: the label profiles (share N(expert, value)/N(value) and lift) are
reported under ``label_profile`` with ``state = "untested"``, the full share matrix under
``share_matrix`` (top-k only: the first slot is not aggregated), and ``specialization`` stays
empty - trace with per-token routes to test them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from moelens.analysis.coactivation import summary_from_counts
from moelens.analysis.labels import default_labels
from moelens.analysis.options import ReportOptions
from moelens.analysis.sections import (SCHEMA, Clock, Report, baselines, clean, layer_rows_from_counts, options_record,
                                       run_header, unavailable)
from moelens.store.aggregates import RunAggregates

__all__ = ["build"]

UNTESTED = "a stats-mode run keeps no per-document counts to bootstrap; trace with per-token routes to test"
NO_TOP1 = "unavailable: a stats-mode run aggregates the top-k slots together, not the first slot"


def build(run: RunAggregates, options: ReportOptions, db_path: str | None, clock: Clock) -> Report:
    """The report (schema ``moelens.report/1``) of a stats-mode run."""
    E = run.num_experts
    k_eff = [float(c.sum()) / t if t else 0.0 for c, t in zip(run.counts, run.tokens)]
    labels = [name for name in default_labels(run, options.specialization.max_values, options.labels)
              if name in run.labels]
    coactivation = [summary_from_counts(M, layer, k, min_count=options.coactivation_min_count)
                    for M, layer, k in zip(run.coactivation, run.layers, k_eff)] if run.has_coactivation else []
    confidence = _entropy(run)
    missing = unavailable(run.config)
    missing.pop("vocabulary", None)
    kind = (run.config.get("source") or {}).get("kind")
    if kind is not None:  # a counts-only import: per-token analyses have nothing to work on
        why = f"counts only: {kind} records no per-token routes"
        missing.update({name: why for name in ("specialization", "position", "vocabulary", "temporal", "crosslayer")})
    if not coactivation:
        missing["coactivation"] = f"no co-activation counts: {kind or 'the run'} records none"
    if confidence is None:
        missing["confidence"] = f"no router entropy: {kind or 'the run'} records none"
    data = {
        "schema": SCHEMA,
        "run": run_header(run, db_path, mode="stats"),
        "options": options_record(options, per_token=False),
        "baselines": baselines(E, run.top_k),
        "layers": clean(layer_rows_from_counts(run.layers, run.counts, run.tokens, options)),
        "specialization": {},
        "specialization_tests": {name: {"kind": "document", "tested": 0, "significant": 0, "not_significant": 0,
                                        "untested": int(run.labels[name].counts[:, :, :].size), "unsupported": 0,
                                        "untested_values": [], "untested_reason": UNTESTED} for name in labels},
        "label_profile": {name: _label_profile(run, name, options.top) for name in labels},
        "share_matrix": {name: _share_matrix(run, name) for name in labels},
        "nmi": {}, "position": {"first_token": []}, "vocabulary": [], "temporal": [], "crosslayer": [],
        "repeat_rates_by_label": {},
        "coactivation": clean(coactivation),
        "confidence": confidence,
        "source": run.config.get("source", {"kind": "transformers"}),
        "unavailable": missing,
    }
    clock.lap("aggregates")
    return Report(data, {}, clock.timings)


def _shares(run: RunAggregates, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``share[V, L, E]`` = N(expert in top-k, value) / N(value tokens) and ``lift`` = share / overall share."""
    lab = run.labels[name]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = lab.counts / lab.tokens[:, :, None]
        overall = run.counts / run.tokens[:, None]
        lift = share / overall[None]
    return share, lift


def _label_profile(run: RunAggregates, name: str, top: int) -> list[dict]:
    """The experts with the highest lift for each (value, layer): share and lift, untested."""
    lab = run.labels[name]
    share, lift = _shares(run, name)
    out = []
    for v, value in enumerate(lab.values):
        for i, layer in enumerate(run.layers):
            if not lab.tokens[v, i] or not run.tokens[i]:
                continue
            order = np.argsort(-np.nan_to_num(lift[v, i], nan=-np.inf), kind="stable")
            for e in order[:top]:
                if lab.counts[v, i, e] == 0 and not np.isfinite(lift[v, i, e]):
                    continue
                out.append({"layer": int(layer), "expert": int(e), "value": value, "share": float(share[v, i, e]),
                            "lift": float(lift[v, i, e]) if np.isfinite(lift[v, i, e]) else None,
                            "count": int(lab.counts[v, i, e]), "tokens": int(lab.tokens[v, i]), "tested": False,
                            "state": "untested"})
    out.sort(key=lambda r: (r["value"], r["layer"], -(r["lift"] or 0)))
    return clean(out)


def _share_matrix(run: RunAggregates, name: str) -> dict[str, Any]:
    lab = run.labels[name]
    share, _ = _shares(run, name)
    return clean({"layers": [int(x) for x in run.layers], "values": list(lab.values), "num_experts": run.num_experts,
                  "tokens": lab.tokens.T, "share": np.round(np.transpose(share, (1, 0, 2)), 6),
                  "top1_share": None, "top1_unavailable": NO_TOP1, "count": np.transpose(lab.counts, (1, 0, 2))})


def _entropy(run: RunAggregates) -> list[dict] | None:
    """Mean router entropy per layer from the histograms (bin midpoints), normalised by ``log E``."""
    E = run.num_experts
    if not run.entropy or E < 2:
        return None
    out = []
    for layer in run.layers:
        bins = run.entropy.get(int(layer), [])
        total = sum(c for _, _, c in bins)
        mean = sum((lo + hi) / 2 * c for lo, hi, c in bins) / total if total else None
        out.append({"layer": int(layer), "entropy_norm": None if mean is None else mean / math.log(E),
                    "margin_mean": None, "z_loss": None, "aux_loss": None})
    return out
