"""Charts of the serving what-ifs: Vega-Lite specs (for the dashboard's Serving view) and Altair charts.

Every ``*_spec`` function reads the rows of :func:`moelens.analysis.serving.serving_view` (one
view, or several with a ``run`` field added: one line or facet per run) and returns a plain
Vega-Lite dict; the matching chart function turns a :class:`~moelens.analysis.serving.ServingReport`
(or a list of them, e.g. a balanced and a collapsed checkpoint) into an Altair chart::

    reports = [t.serving(run) for run in ("moelens-mini", "moelens-mini-collapsed")]
    cache_chart(reports)       # hit rate vs cache size; LRU, LFU and the Belady bound per run
"""

from __future__ import annotations

from typing import Any, Iterable

from moelens.viz.charts import to_altair
from moelens.viz.specs import _top

__all__ = ["balance_spec", "drops_spec", "cache_spec", "coverage_spec", "prefetch_spec", "balance_chart",
           "drops_chart", "cache_chart", "coverage_chart", "prefetch_chart", "view_rows"]

_RUN = {"field": "run", "type": "nominal", "title": "run"}


def view_rows(reports: Any, key: str) -> list[dict[str, Any]]:
    """Rows of ``serving_view(report)[key]`` for one report or several, each tagged with its ``run``."""
    from moelens.analysis.serving.view import serving_view

    items = reports if isinstance(reports, (list, tuple)) else [reports]
    rows = []
    for rep in items:
        view = rep if isinstance(rep, dict) else serving_view(rep)
        rows += [{**row, "run": view["run_id"]} for row in view[key]]
    return rows


def _facet(spec: dict[str, Any], runs: int) -> dict[str, Any]:
    if runs <= 1:
        return spec
    return {"facet": {"column": _RUN}, "spec": spec, "resolve": {"scale": {"y": "shared"}}}


def balance_spec(values: list[dict[str, Any]] | None = None, *, runs: int = 1, title: str | None = None) -> dict:
    """vLLM balancedness (1 = balanced) by EP size, one line per placement series.
    Fields: ``ep``, ``redundant``, ``placement``, ``series``, ``vllm_balancedness``, ``sglang_balancedness``,
    ``trtllm_imbalance`` (``run``)."""
    inner = {"mark": {"type": "line", "point": True},
             "width": 220,
             "encoding": {"x": {"field": "ep", "type": "ordinal", "title": "EP size (GPUs)", "axis": {"labelAngle": 0}},
                          "y": {"field": "vllm_balancedness", "type": "quantitative", "title": "balancedness (vLLM)",
                                "scale": {"domain": [0, 1]}},
                          "color": {"field": "series", "type": "nominal", "title": "placement",
                                    "legend": {"orient": "bottom", "columns": 1}},
                          "tooltip": [{"field": f, "type": "quantitative" if "bal" in f or "imb" in f else "nominal",
                                       **({"format": ".3f"} if "bal" in f or "imb" in f else {})}
                                      for f in ("ep", "redundant", "placement", "vllm_balancedness",
                                                "sglang_balancedness", "trtllm_imbalance")]}}
    return _top(_facet(inner, runs), values, title)


def drops_spec(values: list[dict[str, Any]] | None = None, *, runs: int = 1, title: str | None = None) -> dict:
    """Dropped fraction of assignments by capacity factor (all layers). Fields: ``capacity_factor``,
    ``batch_tokens``, ``drop_rate`` (``run``)."""
    inner = {"mark": {"type": "line", "point": True},
             "encoding": {"x": {"field": "capacity_factor", "type": "quantitative", "title": "capacity factor"},
                          "y": {"field": "drop_rate", "type": "quantitative", "title": "dropped", "axis": {"format": "%"}},
                          "color": {"field": "run" if runs > 1 else "batch_tokens", "type": "nominal",
                                    "title": "run" if runs > 1 else "tokens per batch"},
                          "detail": {"field": "batch_tokens", "type": "nominal"},
                          "tooltip": [{"field": "capacity_factor", "type": "quantitative"},
                                      {"field": "batch_tokens", "type": "ordinal"},
                                      {"field": "drop_rate", "type": "quantitative", "format": ".2%"}]}}
    return _top(inner, values, title)


def cache_spec(values: list[dict[str, Any]] | None = None, *, runs: int = 1, title: str | None = None) -> dict:
    """Hit rate by cache size for LRU, LFU and Belady (the optimum, dashed). Fields: ``policy``,
    ``cache_size``, ``hit_rate``, ``bytes_per_token`` (``run``)."""
    inner = {"width": 260, "transform": [{"calculate": "datum.policy == 'belady' ? 'Belady (bound)' : upper(datum.policy)",
                            "as": "policy_name"}],
             "mark": {"type": "line", "point": True},
             "encoding": {"x": {"field": "cache_size", "type": "quantitative", "title": "experts cached per layer"},
                          "y": {"field": "hit_rate", "type": "quantitative", "title": "hit rate",
                                "axis": {"format": "%"}, "scale": {"domain": [0, 1]}},
                          "color": {"field": "policy_name", "type": "nominal", "title": "policy"},
                          "strokeDash": {"condition": {"test": "datum.policy == 'belady'", "value": [5, 3]},
                                         "value": [1, 0]},
                          "tooltip": [{"field": "policy_name", "title": "policy"},
                                      {"field": "cache_size", "type": "quantitative"},
                                      {"field": "hit_rate", "type": "quantitative", "format": ".1%"},
                                      {"field": "bytes_per_token", "type": "quantitative", "format": ",.0f"}]}}
    return _top(_facet(inner, runs), values, title)


def coverage_spec(values: list[dict[str, Any]] | None = None, *, runs: int = 1, title: str | None = None) -> dict:
    """Distinct experts per decode step vs batch size, with the uniform baseline (grey). Fields:
    ``batch``, ``distinct``, ``uniform``, ``activation`` (``run``)."""
    inner = {"width": 220, "transform": [{"fold": ["distinct", "uniform"], "as": ["series", "experts"]}],
             "mark": {"type": "line", "point": True},
             "encoding": {"x": {"field": "batch", "type": "quantitative", "title": "decode batch size",
                                "scale": {"type": "log"}},
                          "y": {"field": "experts", "type": "quantitative", "title": "distinct experts per step"},
                          "color": {"field": "series", "type": "nominal", "title": None,
                                    "scale": {"domain": ["distinct", "uniform"], "range": ["#4c78a8", "#bbbbbb"]}},
                          "tooltip": [{"field": "batch", "type": "quantitative"},
                                      {"field": "series", "type": "nominal"},
                                      {"field": "experts", "type": "quantitative", "format": ".2f"}]}}
    return _top(_facet(inner, runs), values, title)


def prefetch_spec(values: list[dict[str, Any]] | None = None, *, runs: int = 1, title: str | None = None) -> dict:
    """Prefetch accuracy of each predictor against its baselines. Fields: ``predictor``, ``accuracy``,
    ``popular``, ``uniform`` (``run``)."""
    inner = {"transform": [{"fold": ["accuracy", "popular", "uniform"], "as": ["guess", "value"]}],
             "mark": "bar",
             "encoding": {"x": {"field": "predictor", "type": "nominal", "title": None, "axis": {"labelAngle": 0}},
                          "xOffset": {"field": "guess", "type": "nominal"},
                          "y": {"field": "value", "type": "quantitative", "title": "experts guessed",
                                "axis": {"format": "%"}},
                          "color": {"field": "guess", "type": "nominal", "title": None,
                                    "scale": {"domain": ["accuracy", "popular", "uniform"],
                                              "range": ["#4c78a8", "#9ecae9", "#cccccc"]}},
                          "tooltip": [{"field": "predictor"}, {"field": "guess"},
                                      {"field": "value", "type": "quantitative", "format": ".1%"}]}}
    return _top(_facet(inner, runs), values, title)


def _chart(spec_fn, key: str, reports: Any, title: str | None) -> Any:
    rows = view_rows(reports, key)
    runs = len({r["run"] for r in rows})
    return to_altair(spec_fn(rows, runs=runs, title=title))


def balance_chart(reports: Any, title: str | None = "Expert-parallel balancedness") -> Any:
    """Balancedness by EP size per placement (:func:`balance_spec`) of one or several reports."""
    return _chart(balance_spec, "placement", reports, title)


def drops_chart(reports: Any, title: str | None = "Dropped assignments by capacity factor") -> Any:
    return _chart(drops_spec, "drops", reports, title)


def cache_chart(reports: Any, title: str | None = "Expert cache hit rate (Belady = optimum)") -> Any:
    return _chart(cache_spec, "cache", reports, title)


def coverage_chart(reports: Any, title: str | None = "Distinct experts per decode step") -> Any:
    return _chart(coverage_spec, "coverage", reports, title)


def prefetch_chart(reports: Any, title: str | None = "Prefetch accuracy") -> Any:
    return _chart(prefetch_spec, "prefetch", reports, title)


def charts(reports: Iterable[Any]) -> dict[str, Any]:
    """Every serving chart of the reports, by name."""
    reports = list(reports)
    return {"balance": balance_chart(reports), "drops": drops_chart(reports), "cache": cache_chart(reports),
            "coverage": coverage_chart(reports), "prefetch": prefetch_chart(reports)}
