"""The report of a ``--mode stats`` run, computed from its on-device aggregates.

A stats run keeps no per-token rows, only the ``stats_*`` tables (expert counts per layer and per
label, co-activation, router-entropy histograms). Everything the aggregates determine is reported
with the same definitions as for a routes run: the per-layer load metrics and collapse verdict,
co-activation N(i, j)/N(i), router entropy. Specialization needs per-document counts for its
bootstrap interval and significance test, which a stats run does not keep: the label profiles
(share N(expert, value)/N(value) and lift) are reported under ``label_profile``, untested, and
``specialization`` stays empty - trace with ``--mode routes`` to test them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from moelens.analysis.load import layer_load_stats
from moelens.analysis.options import ReportOptions
from moelens.analysis.temporal import first_or_second_baseline

__all__ = ["is_stats_run", "build_stats_report"]


def is_stats_run(store: Any, run_id: str | None) -> bool:
    info = store.require_run(run_id)
    return info.config.get("identity", {}).get("mode") == "stats"


def build_stats_report(store: Any, run_id: str | None, options: ReportOptions = ReportOptions()) -> dict[str, Any]:
    """The report JSON object (schema ``moelens.report/1``) of a stats-mode run."""
    from moelens.analysis.report import SCHEMA, clean, unavailable

    info = store.require_run(run_id)
    con, rid = store.con, info.run_id
    E, k = info.num_experts, info.top_k
    layers = [r[0] for r in con.execute("SELECT DISTINCT layer FROM stats_tokens WHERE run_id = ? ORDER BY layer",
                                        [rid]).fetchall()]
    if options.layers is not None:
        layers = [x for x in layers if x in set(options.layers)]
    counts = np.zeros((len(layers), E), dtype=np.int64)
    index = {layer: i for i, layer in enumerate(layers)}
    for layer, expert, count in con.execute(
            "SELECT layer, expert, count FROM stats_expert_counts WHERE run_id = ? AND label_kind = 'all'",
            [rid]).fetchall():
        if layer in index and 0 <= expert < E:
            counts[index[layer], expert] = count
    tokens = dict(con.execute("SELECT layer, tokens FROM stats_tokens WHERE run_id = ? AND label_kind = 'all'",
                              [rid]).fetchall())
    rows = []
    for layer, c in zip(layers, counts):
        s = layer_load_stats(c, options.load)
        rows.append({"layer": layer, "tokens": int(tokens.get(layer, 0)), "load": s["share"],
                     **{name: s[name] for name in ("max_over_mean", "imbalance_ratio", "cv", "gini", "entropy",
                                                    "entropy_norm", "effective_experts", "effective_fraction",
                                                    "min_utilization", "max_utilization", "dead_experts",
                                                    "dead_fraction", "never_routed", "collapsed", "collapse_reason")},
                     "balancedness": {key[len("balancedness_"):]: s[key] for key in s if key.startswith("balancedness_")}})
    documents, doc_tokens = con.execute("SELECT count(*), coalesce(sum(n_tokens), 0) FROM documents WHERE run_id = ?",
                                        [rid]).fetchone()
    routing = info.config.get("routing", {})
    coactivation = _coactivation(con, rid, layers, counts)
    confidence = _entropy(con, rid, layers, E)
    missing = unavailable(info.config)
    missing.pop("vocabulary", None)
    kind = (info.config.get("source") or {}).get("kind")
    if kind is not None:  # a counts-only import: per-token analyses have nothing to work on
        why = f"counts only: {kind} records no per-token routes"
        missing.update({name: why for name in ("specialization", "position", "vocabulary", "temporal", "crosslayer")})
    if not coactivation:
        missing["coactivation"] = f"no co-activation counts: {kind or 'the run'} records none"
    if confidence is None:
        missing["confidence"] = f"no router entropy: {kind or 'the run'} records none"
    return clean({
        "schema": SCHEMA,
        "run": {"run_id": rid, "database": store.path, "family": routing.get("family"), "scoring": routing.get("scoring"),
                "num_experts": E, "top_k": k, "tokens": int(doc_tokens), "documents": int(documents), "layers": layers,
                "mode": "stats"},
        "options": {"dead_threshold": options.load.dead_threshold, "collapse_effective": options.load.collapse_effective,
                    "collapse_dead": options.load.collapse_dead, "devices": list(options.load.devices)},
        "baselines": {"share": 1.0 / E, "specialization_share": k / E, "lift": 1.0, "first_choice": 1.0 / E,
                      "first_or_second": first_or_second_baseline(E) if k >= 2 else None,
                      "coactivation": (k - 1) / (E - 1) if E > 1 else None, "transition": 1.0 / E},
        "layers": rows,
        "specialization": {},
        "specialization_tests": {},
        "label_profile": _label_profiles(con, rid, layers, counts, tokens, options.top),
        "nmi": {}, "position": {"first_token": []}, "vocabulary": [], "temporal": [], "crosslayer": [],
        "coactivation": coactivation,
        "confidence": confidence,
        "source": info.config.get("source", {"kind": "transformers"}),
        "unavailable": missing,
    })


def _label_profiles(con: Any, rid: str, layers: list[int], counts: np.ndarray, tokens: dict[int, int],
                    top: int) -> dict[str, list[dict]]:
    """Per label kind: the experts with the highest lift for each value (share and lift, untested).

    share = N(expert in top-k, value) / N(value tokens); lift = share / (N(expert) / N(tokens)).
    """
    rows = con.execute("SELECT c.label_kind, c.label, c.layer, c.expert, c.count, t.tokens FROM stats_expert_counts c "
                       "JOIN stats_tokens t USING (run_id, layer, label_kind, label) "
                       "WHERE c.run_id = ? AND c.label_kind <> 'all' AND c.label IS NOT NULL", [rid]).fetchall()
    index = {layer: i for i, layer in enumerate(layers)}
    out: dict[str, list[dict]] = {}
    for kind, label, layer, expert, count, tok in rows:
        if layer not in index or not tok or not tokens.get(layer):
            continue
        overall = counts[index[layer], expert] / tokens[layer]
        share = count / tok
        out.setdefault(kind, []).append({"layer": layer, "expert": expert, "value": label, "share": share,
                                         "lift": share / overall if overall > 0 else None, "count": count,
                                         "tokens": tok, "tested": False})
    for kind, items in out.items():
        items.sort(key=lambda r: (r["value"], r["layer"], -(r["lift"] or 0)))
        kept, seen = [], {}
        for r in items:
            key = (r["value"], r["layer"])
            seen[key] = seen.get(key, 0) + 1
            if seen[key] <= top:
                kept.append(r)
        out[kind] = kept
    return out


def _coactivation(con: Any, rid: str, layers: list[int], counts: np.ndarray) -> list[dict]:
    if not con.execute("SELECT count(*) FROM stats_coactivation WHERE run_id = ?", [rid]).fetchone()[0]:
        return []  # not recorded (counts-only imports): not a 0
    out = []
    for i, layer in enumerate(layers):
        pairs = con.execute("SELECT expert_a, expert_b, count FROM stats_coactivation WHERE run_id = ? AND layer = ? "
                            "AND expert_a <> expert_b", [rid, layer]).fetchall()
        best = 0.0
        for a, b, c in pairs:
            if counts[i, a] > 0:
                best = max(best, c / counts[i, a])
        out.append({"layer": layer, "max_conditional": best})
    return out


def _entropy(con: Any, rid: str, layers: list[int], E: int) -> list[dict] | None:
    rows = con.execute("SELECT layer, lo, hi, count FROM stats_entropy WHERE run_id = ? AND label_kind = 'all'",
                       [rid]).fetchall()
    if not rows or E < 2:
        return None
    by_layer: dict[int, list[tuple[float, float, int]]] = {}
    for layer, lo, hi, count in rows:
        by_layer.setdefault(layer, []).append((lo, hi, count))
    out = []
    for layer in layers:
        bins = by_layer.get(layer, [])
        total = sum(c for _, _, c in bins)
        mean = sum((lo + hi) / 2 * c for lo, hi, c in bins) / total if total else None
        out.append({"layer": layer, "entropy_norm": None if mean is None else mean / math.log(E),
                    "margin_mean": None, "z_loss": None, "aux_loss": None})
    return out
