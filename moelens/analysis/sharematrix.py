"""The full expert x label share matrix (OLMoE's domain specialization, Eq. 7), every cell.

For a label ``v`` (a document label such as domain or language, or ``position``) at a layer:
``share = N(e, v) / N(v)`` with ``N(e, v)`` the tokens of value ``v`` whose top-k slots hold
expert ``e`` and ``N(v)`` the tokens of ``v`` recorded at the layer (OLMoE Eq. 7; sums to ``k``
over experts); ``top1_share`` counts only the router's first slot (OLMoE's top-1 variant; sums to
1); ``lift = share / overall`` with ``overall = sum_v N(e, v) / sum_v N(v)``.

Nothing is tested or filtered here - this is the matrix a plot of the paper draws. The report's
specialization tests (:mod:`~moelens.analysis.specialization`) compute the same counts on their
fast path, with intervals and significance; a test checks that the two agree. A stats-mode run
gives ``share`` from its aggregates and no ``top1_*`` (it does not aggregate the first slot
separately).
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from moelens.analysis._common import layer_positions
from moelens.analysis.labels import resolve_label
from moelens.analysis.routing import doc_index
from moelens.errors import ConfigError
from moelens.store.aggregates import RunAggregates

__all__ = ["share_matrix", "COLUMNS"]

COLUMNS = ("label", "layer", "value", "expert", "count", "tokens", "share", "top1_count", "top1_share",
           "overall_share", "lift")


def share_matrix(run: Any, label: str, layers: Iterable[int] | None = None):
    """One row per (layer, value, expert) of ``label``: ``count``, ``tokens``, ``share``, ``top1_count``,
    ``top1_share``, ``overall_share``, ``lift`` (see the module docstring)."""
    import polars as pl

    if isinstance(run, RunAggregates):
        return _from_aggregates(run, label, layers)
    lab = resolve_label(run, label)
    codes = lab.codes[doc_index(run)] if lab.kind == "document" else lab.codes
    V, E = len(lab.values), run.num_experts
    frames = []
    for li in layer_positions(run.layers, layers):
        e = run.experts[li].astype(np.int64)
        valid = (e >= 0) & (e < E) & (codes >= 0)[:, None]
        recorded = valid.any(1)
        counts = np.bincount((codes[:, None] * E + e)[valid], minlength=V * E).reshape(V, E)
        first = valid[:, 0]
        top1 = np.bincount(codes[first] * E + e[first, 0], minlength=V * E).reshape(V, E)
        tokens = np.bincount(codes[recorded], minlength=V)
        frames.append(_frame(lab.name, int(run.layers[li]), lab.values, counts, top1, tokens))
    return pl.concat(frames) if frames else pl.DataFrame(schema={c: pl.Null for c in COLUMNS})


def _frame(label: str, layer: int, values: tuple[str, ...], counts: np.ndarray, top1: np.ndarray | None,
           tokens: np.ndarray):
    import polars as pl

    V, E = counts.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        share = counts / tokens[:, None]
        overall = counts.sum(0) / tokens.sum()
        lift = share / overall[None, :]
        top1_share = None if top1 is None else top1 / tokens[:, None]
    return pl.DataFrame({
        "label": [label] * (V * E), "layer": np.full(V * E, layer, np.int32),
        "value": np.repeat(np.array(values, dtype=object), E).tolist(), "expert": np.tile(np.arange(E, dtype=np.int32), V),
        "count": counts.ravel().astype(np.int64), "tokens": np.repeat(tokens, E).astype(np.int64),
        "share": share.ravel(),
        "top1_count": None if top1 is None else top1.ravel().astype(np.int64),
        "top1_share": None if top1_share is None else top1_share.ravel(),
        "overall_share": np.tile(overall, V), "lift": lift.ravel()},
        schema={"label": pl.String, "layer": pl.Int32, "value": pl.String, "expert": pl.Int32, "count": pl.Int64,
                "tokens": pl.Int64, "share": pl.Float64, "top1_count": pl.Int64, "top1_share": pl.Float64,
                "overall_share": pl.Float64, "lift": pl.Float64})


def _from_aggregates(run: RunAggregates, label: str, layers: Iterable[int] | None):
    import polars as pl

    if label not in run.labels:
        raise ConfigError(f"run {run.run_id!r} aggregated no label {label!r}; it has: "
                          f"{', '.join(run.labels) or 'none'}.")
    lab = run.labels[label]
    frames = [_frame(label, int(run.layers[li]), lab.values, lab.counts[:, li], None, lab.tokens[:, li])
              for li in layer_positions(run.layers, layers)]
    return pl.concat(frames) if frames else pl.DataFrame()
