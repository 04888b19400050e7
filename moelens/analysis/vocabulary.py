"""Vocabulary specialization: how consistently a token id goes to one expert, and each expert's tokens.

OLMoE (§5.4) token specialization of a token id ``x``: ``max_e N(x, e) / N(x)``, where
``N(x, e)`` counts occurrences of ``x`` whose **top-1** expert is ``e`` (``top1``) or that have
``e`` **among the top-k** (``topk``). Per layer the suite reports the mean over token ids
(``*_mean``) and the occurrence-weighted mean (``*_weighted``), in two conventions:

* **paper** (``paper_*`` columns): over every token id seen at the layer, as OLMoE's per-layer
  top-1 and top-k figures average;
* **filtered** (the unprefixed columns): over token ids seen ``N(x) >= min_count`` times (10),
  like the ``len >= 10`` filter of OLMoE's released analysis script. A token seen once is
  "100 % specialized" by construction, so the paper convention is higher on small or
  long-tailed data; the filtered one is the one to compare across runs of different sizes.

Baselines: uniform routing gives ``1/E`` (top-1) and ``k/E`` (top-k) for infinitely frequent
tokens; ``shuffled_*`` (and ``paper_shuffled_*``) recompute the metric after permuting token
ids over the layer's tokens, which keeps the load and the token frequencies and shows the
finite-sample floor that a rare token reaches by chance.

Characteristic tokens of an expert: token ids ranked by lift ``(N(x, e)/N(x)) / (N(e)/N)``
among pairs with ``N(x, e) >= min_pair_count``, ties broken by count.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from moelens.analysis._common import layer_positions, layer_views
from moelens.analysis.options import VocabularyOptions

__all__ = ["token_specialization", "token_experts", "expert_top_tokens", "TokenSpecialization"]


def _frequent(routing: Any, min_count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(ids[U], counts[U], token_index[n], u[n])`` for token ids occurring at least ``min_count`` times."""
    ids, inv, counts = np.unique(routing.token_id, return_inverse=True, return_counts=True)
    keep = counts >= min_count
    remap = np.full(len(ids), -1, np.int64)
    remap[keep] = np.arange(int(keep.sum()))
    u = remap[inv]
    tokens = np.flatnonzero(u >= 0)
    return ids[keep], counts[keep], tokens, u[tokens]


def _count_matrix(u: np.ndarray, e: np.ndarray, U: int, E: int) -> np.ndarray:
    """``[U, E]`` occurrences of each (frequent token, expert) over the given slots (``-1`` ignored)."""
    key = np.where(e >= 0, u[:, None] * E + e, U * E)
    return np.bincount(key.ravel(), minlength=U * E + 1)[:-1].reshape(U, E)


def _max_share(counts_ue: np.ndarray, n_u: np.ndarray) -> tuple[float, float]:
    """(mean over tokens, occurrence-weighted mean) of ``max_e N(x, e) / N(x)``."""
    return _mean_shares(counts_ue.max(1), n_u, n_u > 0)


def _mean_shares(top: np.ndarray, n_u: np.ndarray, ok: np.ndarray) -> tuple[float, float]:
    """(mean over the token ids ``ok``, occurrence-weighted mean) of ``top / n_u``."""
    if not ok.any():
        return float("nan"), float("nan")
    t, n = top[ok].astype(np.float64), n_u[ok]
    return float((t / n).mean()), float(t.sum() / n.sum())


class TokenSpecialization:
    """Per-layer token specialization over every token id, both conventions from one count matrix."""

    def __init__(self, routing: Any, options: VocabularyOptions = VocabularyOptions()) -> None:
        E = routing.num_experts
        ids, inv, counts = np.unique(routing.token_id, return_inverse=True, return_counts=True)
        self.U, self.E = len(ids), E
        self.frequent = counts >= options.min_count  # the filtered convention's token ids
        u = inv.reshape(-1).astype(np.int64)
        perm = np.random.default_rng(options.seed).permutation(len(u))
        self.rows = {"": u, "shuffled_": u[perm]}
        self.rowsE = {name: r * E for name, r in self.rows.items()}
        self._n: dict[str, np.ndarray] = {}

    def _matrix(self, view: Any, rowsE: np.ndarray, slot: int | None) -> np.ndarray:
        cells = self.U * self.E
        key = view.keys(rowsE, cells, slot)
        return np.bincount(key.reshape(-1), minlength=cells + 1)[:cells].reshape(self.U, self.E)

    def layer_row(self, view: Any) -> dict[str, Any]:
        row: dict[str, Any] = {"layer": view.layer}
        keep = self.frequent
        for name, rows in self.rows.items():
            if view.dropped:
                n_u = np.bincount(rows[~view.invalid[:, 0]], minlength=self.U)
            else:
                n_u = self._n.get(name)
                if n_u is None:
                    n_u = self._n[name] = np.bincount(rows, minlength=self.U)
            if not name:
                row["token_ids"], row["occurrences"] = int((n_u[keep] > 0).sum()), int(n_u[keep].sum())
                row["paper_token_ids"], row["paper_occurrences"] = int((n_u > 0).sum()), int(n_u.sum())
            seen = n_u > 0
            for slots, slot in (("top1", 0), ("topk", None)):
                top = self._matrix(view, self.rowsE[name], slot).max(1)  # one max per id serves both conventions
                row[f"{name}{slots}_mean"], row[f"{name}{slots}_weighted"] = _mean_shares(top, n_u, seen & keep)
                row[f"paper_{name}{slots}_mean"], row[f"paper_{name}{slots}_weighted"] = _mean_shares(top, n_u, seen)
        row["baseline_top1"] = 1.0 / self.E
        row["baseline_topk"] = view.k_eff / self.E
        return row


def token_specialization(routing: Any, layers: Iterable[int] | None = None,
                         options: VocabularyOptions = VocabularyOptions()):
    """One row per layer: token specialization (top-1 and top-k), shuffled and uniform baselines."""
    import polars as pl

    spec = TokenSpecialization(routing, options)
    rows = [spec.layer_row(view) for view in layer_views(routing, layers)]
    return pl.DataFrame(rows) if rows else pl.DataFrame()


def token_experts(routing: Any, layer: int, options: VocabularyOptions = VocabularyOptions()):
    """One row per frequent token id at ``layer``: its most frequent top-1 and top-k experts and their shares."""
    import polars as pl

    ids, _, tokens, u = _frequent(routing, options.min_count)
    U, E = len(ids), routing.num_experts
    e = routing.experts[layer_positions(routing.layers, [layer])[0]][tokens]
    valid = e[:, 0] >= 0
    n_u = np.bincount(u[valid], minlength=U)
    top1 = _count_matrix(u, e[:, :1], U, E)
    topk = _count_matrix(u, e, U, E)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pl.DataFrame({
            "token_id": ids.astype(np.int64), "count": n_u.astype(np.int64),
            "top1_expert": top1.argmax(1).astype(np.int32), "top1_share": top1.max(1) / n_u,
            "topk_expert": topk.argmax(1).astype(np.int32), "topk_share": topk.max(1) / n_u,
        }).filter(pl.col("count") > 0).sort("count", descending=True)


def expert_top_tokens(routing: Any, layers: Iterable[int] | None = None, experts: Iterable[int] | None = None,
                      options: VocabularyOptions = VocabularyOptions()):
    """Per (layer, expert), its ``top_tokens`` most characteristic token ids by lift (see module docstring)."""
    import polars as pl

    ids, _, tokens, u = _frequent(routing, options.min_count)
    U, E = len(ids), routing.num_experts
    wanted = np.arange(E) if experts is None else np.asarray(list(experts), dtype=np.int64)
    frames = []
    for li in layer_positions(routing.layers, layers):
        e = routing.experts[li][tokens]
        n_u = np.bincount(u[(e >= 0).any(1)], minlength=U).astype(np.float64)
        full = _count_matrix(u, e, U, E)
        C = full[:, wanted].astype(np.float64)
        n_e = full.sum(0)[wanted].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = C / n_u[:, None]
            lift = share / (n_e / n_u.sum())[None, :]
        lift = np.where(C >= options.min_pair_count, lift, -np.inf)
        n = min(options.top_tokens, U)
        if n == 0:
            continue
        top = np.lexsort((-C, -lift), axis=0)[:n]  # [n, experts]: highest lift, then highest count
        cols = np.broadcast_to(np.arange(len(wanted)), top.shape)
        ok = np.isfinite(lift[top, cols])
        frames.append(pl.DataFrame({
            "layer": np.full(ok.sum(), int(routing.layers[li]), np.int32),
            "expert": wanted[cols[ok]].astype(np.int32),
            "rank": np.broadcast_to(np.arange(n)[:, None], top.shape)[ok].astype(np.int32),
            "token_id": ids[top[ok]].astype(np.int64), "count": C[top, cols][ok].astype(np.int64),
            "token_count": n_u[top[ok]].astype(np.int64), "share": share[top, cols][ok], "lift": lift[top, cols][ok]}))
    if not frames:
        return pl.DataFrame()
    return pl.concat(frames).sort("layer", "expert", "rank")
