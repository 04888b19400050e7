"""The analysis suite: metrics over a trace database, as small polars frames.

Each module owns one family of metrics and documents its definitions and baselines:

* :mod:`~moelens.analysis.load` - per-layer load, imbalance, entropy, dead experts, collapse,
  expert-parallel balancedness;
* :mod:`~moelens.analysis.confidence` - router entropy, top-1 margin, z-loss, Switch aux loss (logits);
* :mod:`~moelens.analysis.specialization` - share / lift by label with a document bootstrap, NMI;
* :mod:`~moelens.analysis.vocabulary` - token-id specialization and characteristic tokens;
* :mod:`~moelens.analysis.position` - routing by position bucket, first-token experts;
* :mod:`~moelens.analysis.coactivation` - co-activation of experts within a token's top-k;
* :mod:`~moelens.analysis.temporal` - consecutive-token repeat rates (Mixtral Table 5), reuse gaps;
* :mod:`~moelens.analysis.crosslayer` - top-1 transitions between layers and their predictability;
* :mod:`~moelens.analysis.compare` - router saturation, load and specialization shift between runs;
* :mod:`~moelens.analysis.sharematrix` - the full expert x label share matrix (top-k and top-1);
* :mod:`~moelens.analysis.report` - the assembled report of a per-token run (one pass over the layers:
  :mod:`~moelens.analysis.layerpass`), :mod:`~moelens.analysis.stats_report` - of a stats-mode run,
  both from the shared :mod:`~moelens.analysis.sections`; rendered by :mod:`~moelens.analysis.render`;
* :mod:`~moelens.analysis.runs` - the one loader (:func:`load_any`: ``RunRouting | RunAggregates``), run
  sources and the run table; :mod:`~moelens.analysis.facade` - ``moelens.open``;
  :mod:`~moelens.analysis.routing` - per-token runs from a database or from arrays;
  :mod:`~moelens.analysis.labels` - labels; :mod:`~moelens.analysis.options`;
  :mod:`~moelens.analysis.export` - analysis tables as Parquet.

The layer reads only a database: it never imports torch, ``moelens.hooks`` or ``moelens.kernels``
(checked by a test). Functions take a :class:`~moelens.store.arrays.RunRouting` (from
:func:`load_run` or :func:`from_arrays`) - the load metrics and the report also a
:class:`~moelens.store.aggregates.RunAggregates` - and options dataclasses, and return polars frames.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "open", "Trace", "load_run", "load_any", "from_arrays", "RunAggregates", "share_matrix",
    "LoadOptions", "SpecializationOptions", "VocabularyOptions", "ReportOptions",
    "load_summary", "expert_load", "balancedness",
    "confidence_summary",
    "specialization_tests", "label_nmi", "available_labels", "LabelNotFoundError",
    "token_specialization", "expert_top_tokens", "token_experts",
    "position_profile", "first_token_experts",
    "coactivation_pairs", "coactivation_summary",
    "repeat_rates", "reuse_distance",
    "transitions", "crosslayer_summary",
    "router_saturation", "load_shift", "specialization_shift",
    "build_report",
]

_WHERE = {
    "open": "facade", "Trace": "facade", "load_run": "routing", "from_arrays": "routing", "load_any": "runs",
    "RunAggregates": "runs", "share_matrix": "sharematrix",
    "LoadOptions": "options", "SpecializationOptions": "options", "VocabularyOptions": "options",
    "ReportOptions": "options",
    "load_summary": "load", "expert_load": "load", "balancedness": "load",
    "confidence_summary": "confidence",
    "specialization_tests": "specialization", "label_nmi": "specialization",
    "available_labels": "labels", "LabelNotFoundError": "labels",
    "token_specialization": "vocabulary", "expert_top_tokens": "vocabulary", "token_experts": "vocabulary",
    "position_profile": "position", "first_token_experts": "position",
    "coactivation_pairs": "coactivation", "coactivation_summary": "coactivation",
    "repeat_rates": "temporal", "reuse_distance": "temporal",
    "transitions": "crosslayer", "crosslayer_summary": "crosslayer",
    "router_saturation": "compare", "load_shift": "compare", "specialization_shift": "compare",
    "build_report": "report",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'moelens.analysis' has no attribute {name!r}")
    value = getattr(import_module(f"moelens.analysis.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
