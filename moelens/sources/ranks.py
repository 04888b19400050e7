"""Multi-rank dumps: finding the files, checking that no rank is missing, keeping replicas once.

Engines write one file per rank (SGLang's recorder ``..._{rank}.pt``, Megatron's
``router_trace_rank{rank}.jsonl``, TensorRT-LLM's ``rank{rank}.safetensors``). Under data or
attention parallelism each rank routes different tokens and all files are kept; under tensor
parallelism every rank routes the same tokens and one copy is kept (``ranks="replicated"``, or
``"auto"`` when every rank's data is identical).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from moelens.errors import ConfigError, DataNotFoundError, MissingRankError

__all__ = ["expand_paths", "rank_of", "check_ranks", "choose_ranks"]


def expand_paths(paths: Sequence[str | os.PathLike], pattern: str, what: str) -> list[Path]:
    """Files given directly, plus those matching ``pattern`` (a glob) in the directories given."""
    out: list[Path] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            found = sorted(p.glob(pattern))
            if not found:
                raise DataNotFoundError(f"no {what} files ({pattern}) in {p}.")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise DataNotFoundError(f"no {what} file or directory at {p}.")
    if not out:
        raise DataNotFoundError(f"no {what} files given.")
    return out


def rank_of(path: Path, regex: str) -> int | None:
    """The rank number in a file name (``regex`` has one group), or None."""
    m = re.search(regex, path.name)
    return int(m.group(1)) if m else None


def check_ranks(files_per_rank: dict[int, int], world_size: int | None, what: str) -> list[int]:
    """The sorted ranks, after checking that every rank ``0 .. world_size - 1`` is there with the
    same number of files (the highest rank + 1 when ``world_size`` is None)."""
    ranks = sorted(files_per_rank)
    if not ranks:
        raise DataNotFoundError(f"no {what} files given.")
    size = world_size if world_size is not None else ranks[-1] + 1
    extra = [r for r in ranks if r >= size]
    if extra:
        raise ConfigError(f"{what}: a file of rank {extra[0]} but --world-size is {size}.")
    missing = [r for r in range(size) if r not in files_per_rank]
    if missing:
        have = ", ".join(str(r) for r in ranks)
        raise MissingRankError(f"{what}: rank {missing[0]} is missing ({len(missing)} of {size} ranks lack files; "
                               f"found ranks {have}); give every rank's file.")
    counts = {files_per_rank[r] for r in ranks}
    if len(counts) > 1:
        most = max(ranks, key=lambda r: files_per_rank[r])
        few = min(ranks, key=lambda r: files_per_rank[r])
        raise MissingRankError(f"{what}: rank {few} has {files_per_rank[few]} dump file(s) but rank {most} has "
                               f"{files_per_rank[most]}; a dump of some rank is missing.")
    return ranks


def choose_ranks(ranks: list[int], mode: str, same: Callable[[int, int], bool]) -> tuple[list[int], str]:
    """The ranks whose data to keep and the mode applied (``distinct`` or ``replicated``)."""
    if mode == "distinct" or len(ranks) == 1:
        return ranks, "distinct" if len(ranks) > 1 else "single"
    if mode == "replicated":
        return ranks[:1], "replicated"
    if all(same(ranks[0], r) for r in ranks[1:]):
        return ranks[:1], "replicated"
    return ranks, "distinct"


def equal_arrays(a: Any, b: Any) -> bool:
    import numpy as np

    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
