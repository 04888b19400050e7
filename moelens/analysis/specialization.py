"""Specialization of experts by a label, with a bootstrap over documents and a significance rule.

For a label (domain, language, source, a ``meta`` key, position bucket, token id) at a layer, with
``N(e, v)`` = tokens of value ``v`` that have expert ``e`` among their top-k slots:

* share ``N(e, v) / N(v)`` - OLMoE's domain specialization (Eq. 7); sums to ``k`` over experts,
  uniform baseline ``k / E``;
* overall share ``N(e) / N`` over every labelled token, and lift ``share / overall share``
  (1 = no preference; uniform routing gives 1);
* interval: percentile bootstrap (``confidence``, default 95 %) resampling **documents** with
  replacement, ``bootstrap`` replicates: per-document count matrices ``C[doc, value, expert]``
  times a ``[B, docs]`` weight matrix. Document labels are resampled within each value
  (stratified: the documents per value are the design); position and token ids resample all
  documents together (every document has early positions);
* test: ``z = log(lift') / se0`` with ``lift'`` the lift of counts plus 0.5; ``se0^2`` is the
  bootstrap variance of ``log(lift')`` with its counting part ``1/N(e, v)`` replaced by the value
  under "lift = 1", ``1/expected`` (a high count has a smaller relative spread than the null one,
  which made small noisy cells look significant); one-sided p-value; Benjamini-Hochberg
  q-values over every tested (layer, value, expert) of the label;
* significant (reported as specialization) when ``q <= alpha`` (0.01) and ``ci_low > 1`` and
  ``lift >= min_lift`` (1.25) and the cell has support: ``N(e, v) >= min_count``, share
  ``>= min_share_ratio * k/E`` and the expert's load at the layer ``>= min_utilization`` of a
  fair share (dead and near-dead experts reach huge lifts on a handful of tokens: they are never
  specialists). A value is tested only with at least ``min_tokens`` tokens in ``min_docs``
  documents (with fewer documents the bootstrap cannot see between-document variation);
* ``state``: ``"significant"``, ``"not_significant"`` (tested; ``supported`` says whether the
  support floors held) or ``"untested"``, with ``untested_reason`` ("3 documents < 5 needed");
* rankings order cells by ``ci_low`` (the lower bound of the lift's interval), then lift: a large
  lift measured on few tokens has a wide interval and ranks below a well-supported one;
* ``top1_count`` / ``top1_share``: the same share counting only the router's first slot (OLMoE's
  top-1 domain specialization; sums to 1 over experts).

Normalized mutual information between expert and label per layer:
``NMI = I(E; V) / ((H(E) + H(V)) / 2)`` over top-k assignments; baselines: the plug-in bias under
independence, ``(V-1)(E-k) / (2 A)`` nats for ``A`` assignments, normalised the same way, and,
for document labels, the NMI after shuffling the label across documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from moelens.analysis._common import bh_qvalues, entropy, layer_views, normal_sf
from moelens.analysis.labels import Label, resolve_label
from moelens.analysis.options import SpecializationOptions
from moelens.analysis.routing import doc_index

__all__ = ["specialization_tests", "label_nmi", "analyse_labels", "LabelAnalysis", "SpecializationRun",
           "resample_weights", "rank_cells", "STATES"]

STATES = ("significant", "not_significant", "untested")


@dataclass(frozen=True)
class LabelAnalysis:
    label: str
    kind: str
    tests: Any  # polars frame, one row per (layer, value, expert) of the tested values
    nmi: Any  # polars frame, one row per layer


def resample_weights(units: int, replicates: int, seed: int) -> np.ndarray:
    """``[B, U]`` float32: how often each unit appears in each bootstrap resample (rows sum to U)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, units, size=(replicates, units))
    flat = (np.arange(replicates)[:, None] * units + draws).ravel()
    return np.bincount(flat, minlength=replicates * units).reshape(replicates, units).astype(np.float32)


def _quantiles(samples: np.ndarray, qs: tuple[float, float]) -> list[np.ndarray]:
    """Linear-interpolated quantiles along axis 0 ignoring NaN (fast: one sort)."""
    s = np.sort(samples, axis=0)
    n_ok = (~np.isnan(samples)).sum(axis=0)
    out = []
    for q in qs:
        pos = q * np.maximum(n_ok - 1, 0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(n_ok - 1, 0))
        a = np.take_along_axis(s, lo[None], axis=0)[0]
        b = np.take_along_axis(s, hi[None], axis=0)[0]
        out.append(np.where(n_ok > 0, a + (pos - lo) * (b - a), np.nan))
    return out


@dataclass
class _Prepared:
    label: Label
    V: int  # tested values (codes 0..V-1); code V pools the rest
    doc_codes: np.ndarray | None  # [U] value per unit (document path), else None
    cell: np.ndarray | None  # [T] unit * (V+1) + code, sentinel U * (V+1) (token path), else None
    parts: list = field(default_factory=list)
    nmis: list = field(default_factory=list)
    groups: Any = None  # document path: (units sorted by value, value boundaries, W with columns in that order)


class SpecializationRun:
    """Accumulates the specialization tests of several labels one layer at a time (see module docstring).

    Token labels (position, token id): per layer one ``bincount`` gives ``C[unit, value, expert]``
    and one matrix product with the ``[B, units]`` resampling weights gives every replicate;
    units (documents) are resampled together. Document labels: documents are resampled **within
    each value** (a stratified bootstrap: the number of documents per value is the design, not a
    random quantity), from the per-document counts that the position label already produced.
    """

    def __init__(self, routing: Any, labels: Iterable[str | Label], options: SpecializationOptions) -> None:
        self.routing, self.options = routing, options
        self.E = routing.num_experts
        di = doc_index(routing)
        D = routing.documents.height
        self.units_are_docs = D <= options.max_units
        self.U = D if self.units_are_docs else options.max_units
        unit_of_doc = np.arange(D) if self.units_are_docs else (np.arange(D) * self.U // max(D, 1))
        self.unit = unit_of_doc[di].astype(np.int64)
        rng = np.random.default_rng(options.seed)
        self.W = resample_weights(self.U, options.bootstrap, options.seed)
        self.labels: list[_Prepared] = []
        for lab in labels:
            lab = lab if isinstance(lab, Label) else resolve_label(routing, lab)
            V = min(len(lab.values), options.max_values)
            codes = np.where(lab.codes >= V, V, lab.codes).astype(np.int64)
            if lab.kind == "document":
                self.labels.append(self._document_label(lab, V, codes, di, rng))
                continue
            cell = np.where(codes >= 0, self.unit * (V + 1) + codes, self.U * (V + 1))
            self.labels.append(_Prepared(lab, V, None, cell))
        # a token label covering every token also yields the per-document counts: do it first
        self.order = sorted(range(len(self.labels)), key=lambda j: not (
            self.labels[j].cell is not None and bool((self.labels[j].cell < self.U * (self.labels[j].V + 1)).all())))
        self._token_n: dict[int, np.ndarray] = {}

    def _document_label(self, lab: Label, V: int, codes: np.ndarray, di: np.ndarray, rng) -> _Prepared:
        """Units sorted by value (documents, or value-pure blocks of documents) and stratified weights."""
        B, max_units = self.options.bootstrap, self.options.max_units
        labelled = np.flatnonzero(codes >= 0)
        order = labelled[np.argsort(codes[labelled], kind="stable")]  # documents in value order
        per_value = np.bincount(codes[labelled], minlength=V + 1)
        if self.units_are_docs:
            sizes, tok_unit = per_value, None
        else:  # pool consecutive documents of one value into blocks: at most ~max_units units
            block = -(-len(order) // max_units)
            sizes = -(-per_value // block)
            starts = np.r_[0, np.cumsum(sizes)[:-1]]
            rank = np.arange(len(order)) - np.repeat(np.r_[0, np.cumsum(per_value)[:-1]], per_value)
            unit_of_doc = np.full(len(codes), -1, np.int64)
            unit_of_doc[order] = np.repeat(starts, per_value) + rank // block
            U = int(sizes.sum())
            tok_unit = np.where(unit_of_doc[di] >= 0, unit_of_doc[di], U)
        bounds = np.r_[0, np.cumsum(sizes)]
        n_units = int(bounds[-1])
        # replicate b draws, for each unit slot of value v, a unit of value v uniformly at random
        start = np.repeat(bounds[:-1], sizes)
        size = np.repeat(sizes, sizes)
        draws = start[None, :] + (rng.random((B, n_units)) * size[None, :]).astype(np.int64)
        flat = (np.arange(B)[:, None] * n_units + draws).ravel()
        W = np.bincount(flat, minlength=B * n_units).reshape(B, n_units).astype(np.float32)
        prep = _Prepared(lab, V, codes, None)
        prep.groups = (order, bounds, W, tok_unit, per_value)
        return prep

    def _cell_counts(self, view: Any, cell: np.ndarray, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``C[cells, E]`` routes, ``C1[cells, E]`` first-slot routes and ``n[cells]`` recorded tokens per cell
        (sentinel cell ``cells`` dropped)."""
        E = self.E
        base = view.ws.get("cellE", (view.T,), np.int64)
        np.multiply(cell, E, out=base)
        key = view.keys(base, cells * E)
        C = np.bincount(key.reshape(-1), minlength=(cells + 1) * E)[:cells * E].reshape(cells, E)
        key1 = view.keys(base, cells * E, slot=0)
        C1 = np.bincount(key1, minlength=(cells + 1) * E)[:cells * E].reshape(cells, E)
        if view.dropped:
            n = np.bincount(cell[view.recorded], minlength=cells + 1)[:cells]
        else:
            n = self._token_n.get(id(cell))
            if n is None:
                n = self._token_n[id(cell)] = np.bincount(cell, minlength=cells + 1)[:cells]
        return C, C1, n

    def add_layer(self, view: Any) -> None:
        U, E, B = self.U, self.E, self.options.bootstrap
        doc_C = doc_C1 = doc_n = None
        for j in self.order:
            prep = self.labels[j]
            V1 = prep.V + 1
            permuted = float("nan")
            if prep.cell is not None:
                C, C1, n = self._cell_counts(view, prep.cell, U * V1)
                C, C1, n = C.reshape(U, V1, E), C1.reshape(U, V1, E), n.reshape(U, V1)
                N, Nv = C.sum(0).astype(np.float64), n.sum(0).astype(np.float64)
                N1 = C1.sum(0)
                R = (self.W @ C.reshape(U, -1).astype(np.float32)).reshape(B, V1, E)
                Rn = self.W @ n.astype(np.float32)
                docs_v = (n > 0).sum(0)
                if doc_C is None and prep.label.kind == "token" and j == self.order[0]:
                    doc_C, doc_C1, doc_n = C.sum(1), C1.sum(1), n.sum(1)
            else:
                order, bounds, W, tok_unit, per_value = prep.groups
                if tok_unit is None:  # units are documents, in value order
                    if doc_C is None:
                        doc_C, doc_C1, doc_n = self._cell_counts(view, self.unit, U)
                    Ci, C1i, ni = doc_C[order], doc_C1[order], doc_n[order]
                else:
                    Ci, C1i, ni = self._cell_counts(view, tok_unit, W.shape[1])
                Cu, nu = Ci.astype(np.float32), ni.astype(np.float32)
                N, Nv, N1 = np.zeros((V1, E)), np.zeros(V1), np.zeros((V1, E), np.int64)
                R, Rn = np.zeros((B, V1, E), np.float32), np.zeros((B, V1), np.float32)
                docs_v = per_value.astype(np.float64) if tok_unit is not None else np.zeros(V1)
                shuffled = np.random.default_rng(self.options.seed + 1).permutation(len(nu))
                Np = np.zeros((V1, E))
                for v in range(V1):
                    a, b = bounds[v], bounds[v + 1]
                    N[v], Nv[v], N1[v] = Ci[a:b].sum(0), ni[a:b].sum(), C1i[a:b].sum(0)
                    R[:, v], Rn[:, v] = W[:, a:b] @ Cu[a:b], W[:, a:b] @ nu[a:b]
                    Np[v] = Ci[shuffled[a:b]].sum(0)
                    if tok_unit is None:
                        docs_v[v] = (ni[a:b] > 0).sum()
                permuted = _nmi(Np)
            self._record(prep, view, np.asarray(N, np.float64), np.asarray(Nv, np.float64), R.astype(np.float64),
                         Rn.astype(np.float64), docs_v, permuted, np.asarray(N1, np.int64))

    def _record(self, prep: _Prepared, view: Any, N, Nv, R, Rn, docs_v, permuted: float, N1) -> None:
        options, E, V = self.options, self.E, prep.V
        share, overall, lift, lo, hi, se, p = _stats(N, Nv, R, Rn, options)
        value_ok = ((Nv >= options.min_tokens) & (docs_v >= options.min_docs))[:V]
        testable = value_ok[:, None] & (overall > 0)[None, :]
        testable &= np.isfinite(p[:V])
        # why a cell is untested: 1 too few documents, 2 too few tokens, 3 expert never routed, 4 no variation
        reason = np.where(~value_ok[:, None] & (docs_v[:V] < options.min_docs)[:, None], 1,
                          np.where(~value_ok[:, None], 2, np.where((overall <= 0)[None, :], 3, 4)))
        reason = np.where(testable, 0, reason).astype(np.int8)
        counts = view.counts.astype(np.float64)
        fair = counts.sum() / E if E else 0.0
        utilization = counts / fair if fair > 0 else np.zeros(E)
        k_eff = view.k_eff
        with np.errstate(divide="ignore", invalid="ignore"):
            top1_share = N1[:V] / Nv[:V, None]
        prep.parts.append({
            "layer": np.full(V * E, view.layer, np.int32), "value_code": np.repeat(np.arange(V), E).astype(np.int32),
            "expert": np.tile(np.arange(E, dtype=np.int32), V),
            "count": N[:V].ravel().astype(np.int64), "tokens": np.repeat(Nv[:V], E).astype(np.int64),
            "docs": np.repeat(docs_v[:V], E).astype(np.int64),
            "share": share[:V].ravel(), "overall_share": np.tile(overall, V), "baseline_share": np.full(V * E, k_eff / E),
            "lift": lift[:V].ravel(), "ci_low": lo[:V].ravel(), "ci_high": hi[:V].ravel(),
            "se_log_lift": se[:V].ravel(), "p_value": np.where(testable, p[:V], np.nan).ravel(),
            "tested": testable.ravel(), "untested_code": reason.ravel(),
            "top1_count": N1[:V].ravel().astype(np.int64), "top1_share": top1_share.ravel(),
            "utilization": np.tile(utilization, V)})
        A = float(N.sum())
        Vn = int((N.sum(1) > 0).sum())
        hv, he = float(entropy(N.sum(1))), float(entropy(N.sum(0)))
        bias = (Vn - 1) * max(E - k_eff, 0.0) / (2 * A) if A > 0 else float("nan")
        prep.nmis.append({"layer": view.layer, "nmi": _nmi(N), "nmi_baseline": bias / ((hv + he) / 2) if hv + he > 0 else 0.0,
                          "nmi_permuted": permuted, "values": Vn, "assignments": int(A)})

    def finish(self) -> list[LabelAnalysis]:
        import polars as pl

        out = []
        for prep in self.labels:
            lab, V = prep.label, prep.V
            frame = pl.concat([pl.DataFrame(p) for p in prep.parts]) if prep.parts else _empty_tests()
            q = bh_qvalues(frame["p_value"].to_numpy()) if frame.height else np.zeros(0)
            names = np.array(lab.values[:V] if V else ["-"], dtype=object)
            o = self.options
            frame = frame.with_columns(pl.Series("q_value", q)).with_columns(
                supported=((pl.col("count") >= o.min_count) & (pl.col("utilization") >= o.min_utilization)
                           & (pl.col("share") >= o.min_share_ratio * pl.col("baseline_share"))).fill_null(False),
                value=pl.Series(names[frame["value_code"].to_numpy()] if frame.height else [], dtype=pl.String))
            frame = frame.with_columns(
                significant=(pl.col("tested") & (pl.col("q_value") <= o.alpha) & (pl.col("ci_low") > 1.0)
                             & (pl.col("lift") >= o.min_lift) & pl.col("supported")).fill_null(False))
            frame = frame.with_columns(
                state=pl.when(pl.col("significant")).then(pl.lit("significant"))
                .when(pl.col("tested")).then(pl.lit("not_significant")).otherwise(pl.lit("untested")),
                untested_reason=_untested_reason(o))
            frame = frame.select("layer", "value", "expert",
                                 *[c for c in frame.columns if c not in ("layer", "value", "expert", "value_code",
                                                                          "untested_code")])
            frame = frame.with_columns(pl.lit(lab.name).alias("label")).select("label", *frame.columns)
            nmi = pl.DataFrame(prep.nmis) if prep.nmis else pl.DataFrame({"layer": [], "nmi": []})
            out.append(LabelAnalysis(lab.name, lab.kind, frame, nmi.with_columns(pl.lit(lab.name).alias("label"))))
        return out


def _untested_reason(o: SpecializationOptions):
    """The ``untested_reason`` column: what the cell has and what it would need (null when tested), in the
    words of the dashboard (:mod:`moelens.viz.states`): ``"3 documents < 5 needed, 12 tokens < 20 needed"``."""
    import polars as pl

    def plural(column: str, noun: str):
        return pl.when(pl.col(column) == 1).then(pl.lit(noun)).otherwise(pl.lit(noun + "s"))

    docs = pl.format("{} {} < {} needed", pl.col("docs"), plural("docs", "document"), pl.lit(o.min_docs))
    tokens = pl.format("{} {} < {} needed", pl.col("tokens"), plural("tokens", "token"), pl.lit(o.min_tokens))
    few_docs, few_tokens = pl.col("docs") < o.min_docs, pl.col("tokens") < o.min_tokens
    code = pl.col("untested_code")
    return (pl.when(code == 0).then(pl.lit(None, dtype=pl.String))
            .when(few_docs & few_tokens).then(pl.format("{}, {}", docs, tokens))
            .when(few_docs).then(docs).when(few_tokens).then(tokens)
            .when(code == 3).then(pl.lit("expert never routed at this layer"))
            .otherwise(pl.lit("no test statistic (the bootstrap was degenerate)")))


def rank_cells(tests: Any) -> Any:
    """Cells in ranking order: the lower bound of the lift's interval first, then the lift (support-aware)."""
    import polars as pl

    return tests.sort([pl.col("ci_low").fill_nan(None), pl.col("lift").fill_nan(None)], descending=[True, True],
                      nulls_last=True)


def _stats(N: np.ndarray, Nv: np.ndarray, R: np.ndarray, Rn: np.ndarray, options: SpecializationOptions):
    """Point estimates, percentile interval and z-test p-values for ``N[V1, E]`` and replicates ``R[B, V1, E]``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        Ne, Ntot = N.sum(0), Nv.sum()
        share = N / Nv[:, None]
        overall = Ne / Ntot
        lift = share / overall[None, :]
        Re, Rtot = R.sum(1), Rn.sum(1)
        lift_b = (R / Rn[:, :, None]) / (Re / Rtot[:, None])[:, None, :]
        tail = (1 - options.confidence) / 2
        ci_low, ci_high = _quantiles(lift_b, (tail, 1 - tail))
        ll = np.log((N + 0.5) / (Nv[:, None] + 0.5)) - np.log((Ne + 0.5) / (Ntot + 0.5))[None, :]
        ll_b = np.log((R + 0.5) / (Rn[:, :, None] + 0.5)) - np.log((Re + 0.5) / (Rtot[:, None] + 0.5))[:, None, :]
        se = np.std(ll_b, axis=0, ddof=1)
        # The bootstrap measures the spread around the observed counts. The counting (Poisson) part of
        # var(log N(e, v)) is 1 / N(e, v), smaller at a high observed count than under "lift = 1",
        # where it is 1 / expected: swap one for the other and keep the rest (between-document
        # variation). Without this, small cells that happen to be high look significant.
        expected = Nv[:, None] * overall[None, :]
        extra = np.maximum(se ** 2 - 1.0 / (N + 0.5), 0.0)
        se_null = np.sqrt(extra + 1.0 / (np.minimum(N, expected) + 0.5))
        z = np.where(se_null > 0, ll / se_null, np.nan)
    return share, overall, lift, ci_low, ci_high, se, normal_sf(z)


def _nmi(N: np.ndarray) -> float:
    total = N.sum()
    if total <= 0:
        return float("nan")
    hv, he, hj = float(entropy(N.sum(1))), float(entropy(N.sum(0))), float(entropy(N.ravel()))
    mi = max(hv + he - hj, 0.0)
    return mi / ((hv + he) / 2) if hv + he > 0 else 0.0


def analyse_labels(routing: Any, labels: Iterable[str | Label], *, layers: Iterable[int] | None = None,
                   options: SpecializationOptions = SpecializationOptions()) -> list[LabelAnalysis]:
    """Specialization tests and NMI for several labels, sharing the per-layer count work."""
    run = SpecializationRun(routing, labels, options)
    for view in layer_views(routing, layers):
        run.add_layer(view)
    return run.finish()


def _empty_tests():
    import polars as pl

    schema = {"layer": pl.Int32, "value_code": pl.Int32, "expert": pl.Int32, "count": pl.Int64,
              "tokens": pl.Int64, "docs": pl.Int64, "share": pl.Float64, "overall_share": pl.Float64,
              "baseline_share": pl.Float64, "lift": pl.Float64, "ci_low": pl.Float64,
              "ci_high": pl.Float64, "se_log_lift": pl.Float64, "p_value": pl.Float64,
              "tested": pl.Boolean, "untested_code": pl.Int8, "top1_count": pl.Int64, "top1_share": pl.Float64,
              "utilization": pl.Float64}
    return pl.DataFrame({name: [] for name in schema}, schema=schema)


def specialization_tests(routing: Any, label: str | Label, *, layers: Iterable[int] | None = None,
                   options: SpecializationOptions = SpecializationOptions()):
    """One row per (layer, value, expert): share, lift, bootstrap interval, q-value, ``significant``."""
    return analyse_labels(routing, [label], layers=layers, options=options)[0].tests


def label_nmi(routing: Any, label: str | Label, *, layers: Iterable[int] | None = None,
              options: SpecializationOptions = SpecializationOptions()):
    """One row per layer: NMI between expert and label, with its independence and permutation baselines."""
    return analyse_labels(routing, [label], layers=layers, options=options)[0].nmi

