"""``moelens.open(db)``: one object for notebooks, every analysis as a method returning polars frames.

:class:`Trace` holds a read-only connection to a trace database and caches each run's routing
after its first use, so asking several questions of one run reads it once. Methods take
``run=None`` (the only run of the database, or an error listing the runs) and ``layers=None``
(every traced MoE layer). ``sql()`` passes a query straight to DuckDB.

``moelens.open`` returns the subclass :class:`moelens.viz.notebook.Trace`, which adds one chart
method per visualization; the analysis layer itself never imports the presentation layer.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from moelens.analysis import coactivation as _coactivation
from moelens.analysis import compare as _compare
from moelens.analysis import crosslayer as _crosslayer
from moelens.analysis import labels as _labels
from moelens.analysis import load as _load
from moelens.analysis import position as _position
from moelens.analysis import specialization as _spec
from moelens.analysis import temporal as _temporal
from moelens.analysis import vocabulary as _vocabulary
from moelens.analysis.options import LoadOptions, ReportOptions, SpecializationOptions, VocabularyOptions

__all__ = ["open", "Trace"]


def open(db: str | os.PathLike) -> "Trace":  # noqa: A001 - the public name is moelens.open
    """Open a trace database for analysis (read-only)."""
    return Trace(db)


class Trace:
    """A trace database opened for analysis. Use as a context manager or call :meth:`close`."""

    def __init__(self, db: Any) -> None:
        from moelens.store import Store

        self.store = db if isinstance(db, Store) else Store(db, read_only=True)
        self.path = self.store.path
        self._cache: dict[tuple[str, tuple[int, ...] | None], Any] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self._cache.clear()
        self.store.close()

    def __enter__(self) -> "Trace":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<moelens.Trace {self.path} runs={self.store.run_ids()}>"

    # -- data ----------------------------------------------------------------------------------
    def sql(self, query: str, params: Any = None):
        """Run SQL against the public schema (runs, documents, tokens, routes, ...) and return polars."""
        import polars as pl

        from moelens.store.db import fetch_arrow

        cursor = self.store.con.cursor()  # its own result state: the store may hold a half-read one
        try:
            return pl.from_arrow(fetch_arrow(cursor, query, params))
        finally:
            cursor.close()

    def runs(self):
        """One row per run: id, model, family, experts, k, scoring, status, documents and tokens."""
        return self.sql("""SELECT r.run_id, r.model, r.family, r.num_experts, r.top_k, r.scoring, r.status,
                r.dataset, r.created_at, count(d.doc_id) AS documents, coalesce(sum(d.n_tokens), 0) AS tokens
            FROM runs r LEFT JOIN documents d USING (run_id) GROUP BY ALL ORDER BY r.created_at, r.run_id""")

    def routing(self, run: str | None = None, layers: Iterable[int] | None = None):
        """The run's :class:`~moelens.store.arrays.RunRouting` (expert ids; cached)."""
        from moelens.analysis.routing import load_run

        run_id = self.store.require_run(run).run_id
        key = (run_id, None if layers is None else tuple(sorted({int(x) for x in layers})))
        if key in self._cache:
            return self._cache[key]
        if (run_id, None) in self._cache:
            return self._cache[(run_id, None)]
        routing = load_run(self.store, run_id, layers=key[1])
        self._cache[key] = routing
        return routing

    def labels(self, run: str | None = None) -> dict[str, str]:
        """``{label: "document" | "token"}`` for the labels this run can be split by."""
        return _labels.available_labels(self.routing(run))

    # -- metrics -------------------------------------------------------------------------------
    def load(self, run: str | None = None, layers: Iterable[int] | None = None, options: LoadOptions = LoadOptions()):
        """Per-layer load, imbalance, entropy, dead experts, collapse verdict and EP balancedness."""
        return _load.load_summary(self.routing(run, layers), layers, options)

    def load_runs(self, runs: Iterable[str] | None = None, layers: Iterable[int] | None = None,
                  options: LoadOptions = LoadOptions()):
        """:meth:`load` of several runs (default: every run of the database) in one frame with a ``run``
        column, e.g. a balanced and a collapsed checkpoint side by side."""
        import polars as pl

        names = list(runs) if runs is not None else self.store.run_ids()
        frames = [self.load(name, layers, options).with_columns(pl.lit(name).alias("run")) for name in names]
        if not frames:
            return pl.DataFrame()
        out = pl.concat(frames, how="diagonal_relaxed")
        return out.select("run", *[c for c in out.columns if c != "run"])

    def expert_load(self, run: str | None = None, layers: Iterable[int] | None = None,
                    options: LoadOptions = LoadOptions()):
        """Per (layer, expert) count, share, utilization and dead flag."""
        return _load.expert_load(self.routing(run, layers), layers, options)

    def confidence(self, run: str | None = None, layers: Iterable[int] | None = None):
        """Router entropy, margin, z-loss and aux loss per layer (runs traced with ``--logits``)."""
        from moelens.analysis.confidence import confidence_summary

        return confidence_summary(self.store, self.routing(run, layers), layers)

    def specialization(self, label: str, run: str | None = None, layers: Iterable[int] | None = None,
                       options: SpecializationOptions = SpecializationOptions(), significant: bool = False):
        """Share and lift of every (layer, value, expert) of ``label`` with bootstrap intervals and q-values."""
        tests = _spec.specialization_tests(self.routing(run, layers), label, layers=layers, options=options)
        if significant:
            import polars as pl

            tests = tests.filter(pl.col("significant")).sort("lift", descending=True)
        return tests

    def nmi(self, label: str, run: str | None = None, layers: Iterable[int] | None = None,
            options: SpecializationOptions = SpecializationOptions()):
        """Normalized mutual information between expert and ``label`` per layer, with baselines."""
        return _spec.label_nmi(self.routing(run, layers), label, layers=layers, options=options)

    def _require(self, routing: Any, what: str) -> Any:
        """``routing``, or :class:`~moelens.errors.UnavailableError` when its source lacks ``what``."""
        from moelens.analysis.report import unavailable
        from moelens.errors import UnavailableError

        reason = unavailable(routing.config).get(what)
        if reason:
            raise UnavailableError(f"unavailable: {reason} (run {routing.run_id!r}).")
        return routing

    def vocabulary(self, run: str | None = None, layers: Iterable[int] | None = None,
                   options: VocabularyOptions = VocabularyOptions()):
        """OLMoE token specialization per layer (top-1 and top-k) with shuffled and uniform baselines."""
        return _vocabulary.token_specialization(self._require(self.routing(run, layers), "vocabulary"), layers, options)

    def top_tokens(self, run: str | None = None, layers: Iterable[int] | None = None,
                   experts: Iterable[int] | None = None, options: VocabularyOptions = VocabularyOptions()):
        """Each expert's most characteristic tokens (by lift), with their text from the ``tokens`` table."""
        routing = self._require(self.routing(run, layers), "vocabulary")
        top = _vocabulary.expert_top_tokens(routing, layers, experts, options)
        if not top.height:
            return top
        text = self.sql("SELECT token_id::BIGINT AS token_id, any_value(token) AS token FROM tokens "
                        "WHERE run_id = $run AND token_id IN (SELECT unnest($ids::INTEGER[])) GROUP BY token_id",
                        {"run": routing.run_id, "ids": top["token_id"].unique().to_list()})
        return top.join(text, on="token_id", how="left")

    def position(self, run: str | None = None, layers: Iterable[int] | None = None):
        """Routing by position bucket (0, 1, 2-3, 4-7, ...) per layer."""
        return _position.position_profile(self.routing(run, layers), layers)

    def first_token(self, run: str | None = None, layers: Iterable[int] | None = None, top: int = 3):
        """The experts that take the first token of documents, per layer."""
        return _position.first_token_experts(self.routing(run, layers), layers, top)

    def coactivation(self, run: str | None = None, layers: Iterable[int] | None = None, pairs: str = "all"):
        """``N(e_i, e_j) / N(e_i)`` for every ordered expert pair per layer (``pairs="adjacent"``: OLMoE's script)."""
        return _coactivation.coactivation_pairs(self.routing(run, layers), layers, pairs)

    def repeat_rates(self, run: str | None = None, layers: Iterable[int] | None = None, by: str | None = None):
        """Consecutive-token repeat rates (Mixtral Table 5), optionally per value of a label (``by="domain"``)."""
        return _temporal.repeat_rates(self.routing(run, layers), layers, by)

    def reuse_distance(self, run: str | None = None, layers: Iterable[int] | None = None):
        """Gaps between reuses of a top-1 expert within documents, per layer."""
        return _temporal.reuse_distance(self.routing(run, layers), layers)

    def transitions(self, layer_from: int, layer_to: int | None = None, run: str | None = None):
        """Top-1 transition counts and ``p(to | from)`` between two layers (default: the next MoE layer)."""
        return _crosslayer.transitions(self.routing(run), layer_from, layer_to)

    def crosslayer(self, run: str | None = None, layers: Iterable[int] | None = None):
        """Cross-fitted predictability of the next layer's top-1 expert, with baselines and NMI."""
        return _crosslayer.crosslayer_summary(self.routing(run, layers), layers)

    def compare(self, run_a: str, run_b: str, layers: Iterable[int] | None = None,
                labels: Iterable[str] | None = None):
        """Per shared layer: router saturation, top-1 agreement, load TV distance and, per label,
        the mean specialization TV distance (``spec_tv:<label>``)."""
        import polars as pl

        a, b = self.routing(run_a), self.routing(run_b)
        al = _compare.align_tokens(a, b)
        out = _compare.router_saturation(a, b, layers, al)
        shift = _compare.load_shift(a, b, layers, al).group_by("layer").agg(load_tv=pl.col("tv").first())
        out = out.join(shift, on="layer", how="left")
        if labels is None:
            labels = [n for n, kind in _labels.available_labels(a).items() if kind == "document"] + ["position"]
        for label in labels:
            _, summary = _compare.specialization_shift(a, b, label, layers, al)
            if summary.height:
                out = out.join(summary.select("layer", pl.col("mean_tv").alias(f"spec_tv:{label}")), on="layer", how="left")
        return out.sort("layer")

    def load_shift(self, run_a: str, run_b: str, layers: Iterable[int] | None = None):
        """Per (layer, expert): share in each run and the difference."""
        return _compare.load_shift(self.routing(run_a), self.routing(run_b), layers)

    def specialization_shift(self, run_a: str, run_b: str, label: str, layers: Iterable[int] | None = None):
        """Per (layer, value, expert): OLMoE share in each run and the difference."""
        return _compare.specialization_shift(self.routing(run_a), self.routing(run_b), label, layers)[0]

    def serving(self, run: str | None = None, options: Any = None, **overrides: Any):
        """Serving what-ifs (:func:`moelens.analysis.serving.serving_report`): EP placement and balancedness,
        capacity drops, LRU/LFU/Belady expert caches, prefetch accuracy and batch coverage. ``overrides``
        are :class:`~moelens.analysis.serving.ServingOptions` fields, e.g. ``ep=(8, 16)``."""
        from moelens.analysis.serving.options import ServingOptions
        from moelens.analysis.serving.report import serving_report
        from moelens.analysis.routing import load_run

        options = ServingOptions(**{**(options or ServingOptions()).__dict__, **overrides})
        info = self.store.require_run(run)
        if info.config.get("identity", {}).get("mode") == "stats":
            from moelens.analysis.serving.report import serving_stats_report

            return serving_stats_report(self.store, info.run_id, options)
        score = "capacity" in options.sections and info.config.get("source", {}).get("weights", True)
        routing = load_run(self.store, info.run_id, layers=options.layers, weights=bool(score))
        dtype = self.store.con.execute("SELECT dtype FROM runs WHERE run_id = ?", [info.run_id]).fetchone()[0]
        return serving_report(routing, options, dtype=dtype)

    def report(self, run: str | None = None, options: ReportOptions = ReportOptions()):
        """The full report (:class:`~moelens.analysis.report.Report`: ``.data`` JSON, ``.frames`` polars)."""
        from moelens.analysis.report import build_report

        return build_report(self.store, run, options, routing=self.routing(run, options.layers))
