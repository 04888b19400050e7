"""Is the Hugging Face hub reachable, and what names are close to a misspelled one - both without waiting.

Standard library only, so that model loading and dataset reading (two layers that may not import
each other) share it.

Asked for a hub id on a machine without network, transformers and datasets retry for tens of
seconds and print a line per retry. moelens asks first: :func:`hub_offline` is true when
``HF_HUB_OFFLINE`` is set or when the hub's host cannot be connected to within
:data:`PROBE_SECONDS` (one TCP connect, no request sent); then a name that is neither local nor in
the hub cache fails at once, with :func:`did_you_mean` over the embedded model names, local folders
and the hub cache.
"""

from __future__ import annotations

import difflib
import functools
import os
import socket
from pathlib import Path
from typing import Iterable
from urllib.parse import urlparse

__all__ = ["hub_offline", "did_you_mean", "cached_repos", "cached_file", "PROBE_SECONDS"]

PROBE_SECONDS = 2.0
_TRUE = ("1", "true", "yes", "on")


def _env_offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in _TRUE
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"))


@functools.lru_cache(maxsize=4)
def _unreachable(endpoint: str) -> bool:
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS):
            return False
    except OSError:
        return True


def hub_offline() -> bool:
    """True when the hub must not or cannot be reached: ``HF_HUB_OFFLINE`` (or the transformers / datasets
    equivalents) is set, or its host does not accept a connection within :data:`PROBE_SECONDS`."""
    if _env_offline():
        return True
    return _unreachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return home / "hub"


def cached_repos(kind: str = "models") -> list[str]:
    """Repo ids present in the local hub cache (``models--org--name`` folders)."""
    prefix = f"{kind}--"
    try:
        return sorted(p.name[len(prefix):].replace("--", "/") for p in _hub_cache().iterdir()
                      if p.is_dir() and p.name.startswith(prefix))
    except OSError:
        return []


def cached_file(repo_id: str, filename: str, kind: str = "models") -> bool:
    """True when ``filename`` of ``repo_id`` is in the local hub cache (any revision)."""
    folder = _hub_cache() / f"{kind}--{repo_id.replace('/', '--')}" / "snapshots"
    try:
        return any((snapshot / filename).exists() for snapshot in folder.iterdir())
    except OSError:
        return False


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest candidate, or ``""``."""
    pool = sorted(set(candidates))
    close = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    if not close:
        tail = name.rsplit("/", 1)[-1]
        close = difflib.get_close_matches(tail, pool, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
