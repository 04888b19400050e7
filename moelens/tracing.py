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
from moelens.errors import ConfigError
from moelens.pipeline.types import TraceSummary

__all__ = ["trace", "merge", "TraceSummary", "default_run_id"]


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
    from moelens.pipeline.shards import from_environment, shard_path
    from moelens.pipeline.transformers_source import TransformersSource

    merge_shards = options.pop("merge_shards", True)
    if config is None:
        config = TraceConfig(model=model, data=data, out=out, **options)
    job = from_environment()
    if job is not None:  # torchrun: this process traces its rank's share
        if config.shard not in (None, (job.rank, job.world_size)):
            raise ConfigError(f"--shard {config.shard[0]}/{config.shard[1]} conflicts with torchrun's RANK"
                              f" {job.rank} of WORLD_SIZE {job.world_size}; drop --shard under torchrun.")
        config = config.replace(shard=(job.rank, job.world_size), device=_rank_device(config.device, job.local_rank))
    run_id = config.run_id or default_run_id(config.model, config.data)
    out = config.out if config.shard is None else shard_path(config.out, *config.shard)
    summary = run_source(TransformersSource(config), out, run_id=run_id, identity=config.identity(),
                         overwrite=config.overwrite, progress=config.progress)
    if job is not None:
        job.barrier()  # every shard is complete (or this rank's job failed and torchrun stops the others)
        if job.rank == 0 and merge_shards:
            paths = [shard_path(config.out, i, job.world_size) for i in range(job.world_size)]
            merged = merge(paths, config.out, run_id=run_id, progress=config.progress)
            summary.notes.append(f"rank 0 merged {job.world_size} shards into {config.out}"
                                 f" ({merged.documents} documents, {merged.seconds:.1f}s)")
        job.close()
    return summary


def merge(shards: list[str], out: str, *, run_id: str | None = None, progress: bool = True) -> TraceSummary:
    """Merge the shard databases of one data-parallel trace into run ``run_id`` of ``out`` (resumable).

    Raises :class:`~moelens.sources.merge.ShardMismatchError` (one line) when the shards do not form
    one complete run: missing or repeated shard indices, other options, an unfinished shard.
    """
    from moelens.pipeline.run import run_source
    from moelens.sources.merge import MergeSource

    source = MergeSource(list(shards), run_id)
    try:
        source.prepare()  # every check, before the output is created
        return run_source(source, out, run_id=source.merged_run_id, identity=source.identity, progress=progress)
    finally:
        source.close()


def _rank_device(device: str, local_rank: int) -> str:
    if device != "auto":
        return device
    import torch

    return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
