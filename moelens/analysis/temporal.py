"""Temporal locality: do consecutive tokens of a document go to the same experts?

Mixtral (§5, Table 5) measures, over pairs of consecutive tokens ``(i, i+1)`` of a document:

* ``first_choice``: the top-1 expert of ``i`` equals the top-1 expert of ``i+1``;
  uniform baseline ``1/E`` (12.5 % for E = 8);
* ``first_or_second``: the top-2 sets of ``i`` and ``i+1`` share an expert. For independent
  uniform top-2 sets ``A`` and ``B`` of ``E`` experts, ``P(A and B disjoint) = C(E-2, 2) / C(E, 2)``
  (choose ``B`` among the ``E-2`` experts outside ``A``), so the baseline is
  ``1 - C(E-2, 2) / C(E, 2) = 1 - (E-2)(E-3) / (E(E-1))`` = 1 - 30/56 = 46.4 % for E = 8
  (Mixtral's ``1 - (6/8)(5/7)``);
* generalised here to the whole top-k set: ``any_overlap`` (baseline ``1 - C(E-k, k)/C(E, k)``)
  and ``topk_overlap`` = mean ``|A ∩ B| / k`` (baseline ``k/E``).

``shuffled_*`` recomputes each rate after shuffling the token order within every document: same
documents, same load, no order - the right null when documents differ in their experts
(domain specialization raises repeat rates without any temporal effect).

Reuse distance (top-1): for each token whose top-1 expert was already the top-1 expert of an
earlier token of its document, the gap in positions to the latest such token. Under uniform
independent routing gaps are geometric with mean ``E``; documents truncate long gaps, so
compare with ``shuffled_*`` as well.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from moelens.analysis._common import _popcount, comb, layer_views, same_doc_next
from moelens.analysis.labels import resolve_label
from moelens.analysis.routing import doc_index

__all__ = ["repeat_rates", "reuse_distance", "first_or_second_baseline", "any_overlap_baseline",
           "within_document_shuffle", "Temporal"]


def first_or_second_baseline(num_experts: int) -> float:
    """``1 - C(E-2, 2) / C(E, 2)``: chance that two independent uniform top-2 sets share an expert."""
    return any_overlap_baseline(num_experts, 2)


def any_overlap_baseline(num_experts: int, k: int) -> float:
    """``1 - C(E-k, k) / C(E, k)``: chance that two independent uniform top-k sets intersect."""
    total = comb(num_experts, k)
    return 1.0 - comb(num_experts - k, k) / total if total else float("nan")


def within_document_shuffle(routing: Any, seed: int = 0) -> np.ndarray:
    """A permutation of the tokens that keeps each token in its document and randomises the order."""
    rng = np.random.default_rng(seed)
    return np.lexsort((rng.random(routing.num_tokens), doc_index(routing)))


class Temporal:
    """Per-layer repeat rates and reuse gaps; the pair mask and the shuffle are built once per run.

    Rates are computed per value of ``by`` (one group, ``"all"``, without it) and, from the same
    per-pair hits, per value of each of ``labels`` (:meth:`label_rows`).
    """

    def __init__(self, routing: Any, by: str | None = None, seed: int = 0, labels: Iterable[str] = ()) -> None:
        self.routing, self.by = routing, by
        self.E = routing.num_experts
        self.di = doc_index(routing)
        self.pos = routing.pos
        self.pair = same_doc_next(self.di, routing.pos)  # [T-1]: (t, t+1) are consecutive in one document
        self.perm = within_document_shuffle(routing, seed)
        self.groupings = [self._grouping(by)] + [self._grouping(name) for name in labels]
        self.labels = tuple(labels)
        self.groups, self.names, self.pairs = self.groupings[0]

    def _grouping(self, by: str | None) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
        """``(group of each pair with -1 -> sentinel G, value names, pairs per group)``."""
        if by is None:
            groups, names = np.where(self.pair, 0, -1), ("all",)
        else:
            label = resolve_label(self.routing, by)
            codes = label.codes[self.di] if label.kind == "document" else label.codes
            groups, names = np.where(self.pair, codes[:-1], -1).astype(np.int64), label.values
        pairs = np.bincount(groups[groups >= 0], minlength=len(names))
        return np.where(groups >= 0, groups, len(names)), names, pairs

    @staticmethod
    def _sums(groups: np.ndarray, G: int, hits: np.ndarray, valid: np.ndarray, levels: int = 1) -> np.ndarray:
        """Mean of ``hits / levels`` over valid pairs, per group; ``hits`` integers in ``[0, levels]``, ``groups``
        in ``[0, G]`` (``G`` = not a pair). One integer bincount: no float weights, no gathers."""
        key = groups * (levels + 1) + hits
        if not valid.all():
            key = np.where(valid, key, G * (levels + 1))
        counts = np.bincount(key, minlength=(G + 1) * (levels + 1))[:G * (levels + 1)].reshape(G, levels + 1)
        n = counts.sum(1)
        total = counts @ np.arange(levels + 1, dtype=np.float64) / levels
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / n

    def _hits(self, view: Any, top1: np.ndarray, top2: np.ndarray | None,
              masks: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray] | None]:
        """Per pair (t, t+1): ``(hit, counted)`` for each rate; slots that are not routed experts do not count."""
        a0, b0 = top1[:-1], top1[1:]
        ok1 = (a0 >= 0) & (b0 >= 0) if view.dropped else np.ones(len(a0), bool)
        out: dict[str, tuple[np.ndarray, np.ndarray] | None] = {"first_choice": (a0 == b0, ok1)}
        if top2 is not None:
            a1, b1 = top2[:-1], top2[1:]
            hit = (a0 == b0) | (a0 == b1) | (a1 == b0) | (a1 == b1)
            ok2 = ok1 & (a1 >= 0) & (b1 >= 0) if view.dropped else ok1
            out["first_or_second"] = (hit, ok2)
        else:
            out["first_or_second"] = None
        both = view.ws.get("pair_and", masks[:, 1:].shape, np.uint64)
        np.bitwise_and(masks[:, :-1], masks[:, 1:], out=both)
        inter = _popcount(both[0]).astype(np.int64)
        for w in range(1, len(both)):
            inter += _popcount(both[w])
        okk = (masks[:, :-1] != 0).any(0) & (masks[:, 1:] != 0).any(0) if view.dropped else ok1
        out["any_overlap"] = (inter > 0, okk)
        out["topk_overlap"] = (inter, okk, view.k)  # |A ∩ B| in [0, k], averaged as |A ∩ B| / k
        return out

    def _rates(self, hits: dict, groups: np.ndarray, G: int, joint: tuple[np.ndarray, int] | None) -> dict[str, np.ndarray]:
        if joint is not None:
            return self._joint_rates(joint, groups, G, hits["first_or_second"] is not None)
        return {name: np.full(G, np.nan) if h is None else self._sums(groups, G, *h) for name, h in hits.items()}

    @staticmethod
    def _joint(hits: dict, k: int, dropped: bool) -> tuple[np.ndarray, int] | None:
        """Every rate of a pair in one small integer, ``first_choice + 2 first_or_second + 4 |A ∩ B|`` (when every
        pair counts for every rate: nothing dropped), so that one bincount per grouping gives all four rates."""
        if dropped:
            return None
        code = hits["topk_overlap"][0] * 4 + hits["first_choice"][0]
        if hits["first_or_second"] is not None:
            code = code + 2 * hits["first_or_second"][0]
        return code, 4 * (k + 1)

    @staticmethod
    def _joint_rates(joint: tuple[np.ndarray, int], groups: np.ndarray, G: int, top2: bool) -> dict[str, np.ndarray]:
        code, D = joint
        k = D // 4 - 1
        counts = np.bincount(groups * D + code, minlength=(G + 1) * D)[:G * D].reshape(G, k + 1, 2, 2)
        n = counts.sum((1, 2, 3)).astype(np.float64)
        overlap = counts.sum((2, 3))  # [G, |A ∩ B|]
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"first_choice": counts[..., 1].sum((1, 2)) / n,
                    "first_or_second": counts[:, :, 1, :].sum((1, 2)) / n if top2 else np.full(G, np.nan),
                    "any_overlap": overlap[:, 1:].sum(1) / n,
                    "topk_overlap": (overlap @ np.arange(k + 1, dtype=np.float64)) / k / n}

    def _all_rows(self, view: Any) -> list[list[dict[str, Any]]]:
        E, k = self.E, view.k
        top2 = view.slots[1] if k >= 2 else None
        hits = self._hits(view, view.top1, top2, view.masks)
        p = self.perm
        shuffled_masks = view.ws.get("shuffled_masks", view.masks.shape, np.uint64)
        np.take(view.masks, p, axis=1, out=shuffled_masks)
        shuffled_hits = self._hits(view, view.top1[p], top2[p] if top2 is not None else None, shuffled_masks)
        joint, shuffled_joint = self._joint(hits, k, view.dropped), self._joint(shuffled_hits, k, view.dropped)
        out = []
        for index, (groups, names, pairs) in enumerate(self.groupings):
            by = self.by if index == 0 else self.labels[index - 1]
            stats = self._rates(hits, groups, len(names), joint)
            shuffled = self._rates(shuffled_hits, groups, len(names), shuffled_joint)
            rows = []
            for g in range(len(names)):
                if pairs[g] == 0:
                    continue
                row: dict[str, Any] = {"layer": view.layer}
                if by is not None:
                    row[by if index == 0 else "value"] = names[g]
                row["pairs"] = int(pairs[g])
                for name in _RATES:
                    row[name] = float(stats[name][g])
                row.update(baseline_first_choice=1.0 / E,
                           baseline_first_or_second=first_or_second_baseline(E) if k >= 2 else float("nan"),
                           baseline_any_overlap=any_overlap_baseline(E, k), baseline_topk_overlap=k / E)
                for name in _RATES:
                    row[f"shuffled_{name}"] = float(shuffled[name][g])
                rows.append(row)
            out.append(rows)
        return out

    def rate_rows(self, view: Any) -> list[dict[str, Any]]:
        """The layer's rows per value of ``by`` (one row without it)."""
        return self._all_rows(view)[0]

    def layer_rows(self, view: Any) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """``(rows per value of by, {label: rows with a "value" column})`` from one computation of the hits."""
        parts = self._all_rows(view)
        return parts[0], dict(zip(self.labels, parts[1:]))

    def reuse_row(self, view: Any) -> dict[str, Any]:
        top1 = view.top1
        gaps, n = _gaps(top1, self.di, self.pos)
        sg, sn = _gaps(top1[self.perm], self.di, self.pos)
        row: dict[str, Any] = {"layer": view.layer, "tokens": n, **_gap_row(gaps, n, "")}
        row["p90"] = _quantile(gaps, 0.9)
        for d in (1, 4, 16):
            row[f"within_{d}"] = float((gaps <= d).sum() / n) if n else float("nan")
        row["baseline_mean"] = float(self.E)
        row.update(_gap_row(sg, sn, "shuffled_"))
        row["shuffled_within_1"] = float((sg <= 1).sum() / sn) if sn else float("nan")
        return row


_RATES = ("first_choice", "first_or_second", "any_overlap", "topk_overlap")


def repeat_rates(routing: Any, layers: Iterable[int] | None = None, by: str | None = None, seed: int = 0):
    """One row per layer (per label value with ``by``): Mixtral Table 5 rates, uniform and shuffled baselines."""
    import polars as pl

    temporal = Temporal(routing, by, seed)
    rows = [row for view in layer_views(routing, layers) for row in temporal.rate_rows(view)]
    return pl.DataFrame(rows) if rows else pl.DataFrame()


def _gaps(e0: np.ndarray, di: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, int]:
    """Gaps between consecutive top-1 uses of an expert within documents; and the tokens considered."""
    order = np.argsort(e0, kind="stable")  # tokens are in (document, position) order: stays so per expert
    es, ds, ps = e0[order], di[order], pos[order]
    same = (es[1:] == es[:-1]) & (ds[1:] == ds[:-1]) & (es[1:] >= 0)
    return (ps[1:][same] - ps[:-1][same]).astype(np.int64), int((e0 >= 0).sum())


def _quantile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, 100 q)`` (linear interpolation) for non-negative ints, from a histogram."""
    if not len(values):
        return float("nan")
    cum = np.cumsum(np.bincount(values))
    rank = q * (len(values) - 1)
    lo, hi = int(np.floor(rank)), int(np.ceil(rank))
    a, b = int(np.searchsorted(cum, lo, side="right")), int(np.searchsorted(cum, hi, side="right"))
    return float(a + (rank - lo) * (b - a))


def _gap_row(gaps: np.ndarray, n: int, prefix: str) -> dict[str, float]:
    if not len(gaps):
        return {f"{prefix}reused": 0.0, f"{prefix}mean": float("nan"), f"{prefix}median": float("nan")}
    return {f"{prefix}reused": len(gaps) / n if n else float("nan"), f"{prefix}mean": float(gaps.mean()),
            f"{prefix}median": _quantile(gaps, 0.5)}


def reuse_distance(routing: Any, layers: Iterable[int] | None = None, seed: int = 0):
    """One row per layer: top-1 reuse gaps (fraction reused, mean, median, p90, within 1/4/16), baselines."""
    import polars as pl

    temporal = Temporal(routing, None, seed)
    rows = [temporal.reuse_row(view) for view in layer_views(routing, layers)]
    return pl.DataFrame(rows) if rows else pl.DataFrame()
