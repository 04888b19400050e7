"""``moelens.open(db)`` for notebooks: the analysis facade plus its Altair charts.

:class:`Trace` is :class:`moelens.analysis.facade.Trace` (every analysis as a method returning
polars frames) with one ``*_chart`` method per visualization of :mod:`moelens.viz.charts`. It
lives in the presentation layer so that the analysis layer never imports it.

    >>> t = moelens.open("runs.duckdb")                         # doctest: +SKIP
    >>> t.load_chart("moelens-mini:eval")                       # layer x expert utilization
    >>> t.specialization_chart("language", "moelens-mini:eval")  # lift, non-significant muted
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from moelens.analysis.facade import Trace as _AnalysisTrace
from moelens.viz import charts

__all__ = ["open", "Trace"]


def open(db: str | os.PathLike) -> "Trace":  # noqa: A001 - the public name is moelens.open
    """Open a trace database for analysis (read-only): frames and charts."""
    return Trace(db)


class Trace(_AnalysisTrace):
    """A trace database opened for analysis, with chart methods (need the ``viz`` extra: altair)."""

    def load_chart(self, run: str | None = None, layers: Iterable[int] | None = None) -> Any:
        """Layer x expert heatmap of utilization (load / fair load 1/E); dead experts outlined."""
        info = self.store.require_run(run)
        return charts.load_heatmap(self.expert_load(info.run_id, layers), num_experts=info.num_experts,
                                   title=f"load per expert - {info.run_id}")

    def specialization_chart(self, label: str, run: str | None = None, layer: int | None = None) -> Any:
        """Expert x value heatmap of lift for ``label``; non-significant cells muted."""
        return charts.specialization_heatmap(self.specialization(label, run), layer=layer)

    def balance_chart(self, runs: Iterable[str] | None = None) -> Any:
        """Effective-expert fraction and max/mean load per layer, one line per run."""
        return charts.layer_balance(self.load_runs(runs))

    def nmi_chart(self, labels: Iterable[str], run: str | None = None) -> Any:
        """Normalized mutual information between expert and each label, per layer."""
        import polars as pl

        frames = [self.nmi(label, run).with_columns(pl.lit(label).alias("label")) for label in labels]
        return charts.nmi_chart(pl.concat(frames, how="diagonal_relaxed"))

    def comparison_chart(self, run_a: str, run_b: str) -> Any:
        """Router saturation and top-1 agreement per layer between two runs of the same tokens."""
        return charts.comparison_chart(self.compare(run_a, run_b), pair=f"{run_a} → {run_b}")

    def serving_chart(self, kind: str = "cache", runs: Iterable[str] | str | None = None, **options: Any) -> Any:
        """A serving what-if chart (``kind``: balance, drops, cache, coverage, prefetch) of one run or
        several side by side; ``options`` are :class:`~moelens.analysis.serving.ServingOptions` fields.
        Reports are computed once per (run, options) and kept."""
        from moelens.viz import serving_charts

        names = [runs] if isinstance(runs, str) or runs is None else list(runs)
        cache = self.__dict__.setdefault("_serving_reports", {})
        reports = []
        for name in names:
            key = (self.store.require_run(name).run_id, tuple(sorted((k, repr(v)) for k, v in options.items())))
            if key not in cache:
                cache[key] = self.serving(name, **options)
            reports.append(cache[key])
        kinds = {"balance": serving_charts.balance_chart, "drops": serving_charts.drops_chart,
                 "cache": serving_charts.cache_chart, "coverage": serving_charts.coverage_chart,
                 "prefetch": serving_charts.prefetch_chart}
        if kind not in kinds:
            from moelens.errors import ConfigError

            raise ConfigError(f"serving chart kind must be one of {', '.join(kinds)}; got {kind!r}.")
        return kinds[kind](reports)

    def load_shift_chart(self, run_a: str, run_b: str) -> Any:
        """Layer x expert change in load share from ``run_a`` to ``run_b``."""
        return charts.load_shift_heatmap(self.load_shift(run_a, run_b))
