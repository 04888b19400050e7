"""Presentation: Vega-Lite specs, Altair charts for notebooks and the static offline dashboard.

* :mod:`~moelens.viz.specs` - Vega-Lite specifications as plain dicts (no Altair needed), one
  function per chart; the dashboard and the Altair charts share them;
* :mod:`~moelens.viz.charts` - one Altair function per visualization, taking the polars frames
  of :class:`moelens.analysis.facade.Trace` or :class:`moelens.capturing.Capture` (needs the
  ``viz`` extra: ``altair``);
* :mod:`~moelens.viz.jupyter` - the offline notebook renderer (JupyterLab, Notebook, VS Code,
  nbconvert HTML; no CDN): :func:`enable_offline_renderer`;
* :mod:`~moelens.viz.states` - significant / not significant / untested (and why) per
  specialization cell, for the heatmaps, the cards and the dashboard data;
* :mod:`~moelens.viz.sitedata` and :mod:`~moelens.viz.sitetokens` - the dashboard's data
  (schema in ``docs/site-data.md``); :mod:`~moelens.viz.site` - :func:`export_site`.

Like the analysis layer, this layer reads only a database: it never imports torch,
``moelens.hooks`` or ``moelens.kernels``. Chart functions import Altair when called.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["export_site", "load_heatmap", "specialization_heatmap", "layer_balance", "nmi_chart",
           "comparison_chart", "load_shift_heatmap", "enable_offline_renderer"]

_WHERE = {"export_site": "site", "load_heatmap": "charts", "specialization_heatmap": "charts",
          "layer_balance": "charts", "nmi_chart": "charts", "comparison_chart": "charts",
          "load_shift_heatmap": "charts", "enable_offline_renderer": "jupyter"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'moelens.viz' has no attribute {name!r}")
    module = import_module(f"moelens.viz.{_WHERE[name]}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
