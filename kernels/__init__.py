"""moelens.kernels: on-device reduction of routing decisions during capture.

Owns the capture kernels and their references, side by side with one contract each:

- per-token records: :func:`route_records` (Triton) / :func:`route_records_torch`, written
  into a :class:`RouteRecords` buffer; :class:`RecordBuffer` holds one batch for every layer
  and copies it to the host once (:class:`HostRecords`);
- selection recomputed from logits: :func:`select_experts` (Triton) /
  :func:`select_experts_torch` for the scoring rules in :data:`RULES`;
- stats mode: :class:`StatsAccumulator` over :class:`StatsTables`, updated by
  :func:`update_stats` (Triton) / :func:`update_stats_torch`;
- :func:`choose_backend` for ``auto|torch|triton``.

The torch functions are the specification. Importing this package imports neither torch nor
triton; each name loads its module on first access, and triton loads only with a Triton name.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module, machinery, util
from typing import TYPE_CHECKING, Any


def _hand_back_the_name() -> None:
    """Give the bare name ``kernels`` back to the PyPI package of that name.

    This folder is installed as ``moelens.kernels``. Python started in a source checkout
    (``python -m ...`` from its root) sees the folder as a top-level ``kernels``, which shadows the
    PyPI package ``kernels`` that transformers >= 5.25 imports. Imported under the bare name, this
    module loads the real package from the rest of ``sys.path`` and puts it in ``sys.modules``
    (the import statement then returns it). Without that package nothing changes.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rest = [entry for entry in sys.path if os.path.abspath(entry or os.getcwd()) != root]
    spec = machinery.PathFinder.find_spec(__name__, rest)
    if spec is None or spec.loader is None:  # no such package: the folder answers, as it always did
        return
    module = util.module_from_spec(spec)
    sys.modules[__name__] = module
    spec.loader.exec_module(module)


if __name__ == "kernels":
    _hand_back_the_name()

__all__ = [
    "RULES",
    "HostRecords",
    "RecordBuffer",
    "RouteRecords",
    "Selection",
    "StatsAccumulator",
    "StatsTables",
    "choose_backend",
    "route_records",
    "route_records_torch",
    "select_experts",
    "select_experts_torch",
    "triton_available",
    "update_stats",
    "update_stats_torch",
]

_LAZY = {
    "RULES": "moelens.kernels.select_torch",
    "HostRecords": "moelens.kernels.buffer",
    "RecordBuffer": "moelens.kernels.buffer",
    "RouteRecords": "moelens.kernels.records_torch",
    "Selection": "moelens.kernels.select_torch",
    "StatsAccumulator": "moelens.kernels.stats",
    "StatsTables": "moelens.kernels.stats",
    "choose_backend": "moelens.kernels.backend",
    "route_records": "moelens.kernels.records_triton",
    "route_records_torch": "moelens.kernels.records_torch",
    "select_experts": "moelens.kernels.select_triton",
    "select_experts_torch": "moelens.kernels.select_torch",
    "triton_available": "moelens.kernels.backend",
    "update_stats": "moelens.kernels.stats_triton",
    "update_stats_torch": "moelens.kernels.stats",
}

if TYPE_CHECKING:  # pragma: no cover
    from moelens.kernels.backend import choose_backend, triton_available
    from moelens.kernels.buffer import HostRecords, RecordBuffer
    from moelens.kernels.records_torch import RouteRecords, route_records_torch
    from moelens.kernels.records_triton import route_records
    from moelens.kernels.select_torch import RULES, Selection, select_experts_torch
    from moelens.kernels.select_triton import select_experts
    from moelens.kernels.stats import StatsAccumulator, StatsTables, update_stats_torch
    from moelens.kernels.stats_triton import update_stats


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'moelens.kernels' has no attribute {name!r}") from None
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
