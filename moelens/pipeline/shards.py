"""Data-parallel tracing: which share of the documents a process traces, and where its shard goes.

Under ``torchrun --nproc-per-node N -m moelens trace ...`` every process reads its rank from the
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and traces the documents with
``doc_id % N == RANK`` into its own shard file beside ``--out``; after a barrier (gloo), rank 0
merges the shards into ``--out`` (:class:`moelens.sources.merge.MergeSource`). ``--shard I/N``
does the same for one process without torchrun. Each shard is an ordinary database, resumable on
its own.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["shard_path", "find_shards", "Distributed", "from_environment"]

_SHARD = re.compile(r"\.shard-(\d+)-of-(\d+)$")


def shard_path(out: str, index: int, count: int) -> str:
    """``runs.duckdb`` -> ``runs.shard-0-of-2.duckdb`` (beside it)."""
    path = Path(out)
    return str(path.with_name(f"{path.stem}.shard-{index}-of-{count}{path.suffix}"))


def find_shards(out: str) -> list[str]:
    """The shard files beside ``out`` (``runs.shard-*-of-*.duckdb``), sorted by index."""
    path = Path(out)
    found = []
    for candidate in path.parent.glob(f"{path.stem}.shard-*-of-*{path.suffix}"):
        match = _SHARD.search(candidate.name[: len(candidate.name) - len(path.suffix)] if path.suffix
                              else candidate.name)
        if match:
            found.append((int(match.group(1)), int(match.group(2)), str(candidate)))
    return [p for _, _, p in sorted(found)]


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int

    def barrier(self) -> None:
        """Wait for every rank (gloo: works whatever the devices; the group is made on first use)."""
        import datetime

        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=datetime.timedelta(hours=12))
        dist.barrier()

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def from_environment() -> Distributed | None:
    """The torchrun rank of this process, or None outside a multi-process job."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        return None
    return Distributed(rank, world, local) if world > 1 else None
