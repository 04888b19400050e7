"""Compare two runs over the same tokens (two checkpoints, a base and a fine-tuned model, two engines).

Tokens are matched by ``(doc_id, pos)``; tokens whose ids differ between the runs are left out
and counted (``token_mismatches``). Per layer present in both runs:

* router saturation (OLMoE §5.1): mean over tokens of ``|E_a ∩ E_b| / k`` for the top-k sets;
  uniform baseline ``k / E``; ``top1_agreement`` (baseline ``1/E``);
* load shift: per expert, its share of routed assignments in each run and the difference;
  per layer the total-variation distance ``1/2 sum |share_a - share_b|``;
* specialization shift for a label: per (value, expert), OLMoE share ``N(e, v)/N(v)`` in each run
  and the difference; per layer the mean over values of ``1/2 sum_e |share_a - share_b| / k``
  (0 = same routing profile, 1 = disjoint experts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from moelens.analysis._common import counts_per_expert, layer_positions, popcount_and, set_bitmasks
from moelens.analysis.labels import available_labels, resolve_label
from moelens.analysis.routing import doc_index
from moelens.analysis.sections import clean
from moelens.errors import ConfigError, option

__all__ = ["align_tokens", "router_saturation", "load_shift", "specialization_shift", "Alignment", "build_comparison",
           "default_compare_labels"]


@dataclass(frozen=True)
class Alignment:
    a: np.ndarray  # token indices into run a
    b: np.ndarray  # token indices into run b, same order
    layers: tuple[int, ...]  # decoder layers traced in both runs
    token_mismatches: int


def align_tokens(a: Any, b: Any) -> Alignment:
    """Tokens present in both runs with the same token id, and the layers traced in both."""
    if a.num_experts != b.num_experts:
        raise ConfigError(f"runs {a.run_id!r} and {b.run_id!r} have {a.num_experts} and {b.num_experts} experts;"
                          " compare runs of the same architecture.")
    ka = a.doc_id.astype(np.int64) << 32 | a.pos.astype(np.int64)
    kb = b.doc_id.astype(np.int64) << 32 | b.pos.astype(np.int64)
    common, ia, ib = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    same = a.token_id[ia] == b.token_id[ib]
    layers = tuple(int(x) for x in np.intersect1d(a.layers, b.layers))
    if not len(common) or not layers:
        raise ConfigError(f"runs {a.run_id!r} and {b.run_id!r} share no traced tokens or layers;"
                          " trace the same data with both models.")
    return Alignment(ia[same], ib[same], layers, int((~same).sum()))


def router_saturation(a: Any, b: Any, layers: Iterable[int] | None = None, alignment: Alignment | None = None):
    """One row per shared layer: tokens, saturation ``|E_a ∩ E_b| / k``, top-1 agreement, baselines."""
    import polars as pl

    al = alignment or align_tokens(a, b)
    wanted = al.layers if layers is None else [x for x in layers if x in al.layers]
    E = a.num_experts
    rows = []
    for layer in wanted:
        ea = a.experts[layer_positions(a.layers, [layer])[0]][al.a]
        eb = b.experts[layer_positions(b.layers, [layer])[0]][al.b]
        ok = (ea >= 0).any(1) & (eb >= 0).any(1)
        k = max(ea.shape[1], eb.shape[1])
        inter = popcount_and(set_bitmasks(ea[ok], E), set_bitmasks(eb[ok], E))
        top1 = (ea[ok, 0] == eb[ok, 0]) & (ea[ok, 0] >= 0)
        rows.append({"layer": int(layer), "tokens": int(ok.sum()), "saturation": float(inter.mean() / k) if ok.any() else float("nan"),
                     "top1_agreement": float(top1.mean()) if ok.any() else float("nan"),
                     "baseline_saturation": k / E, "baseline_top1": 1.0 / E})
    return pl.DataFrame(rows) if rows else pl.DataFrame()


def load_shift(a: Any, b: Any, layers: Iterable[int] | None = None, alignment: Alignment | None = None):
    """One row per (shared layer, expert): ``share_a``, ``share_b``, ``delta`` = b - a, and the layer's ``tv``."""
    import polars as pl

    al = alignment or align_tokens(a, b)
    wanted = al.layers if layers is None else [x for x in layers if x in al.layers]
    E = a.num_experts
    frames = []
    for layer in wanted:
        ca = counts_per_expert(a.experts[layer_positions(a.layers, [layer])[0]][al.a], E).astype(np.float64)
        cb = counts_per_expert(b.experts[layer_positions(b.layers, [layer])[0]][al.b], E).astype(np.float64)
        sa, sb = ca / max(ca.sum(), 1), cb / max(cb.sum(), 1)
        frames.append(pl.DataFrame({"layer": np.full(E, layer, np.int32), "expert": np.arange(E, dtype=np.int32),
                                    "share_a": sa, "share_b": sb, "delta": sb - sa,
                                    "tv": np.full(E, 0.5 * np.abs(sb - sa).sum())}))
    return pl.concat(frames) if frames else pl.DataFrame()


def _value_shares(e: np.ndarray, codes: np.ndarray, V: int, E: int) -> tuple[np.ndarray, np.ndarray]:
    key = np.where((e >= 0) & (codes >= 0)[:, None], codes[:, None].astype(np.int64) * E + e, V * E)
    N = np.bincount(key.ravel(), minlength=V * E + 1)[:-1].reshape(V, E).astype(np.float64)
    n = np.bincount(codes[(codes >= 0) & (e >= 0).any(1)], minlength=V).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return N / n[:, None], n


def specialization_shift(a: Any, b: Any, label: str, layers: Iterable[int] | None = None,
                         alignment: Alignment | None = None, max_values: int = 64):
    """``(per_value, per_layer)`` frames: share of each (value, expert) in both runs, and the mean TV per layer."""
    import polars as pl

    al = alignment or align_tokens(a, b)
    wanted = al.layers if layers is None else [x for x in layers if x in al.layers]
    lab = resolve_label(a, label)
    codes = (lab.codes[doc_index(a)] if lab.kind == "document" else lab.codes)[al.a].astype(np.int64)
    V = min(len(lab.values), max_values)
    codes = np.where(codes >= V, -1, codes)
    E = a.num_experts
    frames, summary = [], []
    for layer in wanted:
        ea = a.experts[layer_positions(a.layers, [layer])[0]][al.a]
        eb = b.experts[layer_positions(b.layers, [layer])[0]][al.b]
        sa, n = _value_shares(ea, codes, V, E)
        sb, _ = _value_shares(eb, codes, V, E)
        k = max(ea.shape[1], eb.shape[1])
        present = n > 0
        tv = 0.5 * np.abs(sb - sa).sum(1) / k
        frames.append(pl.DataFrame({
            "layer": np.full(V * E, layer, np.int32), "value": np.repeat(np.array(lab.values[:V], dtype=object), E).astype(str),
            "expert": np.tile(np.arange(E, dtype=np.int32), V), "tokens": np.repeat(n, E).astype(np.int64),
            "share_a": sa.ravel(), "share_b": sb.ravel(), "delta": (sb - sa).ravel()}).filter(pl.col("tokens") > 0))
        summary.append({"label": lab.name, "layer": int(layer), "values": int(present.sum()),
                        "mean_tv": float(tv[present].mean()) if present.any() else float("nan"),
                        "max_tv": float(tv[present].max()) if present.any() else float("nan")})
    per_value = pl.concat(frames).with_columns(pl.lit(lab.name).alias("label")) if frames else pl.DataFrame()
    return per_value, pl.DataFrame(summary)


def default_compare_labels(run: Any) -> list[str]:
    """Labels a comparison splits by when not told: every document label (identifier-like columns such as
    ``id`` never) and position."""
    return [n for n, kind in available_labels(run).items() if kind == "document"] + ["position"]


def build_comparison(a: Any, b: Any, *, layers: Iterable[int] | None = None, labels: Iterable[str] | None = None,
                     top: int = 20) -> dict[str, Any]:
    """The JSON object of ``moelens compare`` (schema ``moelens.compare/1``, keys in ``docs/metrics.md``)."""
    import polars as pl

    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= 1_000_000:
        raise ConfigError(f"{option('top')} must be an integer from 1 to 1,000,000, got {top!r}.")

    al = align_tokens(a, b)
    sat = router_saturation(a, b, layers, al)
    shift = load_shift(a, b, layers, al)
    if labels is None:
        labels = default_compare_labels(a)
    spec_rows: dict[int, dict[str, float]] = {}
    spec_top: dict[str, list] = {}
    for label in labels:
        per_value, summary = specialization_shift(a, b, label, layers, al)
        for r in summary.iter_rows(named=True):
            spec_rows.setdefault(r["layer"], {})[label] = r["mean_tv"]
        spec_top[label] = clean(per_value.sort(pl.col("delta").abs(), descending=True).head(top)
                                .select("layer", "value", "expert", "tokens", "share_a", "share_b", "delta").to_dicts()
                                if per_value.height else [])
    tv = {r["layer"]: r["tv"] for r in shift.group_by("layer").agg(pl.col("tv").first()).iter_rows(named=True)}
    rows = [{**r, "load_tv": tv.get(r["layer"]), "specialization_tv": spec_rows.get(r["layer"], {})}
            for r in sat.iter_rows(named=True)]
    k = max(a.experts.shape[2], b.experts.shape[2])
    return clean({
        "schema": "moelens.compare/1", "run_a": a.run_id, "run_b": b.run_id, "tokens": int(len(al.a)),
        "token_mismatches": al.token_mismatches, "layers_compared": list(al.layers),
        "baselines": {"saturation": k / a.num_experts, "top1": 1.0 / a.num_experts, "tv": 0.0},
        "layers": rows,
        "load_shift": shift.sort(pl.col("delta").abs(), descending=True).head(top)
        .select("layer", "expert", "share_a", "share_b", "delta").to_dicts(),
        "specialization_shift": spec_top,
    })
