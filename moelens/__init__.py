"""moelens: capture, store and analyse the routing decisions of Mixture-of-Experts models.

Importing the package is cheap and has no side effects: torch, transformers, duckdb and triton
load only when a function that needs them is called.

    >>> import moelens
    >>> with moelens.capture(model) as cap:          # doctest: +SKIP
    ...     model(**inputs)
    >>> cap.routes()                                  # doctest: +SKIP
    >>> moelens.trace("moelens-mini", "eval.jsonl", out="runs.duckdb")  # doctest: +SKIP
    >>> db = moelens.open("runs.duckdb")              # doctest: +SKIP
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from moelens._version import __version__

__all__ = [
    "__version__",
    "capture",
    "intervene",
    "trace",
    "open",
    "TraceConfig",
    "load_model",
    "supported_families",
    "errors",
]

# public name -> (module, attribute); resolved on first access
_LAZY = {
    "capture": ("moelens.capturing", "capture"),
    "intervene": ("moelens.interventions.core", "intervene"),
    "trace": ("moelens.tracing", "trace"),
    "open": ("moelens.viz.notebook", "open"),
    "TraceConfig": ("moelens.config", "TraceConfig"),
    "load_model": ("moelens.models.loading", "load_model"),
    "supported_families": ("moelens.models.families", "supported_families"),
    "errors": ("moelens.errors", None),
}

if TYPE_CHECKING:  # pragma: no cover
    from moelens import errors
    from moelens.viz.notebook import open
    from moelens.capturing import capture
    from moelens.interventions.core import intervene
    from moelens.config import TraceConfig
    from moelens.models.families import supported_families
    from moelens.models.loading import load_model
    from moelens.tracing import trace


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'moelens' has no attribute {name!r}") from None
    module = import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
