"""``moelens.trace``: run a model over a dataset and store every routing decision in DuckDB.

The entry point of the trace pipeline (:mod:`moelens.pipeline`): a
:class:`~moelens.pipeline.transformers_source.TransformersSource` feeds
:func:`~moelens.pipeline.run.run_source`, which owns the database side (resume, the writer thread,
the run's status). Bad input raises a typed error before the database is touched; re-running the
same call resumes after the last committed document.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from moelens.config import TraceConfig
from moelens.pipeline.types import TraceSummary

__all__ = ["trace", "TraceSummary", "default_run_id"]


def default_run_id(model: str, data: str) -> str:
    """``<model>:<data>`` from the last path parts, without the data file's suffix."""
    def stem(x: str) -> str:
        name = Path(x.rstrip("/")).name or x
        return re.sub(r"\.(jsonl|json|csv|parquet|txt)$", "", name)
    return f"{stem(model)}:{stem(data)}"


def trace(model: str | None = None, data: str | None = None, out: str | None = None, *,
          config: TraceConfig | None = None, **options: Any) -> TraceSummary:
    """Trace ``model`` over ``data`` into the DuckDB file ``out``.

    Either pass a :class:`TraceConfig` or the same fields as keyword arguments::

        moelens.trace("moelens-mini", "eval.jsonl", out="runs.duckdb", max_docs=100)

    Returns a :class:`TraceSummary`. Raises typed :class:`~moelens.errors.MoelensError`s for bad
    input, before anything is written. ``KeyboardInterrupt`` leaves every committed document in
    place (the run's status becomes ``interrupted``) and is re-raised.
    """
    from moelens.pipeline.run import run_source
    from moelens.pipeline.transformers_source import TransformersSource

    if config is None:
        config = TraceConfig(model=model, data=data, out=out, **options)
    return run_source(TransformersSource(config), config.out,
                      run_id=config.run_id or default_run_id(config.model, config.data),
                      identity=config.identity(), overwrite=config.overwrite, progress=config.progress)
