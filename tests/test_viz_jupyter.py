"""The offline notebook renderer (moelens.viz.jupyter): one self-contained HTML fragment per chart.

Oracles: the spec handed in (read back out of the fragment with a JSON decoder), Python's HTML
parser (which elements the fragment holds), the vendored Vega runtime file, and Altair's own
renderer registry. The fragments are drawn in a browser by tests/test_notebooks_browser.py.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from importlib import resources

import pytest

alt = pytest.importorskip("altair")

from moelens.viz import jupyter  # noqa: E402

PAYLOAD = "</script><script>alert(1)</script> & <b>"


class Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.scripts, self._in = [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in = tag == "script"
        if self._in:
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._in = False

    def handle_data(self, data):
        if self._in:
            self.scripts[-1] += data


def spec_with(text: str) -> dict:
    return {"$schema": "https://vega.github.io/schema/vega-lite/v6.json", "data": {"values": [{"x": text, "y": 1}]},
            "mark": "bar", "encoding": {"x": {"field": "x", "type": "nominal"}, "y": {"field": "y", "type": "quantitative"}}}


def test_a_chart_is_one_div_and_two_scripts_holding_the_spec_escaped():
    spec = spec_with(PAYLOAD)
    html = jupyter.chart_html(spec)
    parsed = Elements()
    parsed.feed(html)
    assert [t for t, _ in parsed.tags] == ["style", "div", "script", "script"]  # the payload opened no element
    div = parsed.tags[1][1]
    assert div["class"] == "moelens-chart" and div["id"].startswith("moelens-chart-")
    runtime, draw = parsed.scripts
    vendored = resources.files("moelens.web").joinpath("vendor", "vega.js").read_text(encoding="utf-8")
    assert vendored in runtime and runtime.strip().startswith("(function () {\n  if (window.__moelensVega) return;")
    start = draw.index("vegaEmbed(el, ") + len("vegaEmbed(el, ")
    decoded, end = json.JSONDecoder().raw_decode(draw, start)
    assert decoded == spec
    options, _ = json.JSONDecoder().raw_decode(draw, end + 2)
    assert options["renderer"] == "svg" and options["actions"]["editor"] is False  # nothing posts to a web site
    assert "<" not in draw[start:end] and "http" not in draw.replace(spec["$schema"], "")
    assert jupyter.chart_html(spec) != html  # each chart its own div id


def test_renderer_follows_an_explicit_choice_and_replaces_only_the_cdn_default():
    before = alt.renderers.active
    try:
        alt.renderers.enable("default")
        jupyter.ensure_offline_renderer()
        assert alt.renderers.active == "moelens"
        bundle = alt.Chart.from_dict(spec_with("a"))._repr_mimebundle_()
        bundle = bundle[0] if isinstance(bundle, tuple) else bundle
        assert 'class="moelens-chart"' in bundle["text/html"]
        alt.renderers.enable("html")
        jupyter.ensure_offline_renderer()
        assert alt.renderers.active == "html"  # the user's choice stays
        import moelens.viz

        moelens.viz.enable_offline_renderer()
        assert alt.renderers.active == "moelens"
    finally:
        alt.renderers.enable(before)
