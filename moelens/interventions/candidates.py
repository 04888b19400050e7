"""Candidate expert pairs to merge, per layer, from routing and from the experts' weights.

One row per unordered pair ``(layer, a, b)`` with ``a < b`` and three similarities:

* ``coactivation`` - ``N(a, b) / sqrt(N(a) N(b))``: the tokens whose top-k set holds both, over the
  geometric mean of each expert's tokens (the cosine of the two experts' token-indicator vectors; 0
  when either expert is unused). Built from :func:`moelens.analysis.coactivation.coactivation_pairs`.
* ``profile_similarity`` - the cosine of the two experts' label profiles: for every label value ``v``
  of the given labels, the expert's share ``N(e, v) / N(v)`` (the analysis share matrix), the labels'
  values concatenated. Experts used for the same domains and languages in the same proportions score 1.
* ``weight_similarity`` - the cosine of the flattened expert weights
  (:func:`weight_similarity`).

The functions here are frame in, frame out (Polars), except :func:`candidates`, which reads a traced
run of a DuckDB and, given a model, its weights. :func:`best_pairs` picks disjoint pairs by a column.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from moelens.errors import ConfigError

__all__ = ["weight_similarity", "coactivation_similarity", "profile_similarity", "weight_pairs", "candidates", "best_pairs",
           "SIMILARITIES"]

SIMILARITIES = ("coactivation", "profile_similarity", "weight_similarity")
_KEY = ("layer", "a", "b")


def _upper(layer: int, M: np.ndarray, name: str):
    import polars as pl

    a, b = np.triu_indices(M.shape[0], k=1)
    return pl.DataFrame({"layer": np.full(len(a), layer, np.int32), "a": a.astype(np.int32),
                         "b": b.astype(np.int32), name: M[a, b].astype(np.float64)})


def coactivation_similarity(pairs: Any):
    """``(layer, a, b, coactivation)`` from a co-activation frame (``layer, expert, partner, count,
    expert_count`` per ordered pair, as :func:`coactivation_pairs` returns)."""
    import polars as pl

    frame = pairs.filter(pl.col("expert") < pl.col("partner")).join(
        pairs.select("layer", pl.col("expert").alias("partner"), pl.col("expert_count").alias("partner_count"))
        .unique(), on=["layer", "partner"], how="left")
    denom = (pl.col("expert_count").cast(pl.Float64) * pl.col("partner_count").cast(pl.Float64)).sqrt()
    return (frame.select(pl.col("layer").cast(pl.Int32), pl.col("expert").cast(pl.Int32).alias("a"),
                         pl.col("partner").cast(pl.Int32).alias("b"),
                         pl.when(denom > 0).then(pl.col("count") / denom).otherwise(0.0).alias("coactivation"))
            .sort(_KEY))


def profile_similarity(shares: Any):
    """``(layer, a, b, profile_similarity)`` from share-matrix rows (``layer, value, expert, share``, and
    ``label`` when several labels are stacked): cosine of the experts' share vectors over label values."""
    import polars as pl

    label = pl.col("label") if "label" in shares.columns else pl.lit("")
    frame = shares.select(pl.col("layer").cast(pl.Int32), pl.col("expert").cast(pl.Int32),
                          pl.concat_str(label, pl.lit("="), pl.col("value")).alias("key"),
                          pl.col("share").fill_nan(0.0).fill_null(0.0))
    out = []
    for layer in sorted(frame["layer"].unique().to_list()):
        part = frame.filter(pl.col("layer") == layer)
        keys = sorted(part["key"].unique().to_list())
        E = int(part["expert"].max()) + 1
        X = np.zeros((E, len(keys)))
        col = {k: i for i, k in enumerate(keys)}
        for e, k, s in part.select("expert", "key", "share").iter_rows():
            X[e, col[k]] = s
        norm = np.linalg.norm(X, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            U = np.where(norm[:, None] > 0, X / norm[:, None], 0.0)
        out.append(_upper(layer, U @ U.T, "profile_similarity"))
    return pl.concat(out) if out else pl.DataFrame(schema={"layer": pl.Int32, "a": pl.Int32, "b": pl.Int32,
                                                          "profile_similarity": pl.Float64})


def weight_pairs(similarity: np.ndarray, layer: int):
    """``(layer, a, b, weight_similarity)`` from an ``[E, E]`` similarity matrix."""
    return _upper(layer, np.asarray(similarity, dtype=np.float64), "weight_similarity")


def weight_similarity(model: Any, layer: int) -> np.ndarray:
    """``[E, E]`` cosine similarity of the layer's experts over all their per-expert weights."""
    import torch

    from moelens.interventions.weights import expert_tensors
    from moelens.models.discover import plan_model

    plan = plan_model(model)
    site = next(s for s in plan.sites if s.layer == layer and s.primary)
    experts = model.get_submodule(plan.experts_paths.get(site.path) or f"{site.path.rsplit('.', 1)[0]}.experts")
    E = site.num_experts
    with torch.no_grad():
        flat = torch.cat([torch.stack([slot(e).detach().float().reshape(-1) for e in range(E)])
                          for _, _, slot in expert_tensors(experts, E)], dim=1)
        unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return (unit @ unit.T).cpu().numpy().astype(np.float64)


def best_pairs(frame: Any, layer: int, n: int, by: str = "weight_similarity") -> list[tuple[int, int]]:
    """``n`` disjoint pairs of ``layer``, highest ``by`` first (ties: lower ids first)."""
    import polars as pl

    if by not in frame.columns:
        raise ConfigError(f"candidates hold no column {by!r}; rank by one of"
                          f" {', '.join(c for c in SIMILARITIES if c in frame.columns)}.")
    rows = (frame.filter((pl.col("layer") == layer) & pl.col(by).is_not_null())
            .sort([by, "a", "b"], descending=[True, False, False]).select("a", "b").iter_rows())
    used: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for a, b in rows:
        if len(pairs) == n:
            break
        if a not in used and b not in used:
            pairs.append((int(a), int(b)))
            used.update((a, b))
    return pairs


def candidates(db: Any, model: Any = None, *, run: str | None = None, layers: Iterable[int] | None = None,
               labels: Iterable[str] = ("domain", "language")):
    """Every expert pair of the traced run's layers with its three similarities (``weight_similarity``
    only with ``model``), most co-activated first within a layer. ``db`` is a path or an open trace."""
    import polars as pl

    from moelens.analysis.facade import Trace, open as open_db

    trace = db if isinstance(db, Trace) else open_db(db)
    try:
        layers = None if layers is None else [int(x) for x in layers]
        frame = coactivation_similarity(trace.coactivation(run, layers))
        known = set(trace.labels(run))
        shares = [trace.share_matrix(label, run, layers) for label in labels if label in known]
        if shares:
            frame = frame.join(profile_similarity(pl.concat(shares)), on=list(_KEY), how="left")
        else:
            frame = frame.with_columns(pl.lit(None, pl.Float64).alias("profile_similarity"))
    finally:
        if trace is not db:
            trace.close()
    if model is not None:
        weights = pl.concat([weight_pairs(weight_similarity(model, int(layer)), int(layer))
                             for layer in sorted(frame["layer"].unique().to_list())])
        frame = frame.join(weights, on=list(_KEY), how="left")
    else:
        frame = frame.with_columns(pl.lit(None, pl.Float64).alias("weight_similarity"))
    return frame.select(*_KEY, *SIMILARITIES).sort(["layer", "coactivation", "a", "b"],
                                                     descending=[False, True, False, False])
