"""Vega-Lite specifications as plain dicts: one function per chart, shared by notebooks and dashboard.

Each function returns a complete Vega-Lite v6 spec. With ``values=None`` the data is the named
source ``{"name": "table"}`` and the caller supplies rows (the dashboard replaces ``data`` with
``{"values": rows}`` before embedding; :mod:`moelens.viz.charts` passes the rows of a polars
frame). The fields each spec reads are listed in its docstring and in ``docs/site-data.md``.
No Altair here: the dashboard export must work with the core dependencies only.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SCHEMA_URL", "load_heatmap", "lift_heatmap", "layer_balance", "nmi_chart", "comparison_chart",
           "load_shift_heatmap", "all_specs"]

SCHEMA_URL = "https://vega.github.io/schema/vega-lite/v6.json"  # an identifier only: nothing fetches it
MUTED_OPACITY = 0.22  # non-significant specialization cells
UNTESTED_COLOR = "#e4e4e4"  # cells of values with too few tokens or documents to test
_EXPERT_AXIS = {"labelAngle": 0}
SPARSE_LABELS = "datum.value % 2 == 0 ? datum.label : ''"  # expert ids on narrow columns: even ids only


def _expert_axis(step: int) -> dict[str, Any]:
    return {**_EXPERT_AXIS, "labelExpr": SPARSE_LABELS} if step < 18 else dict(_EXPERT_AXIS)
_CONFIG = {"view": {"stroke": None}, "axis": {"labelFontSize": 11, "titleFontSize": 12},
           "legend": {"labelFontSize": 11, "titleFontSize": 11}}


def _data(values: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {"name": "table"} if values is None else {"values": values}


def _top(spec: dict[str, Any], values: list[dict[str, Any]] | None, title: str | None) -> dict[str, Any]:
    out = {"$schema": SCHEMA_URL, "data": _data(values), **spec, "config": _CONFIG}
    if title:
        out["title"] = title
    return out


def load_heatmap(values: list[dict[str, Any]] | None = None, *, title: str | None = None, step: int = 22) -> dict[str, Any]:
    """Layer x expert heatmap of utilization (load / fair share; 1 = uniform), on a log scale.

    Fields: ``layer``, ``expert``, ``count``, ``share``, ``utilization``, ``dead``.
    Utilization is clipped to [1/8, 8] for the colour only; the tooltip shows the value.
    """
    return _top({
        "transform": [{"calculate": "clamp(max(datum.utilization, 0.125), 0.125, 8)", "as": "utilization_color"}],
        "mark": {"type": "rect", "stroke": "white", "strokeWidth": 0.5, "cursor": "pointer"},
        "encoding": {
            "x": {"field": "expert", "type": "ordinal", "title": "expert", "axis": _expert_axis(step)},
            "y": {"field": "layer", "type": "ordinal", "title": "layer"},
            "color": {"field": "utilization_color", "type": "quantitative", "title": ["utilization", "(1 = fair share)"],
                      "scale": {"type": "log", "domain": [0.125, 8], "domainMid": 1, "scheme": "blueorange",
                                "clamp": True},
                      "legend": {"values": [0.125, 0.25, 0.5, 1, 2, 4, 8], "format": "~g", "gradientLength": 180}},
            "tooltip": [{"field": "layer", "type": "ordinal"}, {"field": "expert", "type": "ordinal"},
                        {"field": "count", "type": "quantitative", "title": "tokens", "format": ","},
                        {"field": "share", "type": "quantitative", "format": ".2%"},
                        {"field": "utilization", "type": "quantitative", "format": ".2f"},
                        {"field": "dead", "type": "nominal"}],
        },
        "width": {"step": step}, "height": {"step": step},
    }, values, title)


def lift_heatmap(values: list[dict[str, Any]] | None = None, *, label: str = "value", title: str | None = None,
                 step: int = 18, facet_layers: bool = False) -> dict[str, Any]:
    """Expert x label-value heatmap of lift (share / the expert's overall share; 1 = no preference).

    Fields: ``layer``, ``value``, ``value_index`` (row order), ``expert``, ``share``, ``lift``,
    ``ci_low``, ``ci_high``, ``q_value``, ``count``, ``tested``, ``significant``. Significant cells
    (the report's rule) are opaque with a dark outline, other tested cells are muted
    (opacity :data:`MUTED_OPACITY`), untested cells are grey. ``facet_layers``: one panel per layer.
    """
    cell = {
        "transform": [{"calculate": "datum.lift == null ? null : clamp(datum.lift, 0.25, 4)", "as": "lift_color"}],
        "mark": {"type": "rect", "cursor": "pointer", "stroke": "#222"},
        "encoding": {
            "x": {"field": "expert", "type": "ordinal", "title": "expert", "axis": _expert_axis(step)},
            "y": {"field": "value", "type": "nominal", "title": label,
                  "sort": {"field": "value_index", "op": "min", "order": "ascending"}},
            "color": {"condition": {"test": "!datum.tested || datum.lift == null", "value": UNTESTED_COLOR},
                      "field": "lift_color", "type": "quantitative", "title": ["lift", "(1 = none)"],
                      "scale": {"type": "log", "domain": [0.25, 4], "domainMid": 1, "scheme": "blueorange",
                                "clamp": True},
                      "legend": {"values": [0.25, 0.5, 1, 2, 4], "format": "~g", "gradientLength": 140}},
            "opacity": {"condition": {"test": "datum.significant || !datum.tested", "value": 1},
                        "value": MUTED_OPACITY},
            "strokeWidth": {"condition": {"test": "datum.significant", "value": 1.5}, "value": 0},
            "tooltip": [{"field": "layer", "type": "ordinal"}, {"field": "value", "type": "nominal", "title": label},
                        {"field": "expert", "type": "ordinal"},
                        {"field": "share", "type": "quantitative", "format": ".2%"},
                        {"field": "lift", "type": "quantitative", "format": ".2f"},
                        {"field": "ci_low", "type": "quantitative", "format": ".2f", "title": "95% CI low"},
                        {"field": "ci_high", "type": "quantitative", "format": ".2f", "title": "95% CI high"},
                        {"field": "q_value", "type": "quantitative", "format": ".2g", "title": "q"},
                        {"field": "count", "type": "quantitative", "format": ","},
                        {"field": "significant", "type": "nominal"}],
        },
        "width": {"step": step}, "height": {"step": step},
    }
    if not facet_layers:
        return _top(cell, values, title)
    transform = cell.pop("transform")
    return _top({"transform": transform, "facet": {"column": {"field": "layer", "type": "ordinal", "title": "layer"}},
                 "spec": cell}, values, title)


def layer_balance(values: list[dict[str, Any]] | None = None, *, collapse_effective: float = 0.3,
                  title: str | None = None) -> dict[str, Any]:
    """Effective-expert fraction ``exp(H)/E`` and max/mean load per layer, one line per run.

    Fields: ``run``, ``layer``, ``effective_fraction``, ``effective_experts``, ``max_over_mean``,
    ``collapsed``. The dashed rule is the collapse threshold (``collapse_effective``); 1 is uniform.
    """
    tooltip = [{"field": "run", "type": "nominal"}, {"field": "layer", "type": "ordinal"},
               {"field": "effective_experts", "type": "quantitative", "format": ".2f"},
               {"field": "effective_fraction", "type": "quantitative", "format": ".2f"},
               {"field": "max_over_mean", "type": "quantitative", "format": ".2f"},
               {"field": "collapsed", "type": "nominal"}]
    x = {"field": "layer", "type": "ordinal", "axis": {"labelAngle": 0}}
    color = {"field": "run", "type": "nominal", "legend": {"orient": "bottom", "direction": "vertical", "labelLimit": 400}}

    def panel(field: str, title_: str, rule: float, domain: list[float] | None) -> dict[str, Any]:
        y: dict[str, Any] = {"field": field, "type": "quantitative", "title": title_}
        if domain:
            y["scale"] = {"domain": domain}
        return {"width": 260, "height": 180, "layer": [
            {"mark": {"type": "line", "point": True}, "encoding": {"x": x, "y": y, "color": color, "tooltip": tooltip}},
            {"mark": {"type": "rule", "strokeDash": [4, 3], "color": "#888"}, "encoding": {"y": {"datum": rule}}},
        ]}

    return _top({"hconcat": [panel("effective_fraction", "effective experts / E", collapse_effective, [0, 1]),
                             panel("max_over_mean", "max / mean load", 1.0, None)]}, values, title)


def nmi_chart(values: list[dict[str, Any]] | None = None, *,
              title: str | None = "NMI(expert; label) per layer - dashed: labels shuffled") -> dict[str, Any]:
    """NMI between expert and label per layer (solid) and after shuffling the label across documents (dashed).

    Fields: ``label``, ``layer``, ``nmi``, ``nmi_permuted`` (null for token labels), ``nmi_baseline``.
    """
    return _top({
        "transform": [{"fold": ["nmi", "nmi_permuted"], "as": ["measure", "value"]},
                      {"filter": "datum.value != null"}],
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": {"field": "layer", "type": "ordinal", "axis": {"labelAngle": 0}},
            "y": {"field": "value", "type": "quantitative", "title": "NMI(expert; label)"},
            "color": {"field": "label", "type": "nominal"},
            "strokeDash": {"field": "measure", "type": "nominal", "legend": None},  # explained in the title
            "tooltip": [{"field": "label", "type": "nominal"}, {"field": "layer", "type": "ordinal"},
                        {"field": "measure", "type": "nominal"},
                        {"field": "value", "type": "quantitative", "format": ".4f"},
                        {"field": "nmi_baseline", "type": "quantitative", "format": ".4f"}],
        },
        "width": 300, "height": 180,
    }, values, title)


def comparison_chart(values: list[dict[str, Any]] | None = None, *, title: str | None = None) -> dict[str, Any]:
    """Router saturation and top-1 agreement between two runs per layer, with uniform baselines (dashed).

    Long format, one row per (pair, layer, metric): ``pair``, ``layer``, ``metric``
    (``saturation`` / ``top1_agreement``), ``value``, ``baseline``.
    """
    x = {"field": "layer", "type": "ordinal", "axis": {"labelAngle": 0}}
    return _top({
        "facet": {"column": {"field": "metric", "type": "nominal", "title": None}},
        "spec": {"width": 240, "height": 170, "layer": [
            {"mark": {"type": "line", "point": True},
             "encoding": {"x": x, "y": {"field": "value", "type": "quantitative", "scale": {"domain": [0, 1]},
                                        "title": "agreement"},
                          "color": {"field": "pair", "type": "nominal",
                                    "legend": {"orient": "bottom", "direction": "vertical", "labelLimit": 500}},
                          "tooltip": [{"field": "pair", "type": "nominal"}, {"field": "layer", "type": "ordinal"},
                                      {"field": "metric", "type": "nominal"},
                                      {"field": "value", "type": "quantitative", "format": ".3f"},
                                      {"field": "baseline", "type": "quantitative", "format": ".3f"}]}},
            {"mark": {"type": "line", "strokeDash": [4, 3], "color": "#888"},
             "encoding": {"x": x, "y": {"field": "baseline", "type": "quantitative", "aggregate": "mean"}}},
        ]},
    }, values, title)


def load_shift_heatmap(values: list[dict[str, Any]] | None = None, *, title: str | None = None,
                       step: int = 22) -> dict[str, Any]:
    """Layer x expert heatmap of the change in load share between two runs (``delta`` = b - a).

    Fields: ``layer``, ``expert``, ``share_a``, ``share_b``, ``delta``.
    """
    return _top({
        "mark": {"type": "rect", "stroke": "white", "strokeWidth": 0.5},
        "encoding": {
            "x": {"field": "expert", "type": "ordinal", "axis": _expert_axis(step)},
            "y": {"field": "layer", "type": "ordinal"},
            "color": {"field": "delta", "type": "quantitative", "title": "share b - a",
                      "scale": {"scheme": "blueorange", "domainMid": 0}},
            "tooltip": [{"field": "layer", "type": "ordinal"}, {"field": "expert", "type": "ordinal"},
                        {"field": "share_a", "type": "quantitative", "format": ".2%"},
                        {"field": "share_b", "type": "quantitative", "format": ".2%"},
                        {"field": "delta", "type": "quantitative", "format": "+.2%"}],
        },
        "width": {"step": step}, "height": {"step": step},
    }, values, title)


def all_specs(collapse_effective: float = 0.3) -> dict[str, dict[str, Any]]:
    """The templates the dashboard embeds (named data source ``table``)."""
    return {"load_heatmap": load_heatmap(), "lift_heatmap": lift_heatmap(),
            "lift_heatmap_layers": lift_heatmap(facet_layers=True),
            "layer_balance": layer_balance(collapse_effective=collapse_effective), "nmi": nmi_chart(),
            "comparison": comparison_chart()}
