"""The offline Altair renderer for notebooks: every chart renders in JupyterLab, Notebook, VS Code and nbconvert HTML.

Altair's renderers fail one front-end or another (measured with Altair 6.3, JupyterLab 4.6):
``mimetype`` shows as text in JupyterLab 4.6 and breaks ``nbconvert --execute``; ``default``
loads Vega from a CDN (blank offline); ``html`` with ``template="inline"`` pastes the Vega bundle
as a classic script with top-level ``const`` declarations, so the second chart of a page dies with
``Identifier '...' has already been declared``.

This renderer (registered with Altair as ``"moelens"``) emits ``text/html`` in which

* the Vega runtime that the dashboard vendors (``moelens/web/vendor/vega.js``: Vega, Vega-Lite,
  Vega-Embed, no network) runs inside a function scope, once per page: later charts find it under
  ``window.__moelensVega`` and skip it; whatever ``vega``/``vegaLite``/``vegaEmbed`` globals the page
  had are restored, so Altair's own renderers on the same page are unaffected;
* the spec is JSON escaped for a ``<script>`` (``<``, ``>``, ``&`` as unicode escapes: label values
  and token text are untrusted input);
* the chart draws as SVG into its own ``<div class="moelens-chart">``; an error is written into
  that div and logged, never swallowed.

Every output carries the runtime (about 0.9 MB), so each output renders on its own, whatever else
the page holds - after a reload, in a saved notebook, in nbconvert's single HTML page, in VS Code's
shared output webview. :func:`enable_offline_renderer` switches Altair to it; :mod:`moelens.viz.charts` switches on
its own while Altair still has its CDN-loading ``default`` renderer, and leaves any other choice alone.
"""

from __future__ import annotations

import functools
import json
import uuid
from importlib import resources
from typing import Any

__all__ = ["NAME", "enable_offline_renderer", "chart_html", "renderer", "ensure_offline_renderer", "runtime_script"]

NAME = "moelens"
EMBED_OPTIONS = {"renderer": "svg", "mode": "vega-lite",
                 # export and source stay; "open in the Vega editor" posts to a web site
                 "actions": {"export": True, "source": True, "compiled": False, "editor": False}}
_STYLE = ".moelens-chart .vega-embed{display:inline-block}.moelens-chart-error{color:#b42318;white-space:pre-wrap}"


def script_json(obj: Any) -> str:
    """JSON that is safe inside a ``<script>``: ASCII only, ``<``, ``>``, ``&`` as unicode escapes."""
    text = json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@functools.lru_cache(maxsize=1)
def _vendored_runtime() -> str:
    text = resources.files("moelens.web").joinpath("vendor", "vega.js").read_text(encoding="utf-8")
    return text.replace("</script", "<\\/script")  # inline in HTML: nothing may close the script element


@functools.lru_cache(maxsize=1)
def runtime_script() -> str:
    """The Vega runtime, run at most once per page, in its own scope; sets ``window.__moelensVega``."""
    return ("(function () {\n"
            "  if (window.__moelensVega) return;\n"
            "  var names = ['vega', 'vegaLite', 'vegaEmbed'], saved = {}, had = {};\n"
            "  names.forEach(function (n) { had[n] = n in window; saved[n] = window[n]; });\n"
            f"{_vendored_runtime()}\n"
            "  window.__moelensVega = {vega: window.vega, vegaLite: window.vegaLite, vegaEmbed: window.vegaEmbed};\n"
            "  names.forEach(function (n) { if (had[n]) window[n] = saved[n]; else delete window[n]; });\n"
            "})();")


def chart_html(spec: dict[str, Any], *, embed_options: dict[str, Any] | None = None) -> str:
    """Self-contained HTML fragment that draws the Vega-Lite ``spec`` with no network."""
    div = f"moelens-chart-{uuid.uuid4().hex}"
    options = {**EMBED_OPTIONS, **(embed_options or {})}
    draw = ("(function () {\n"
            f"  var el = document.getElementById({script_json(div)});\n"
            "  var fail = function (err) {\n"
            "    el.className += ' moelens-chart-error';\n"
            "    el.textContent = 'chart error: ' + (err && err.message ? err.message : err);\n"
            "    console.error(err);\n"
            "  };\n"
            "  if (!window.__moelensVega) { fail(new Error('the Vega runtime did not load')); return; }\n"
            f"  window.__moelensVega.vegaEmbed(el, {script_json(spec)}, {script_json(options)})\n"
            "    .then(function () { el.setAttribute('data-rendered', 'true'); }, fail);\n"
            "})();")
    return (f'<style>{_STYLE}</style>\n<div class="moelens-chart" id="{div}"></div>\n'
            f'<script type="text/javascript">\n{runtime_script()}\n</script>\n'
            f'<script type="text/javascript">\n{draw}\n</script>\n')


def renderer(spec: dict[str, Any], **metadata: Any) -> dict[str, str]:
    """Altair renderer: the mimebundle of :func:`chart_html` (``text/html``, ``text/plain``)."""
    html = chart_html(spec, embed_options=metadata.get("embed_options"))
    return {"text/html": html, "text/plain": "<moelens chart: Vega-Lite, rendered offline>"}


def _registry() -> Any:
    import altair as alt

    if NAME not in alt.renderers.names():
        alt.renderers.register(NAME, renderer)
    return alt.renderers


def enable_offline_renderer() -> None:
    """Render Altair charts (any chart, not only moelens') with this offline renderer."""
    _registry().enable(NAME)


def ensure_offline_renderer() -> None:
    """Enable this renderer unless the user already chose one other than Altair's CDN ``default``."""
    registry = _registry()
    if registry.active == "default":
        registry.enable(NAME)
