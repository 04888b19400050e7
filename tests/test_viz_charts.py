"""Altair charts and the Vega-Lite specs they share with the dashboard.

The specs are compiled and rendered by Vega itself (``vl-convert``), and the rendered SVG is
checked against hand-made frames: one rect per (layer, expert), muted non-significant cells.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import polars as pl
import pytest

import moelens
import moelens.viz as mv
from moelens.analysis.routing import from_arrays
from moelens.errors import ConfigError
from moelens.store.arrays import save_routing
from moelens.viz import specs

vlc = pytest.importorskip("vl_convert", reason="the viz extra (vl-convert-python) renders the specs")
SVG = "{http://www.w3.org/2000/svg}"


def values_of(chart) -> list[dict]:
    spec = chart.to_dict()
    (values,) = spec["datasets"].values()
    return values


def rect_cells(spec: dict) -> list[ET.Element]:
    """The rect marks of a rendered spec (legend gradients left out)."""
    root = ET.fromstring(vlc.vegalite_to_svg(spec, vl_version="6.4"))
    cells = []
    for g in root.iter(f"{SVG}g"):
        cls = (g.get("class") or "").split()
        if "mark-rect" in cls and "role-mark" in cls:
            cells.extend(g.iter(f"{SVG}path"))
    return cells


def test_load_heatmap_from_a_capture_frame_fills_missing_experts():
    cap_load = pl.DataFrame({"layer": [1, 1, 2], "expert": [0, 2, 1], "tokens": [3, 1, 4]})  # Capture.load() columns
    values = values_of(mv.load_heatmap(cap_load, num_experts=4))
    assert [(v["layer"], v["expert"], v["count"]) for v in values] == [
        (1, 0, 3), (1, 1, 0), (1, 2, 1), (1, 3, 0), (2, 0, 0), (2, 1, 4), (2, 2, 0), (2, 3, 0)]
    assert [v["utilization"] for v in values] == [3.0, 0.0, 1.0, 0.0, 0.0, 4.0, 0.0, 0.0]  # load * E
    assert [v["load"] for v in values][:4] == [0.75, 0.0, 0.25, 0.0]
    assert [v["dead"] for v in values] == [False, True, False, True, True, False, True, True]
    assert len(rect_cells(mv.load_heatmap(cap_load, num_experts=4).to_dict())) == 8


def test_lift_heatmap_mutes_non_significant_and_greys_untested_cells():
    rows = []
    flags = {("a", 0): (True, True), ("a", 1): (True, False), ("a", 2): (True, False),
             ("b", 0): (False, False), ("b", 1): (False, False), ("b", 2): (False, False)}
    for (value, expert), (tested, significant) in flags.items():
        rows.append({"label": "domain", "layer": 0, "value": value, "expert": expert, "share": 0.5, "lift": 2.0,
                     "ci_low": 1.5, "ci_high": 2.5, "q_value": 0.001, "count": 10, "tested": tested,
                     "significant": significant})
    cells = rect_cells(mv.specialization_heatmap(pl.DataFrame(rows)).to_dict())
    assert len(cells) == 6
    opacity = sorted(float(c.get("opacity", 1)) for c in cells)
    assert opacity == [specs.MUTED_OPACITY] * 2 + [1.0] * 4  # the two tested, non-significant cells
    grey = [c for c in cells if c.get("fill") in (specs.UNTESTED_COLOR, "rgb(228, 228, 228)")]
    assert len(grey) == 3
    outlined = [c for c in cells if float(c.get("stroke-width", 0)) > 0]
    assert len(outlined) == 1


def _svg_text(spec: dict) -> list[str]:
    root = ET.fromstring(vlc.vegalite_to_svg(spec, vl_version="6.4"))
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def test_untested_values_are_marked_on_the_axis_and_clipped_scales_say_so():
    rows = []
    for value, docs in (("en", 12), ("ja", 3)):  # ja: 3 documents, the test needs 5
        for expert in range(3):
            rows.append({"label": "language", "layer": 0, "value": value, "expert": expert, "share": 0.5,
                         "lift": [0.1, 1.0, 7.5][expert], "ci_low": 1.5, "ci_high": 2.5, "q_value": 0.5, "count": 10,
                         "tokens": 400 if docs > 5 else 60, "docs": docs, "overall_share": 0.5, "tested": docs >= 5,
                         "significant": False})
    chart = mv.specialization_heatmap(pl.DataFrame(rows))
    values = values_of(chart)
    assert {v["value_label"] for v in values} == {"en", "ja (untested)"}
    assert {v["untested_reason"] for v in values if v["value"] == "ja"} == {"3 documents < 5 needed"}
    assert {v["state"] for v in values} == {"not_significant", "untested"}
    texts = _svg_text(chart.to_dict())
    assert "ja (untested)" in texts
    assert "≥ 4" in texts and "≤ ¼" in texts  # the legend's ends: lift 7.5 and 0.1 share the end colours
    load = _svg_text(mv.load_heatmap(pl.DataFrame({"layer": [0, 0], "expert": [0, 1], "tokens": [99, 1]})).to_dict())
    assert "≥ 8" in load and "≤ ⅛" in load


def test_every_dashboard_template_compiles_with_vega_lite():
    samples = {
        "load_heatmap": [{"layer": 0, "expert": 0, "count": 1, "load": 1.0, "utilization": 1.0, "dead": False}],
        "lift_heatmap": [{"layer": 0, "value": "x", "value_label": "x", "value_index": 0, "expert": 0, "share": 0.5,
                          "lift": 1.0, "state": "not_significant", "untested_reason": None}],
        "layer_balance": [{"run": "r", "layer": 0, "effective_fraction": 0.5, "effective_experts": 4,
                           "max_over_mean": 1.5, "collapsed": False}],
        "nmi": [{"label": "domain", "layer": 0, "nmi": 0.1, "nmi_permuted": 0.01, "nmi_baseline": 0.0}],
        "comparison": [{"pair": "a → b", "layer": 0, "metric": "saturation", "value": 0.8, "baseline": 0.25}],
    }
    samples["lift_heatmap_layers"] = samples["lift_heatmap"]
    templates = specs.all_specs()
    assert set(templates) == set(samples)
    for name, spec in templates.items():
        assert spec["data"] == {"name": "table"}
        spec = {**spec, "data": {"values": samples[name]}}
        vega = vlc.vegalite_to_vega(spec, vl_version="6.4")
        assert vega["marks"], name


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    db = tmp_path_factory.mktemp("charts") / "runs.duckdb"
    rng = np.random.default_rng(0)
    T, E = 400, 4
    doc = np.repeat(np.arange(20), T // 20)
    docs = [{"doc_id": d, "domain": "code" if d % 2 else "prose", "language": "en"} for d in range(20)]
    a = np.stack([rng.permutation(E)[:2] for _ in range(2 * T)]).reshape(2, T, 2)
    b = a.copy()
    b[:, ::2] = b[:, ::2, ::-1]  # same sets, first choice swapped on every other token
    for name, experts in (("a", a), ("b", b)):
        save_routing(from_arrays(experts, num_experts=E, doc_id=doc, documents=docs, layers=[1, 3], run_id=name),
                     db, run_id=name)
    return db


def test_facade_frames_feed_every_chart(two_runs):
    with moelens.open(two_runs) as t:
        load = values_of(mv.load_heatmap(t.expert_load(run="a")))
        frame = t.expert_load(run="a").sort("layer", "expert")
        assert [v["count"] for v in load] == frame["count"].to_list()
        spec = mv.specialization_heatmap(t.specialization("domain", run="a"))
        assert len(values_of(spec)) == 2 * 2 * 4  # layers x values x experts
        assert "facet" in spec.to_dict()
        balance = t.load_runs()
        assert balance["run"].to_list() == ["a", "a", "b", "b"]
        for r in ("a", "b"):
            assert balance.filter(pl.col("run") == r).drop("run").equals(t.load(run=r))
        assert len(values_of(mv.layer_balance(balance))) == 4
        nmi = mv.nmi_chart(pl.concat([t.nmi("domain", run="a"), t.nmi("position", run="a")], how="diagonal_relaxed"))
        assert {v["label"] for v in values_of(nmi)} == {"domain", "position"}
        comparison = values_of(mv.comparison_chart(t.compare("a", "b", labels=[]), pair="a → b"))
        sat = {(v["layer"], v["metric"]): v["value"] for v in comparison}
        # identical top-2 sets: saturation 1; first choice swapped on every other token: agreement 1/2
        assert sat == {(1, "saturation"): 1.0, (3, "saturation"): 1.0, (1, "top1_agreement"): 0.5,
                       (3, "top1_agreement"): 0.5}
        shift = values_of(mv.load_shift_heatmap(t.load_shift("a", "b")))
        assert all(v["delta"] == 0 for v in shift)


def test_charts_name_the_columns_they_miss():
    with pytest.raises(ConfigError, match="needs the columns"):
        mv.load_heatmap(pl.DataFrame({"layer": [0], "expert": [0]}))
    with pytest.raises(ConfigError, match="saturation"):
        mv.comparison_chart(pl.DataFrame({"layer": [0]}))
