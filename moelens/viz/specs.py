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
# legend labels of a clipped colour scale: the ends say that larger / smaller values share their colour
CLIP_LABELS = "datum.value >= {hi} ? '{hi_text}' : datum.value <= {lo} ? '{lo_text}' : format(datum.value, '~g')"


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
    """Layer x expert heatmap of utilization (load / fair load 1/E; 1 = uniform), on a log scale.

    Fields: ``layer``, ``expert``, ``count``, ``load`` (the expert's fraction of the layer's routed
    choices), ``utilization``, ``dead``. The colour is clipped to [1/8, 8] and the legend says so
    (``≤ ⅛``, ``≥ 8``); the tooltip shows the value.
    """
    return _top({
        "transform": [{"calculate": "clamp(max(datum.utilization, 0.125), 0.125, 8)", "as": "utilization_color"},
                      {"calculate": "'layer ' + datum.layer + ' · expert ' + datum.expert", "as": "tip_cell"},
                      {"calculate": "format(datum.load, '.2%') + ' of the layer · ' + format(datum.utilization, '.2f') + "
                                    "'× fair' + (datum.dead ? ' · dead' : '')", "as": "tip_load"}],
        "mark": {"type": "rect", "stroke": "white", "strokeWidth": 0.5, "cursor": "pointer"},
        "encoding": {
            "x": {"field": "expert", "type": "ordinal", "title": "expert", "axis": _expert_axis(step)},
            "y": {"field": "layer", "type": "ordinal", "title": "layer"},
            "color": {"field": "utilization_color", "type": "quantitative",
                      "title": ["utilization", "load / fair load", "(colour clipped)"],
                      "scale": {"type": "log", "domain": [0.125, 8], "domainMid": 1, "scheme": "blueorange",
                                "clamp": True},
                      "legend": {"values": [0.125, 0.25, 0.5, 1, 2, 4, 8], "gradientLength": 180,
                                 "labelExpr": CLIP_LABELS.format(lo=0.125, hi=8, lo_text="≤ ⅛", hi_text="≥ 8")}},
            "tooltip": [{"field": "tip_cell", "title": "cell"}, {"field": "tip_load", "title": "load"},
                        {"field": "count", "type": "quantitative", "title": "routed", "format": ","}],
        },
        "width": {"step": step}, "height": {"step": step},
    }, values, title)


def lift_heatmap(values: list[dict[str, Any]] | None = None, *, label: str = "value", title: str | None = None,
                 step: int = 18, facet_layers: bool = False) -> dict[str, Any]:
    """Expert x label-value heatmap of lift (share / the expert's overall share; 1 = no preference).

    Fields: ``layer``, ``value``, ``value_label`` (the axis text: the value, marked when untested),
    ``value_index`` (row order), ``expert``, ``share``, ``lift``, ``ci_low``, ``ci_high``, ``q_value``,
    ``count``, ``state`` (``significant`` / ``not_significant`` / ``untested``) and ``untested_reason``.
    Significant cells (the report's rule) are opaque with a dark outline, other tested cells are
    muted (opacity :data:`MUTED_OPACITY`), untested cells are grey (:data:`UNTESTED_COLOR`) and the
    tooltip says why. The colour is clipped to [1/4, 4] and the legend says so.
    ``facet_layers``: one panel per layer.
    """
    cell = {
        "transform": [
            {"calculate": "datum.lift == null ? null : clamp(max(datum.lift, 0.25), 0.25, 4)", "as": "lift_color"},
            {"calculate": "'layer ' + datum.layer + ' · expert ' + datum.expert + ' · ' + datum.value", "as": "tip_cell"},
            {"calculate": "datum.lift == null ? '–' : format(datum.lift, '.2f') + (datum.state == 'untested' ? '' : "
                          "' (95% CI ' + format(datum.ci_low, '.2f') + '–' + format(datum.ci_high, '.2f') + ')')",
             "as": "tip_lift"},
            {"calculate": "format(datum.share, '.1%') + ' of the value\u2019s tokens (' + format(datum.count, ',') + ')'",
             "as": "tip_share"},
            {"calculate": "datum.state == 'untested' ? 'untested: ' + datum.untested_reason : "
                          "(datum.state == 'significant' ? 'significant' : 'not significant') + ', q = ' + "
                          "format(datum.q_value, '.2g')", "as": "tip_test"}],
        "mark": {"type": "rect", "cursor": "pointer", "stroke": "#222"},
        "encoding": {
            "x": {"field": "expert", "type": "ordinal", "title": "expert", "axis": _expert_axis(step)},
            "y": {"field": "value_label", "type": "nominal", "title": label,
                  "sort": {"field": "value_index", "op": "min", "order": "ascending"}},
            "color": {"condition": {"test": "datum.state == 'untested' || datum.lift == null", "value": UNTESTED_COLOR},
                      "field": "lift_color", "type": "quantitative", "title": ["lift", "(1 = none;", "colour clipped)"],
                      "scale": {"type": "log", "domain": [0.25, 4], "domainMid": 1, "scheme": "blueorange",
                                "clamp": True},
                      "legend": {"values": [0.25, 0.5, 1, 2, 4], "gradientLength": 140,
                                 "labelExpr": CLIP_LABELS.format(lo=0.25, hi=4, lo_text="≤ ¼", hi_text="≥ 4")}},
            "opacity": {"condition": {"test": "datum.state != 'not_significant'", "value": 1},
                        "value": MUTED_OPACITY},
            "strokeWidth": {"condition": {"test": "datum.state == 'significant'", "value": 1.5}, "value": 0},
            "tooltip": [{"field": "tip_cell", "title": "cell"}, {"field": "tip_lift", "title": "lift"},
                        {"field": "tip_share", "title": "share"}, {"field": "tip_test", "title": "test"}],
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
    """Layer x expert heatmap of the change in load between two runs (``delta`` = b - a).

    Fields: ``layer``, ``expert``, ``share_a``, ``share_b`` (each run's load: the expert's fraction of
    the layer's routed choices), ``delta``.
    """
    return _top({
        "mark": {"type": "rect", "stroke": "white", "strokeWidth": 0.5},
        "encoding": {
            "x": {"field": "expert", "type": "ordinal", "axis": _expert_axis(step)},
            "y": {"field": "layer", "type": "ordinal"},
            "color": {"field": "delta", "type": "quantitative", "title": "load b − a",
                      "scale": {"scheme": "blueorange", "domainMid": 0}},
            "tooltip": [{"field": "layer", "type": "ordinal"}, {"field": "expert", "type": "ordinal"},
                        {"field": "share_a", "type": "quantitative", "format": ".2%", "title": "load a"},
                        {"field": "share_b", "type": "quantitative", "format": ".2%", "title": "load b"},
                        {"field": "delta", "type": "quantitative", "format": "+.2%", "title": "load b − a"}],
        },
        "width": {"step": step}, "height": {"step": step},
    }, values, title)


def all_specs(collapse_effective: float = 0.3) -> dict[str, dict[str, Any]]:
    """The templates the dashboard embeds (named data source ``table``)."""
    return {"load_heatmap": load_heatmap(), "lift_heatmap": lift_heatmap(),
            "lift_heatmap_layers": lift_heatmap(facet_layers=True),
            "layer_balance": layer_balance(collapse_effective=collapse_effective), "nmi": nmi_chart(),
            "comparison": comparison_chart()}
