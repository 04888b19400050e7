"""Serving what-ifs from routing traces: expert-parallel placement, capacity drops, expert caches, coverage.

Pure functions over a run's routing (:class:`~moelens.store.arrays.RunRouting`):

* :mod:`~moelens.analysis.serving.eplb` - DeepSeek's EPLB (replicas, balanced packing, hierarchical
  and global policies) and the :class:`EPPlacement` the engine exporters read;
* :mod:`~moelens.analysis.serving.placement` - balancedness (vLLM, SGLang, TensorRT-LLM) for EP
  sizes and replica counts, fitted on one part of the traffic and evaluated on another;
* :mod:`~moelens.analysis.serving.capacity` - capacity-factor drops by position and by score;
* :mod:`~moelens.analysis.serving.cache` - LRU, LFU and Belady expert caches in decode order;
* :mod:`~moelens.analysis.serving.prefetch` - predicting the next layer's / next token's experts;
* :mod:`~moelens.analysis.serving.coverage` - distinct experts per decode step at batch ``B``;
* :mod:`~moelens.analysis.serving.report` - all of it in one pass (:func:`serving_report`);
  :mod:`~moelens.analysis.serving.view` - the dashboard view's JSON.

Definitions and baselines are in each module's docstring and in ``docs/serving.md``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["EPPlacement", "rebalance_experts", "balanced_packing", "replicate_experts", "contiguous_placement",
           "ServingOptions", "ServingReport", "serving_report", "serving_view", "expert_bytes_from_config"]

_WHERE = {"EPPlacement": "eplb", "rebalance_experts": "eplb", "balanced_packing": "eplb",
          "replicate_experts": "eplb", "contiguous_placement": "eplb", "ServingOptions": "options",
          "ServingReport": "report", "serving_report": "report", "expert_bytes_from_config": "report",
          "serving_view": "view"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'moelens.analysis.serving' has no attribute {name!r}")
    value = getattr(import_module(f"moelens.analysis.serving.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
