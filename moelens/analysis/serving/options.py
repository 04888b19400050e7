"""Options of the serving what-ifs (a frozen dataclass, validated on construction, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from moelens.errors import ConfigError, option

__all__ = ["ServingOptions", "SECTIONS"]

SECTIONS = ("placement", "capacity", "cache", "prefetch", "coverage")


MAX_COUNT = 1 << 30  # GPUs, experts, tokens or documents per batch: beyond this a value is a typo


def _ints(name: str, values, minimum: int = 1) -> tuple[int, ...]:
    out = tuple(int(v) for v in values)
    if not out or any(not minimum <= v <= MAX_COUNT for v in out):
        raise ConfigError(f"{option(name)} must be integers from {minimum} to {MAX_COUNT:,}, got {values!r}.")
    return out


def _count(name: str, value, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_COUNT:
        raise ConfigError(f"{option(name)} must be an integer from {minimum} to {MAX_COUNT:,}, got {value!r}.")


@dataclass(frozen=True)
class ServingOptions:
    """What :func:`~moelens.analysis.serving.serving_report` simulates.

    Attributes:
        ep: expert-parallel sizes (GPUs) to place experts on.
        replicas: redundant experts per layer to try for every EP size (default: 0 and one per GPU).
        num_groups, num_nodes: expert groups and server nodes of EPLB's hierarchical policy (it is
            used when ``num_nodes`` divides ``num_groups``; the global policy otherwise).
        fit_on, eval_on: traffic the placement is fitted on and evaluated on (see
            :mod:`~moelens.analysis.serving.placement`); default: all of it for both.
        capacity_factors: capacity factors to simulate drops at.
        capacity_tokens: tokens per batch that shares one capacity (one or more sizes).
        cache_sizes: experts per layer held on the GPU (default: ``2k, E/4, E/2``, at most ``E``).
        cache_batch: decode batch size of the cache simulation (documents decoded together).
        batch_sizes: decode batch sizes for the distinct-experts-per-step coverage.
        expert_bytes: bytes of one expert's weights (default: from the model's config and dtype).
        layers: decoder-layer indices (default: every traced MoE layer).
        sections: which of placement, capacity, cache, prefetch, coverage to run.
        workers: processes for the per-layer pass (default: 2 on Linux for large runs).
    """

    ep: tuple[int, ...] = (8, 16, 32)
    replicas: tuple[int, ...] | None = None
    num_groups: int = 1
    num_nodes: int = 1
    fit_on: str | None = None
    eval_on: str | None = None
    capacity_factors: tuple[float, ...] = (1.0, 1.25, 2.0)
    capacity_tokens: tuple[int, ...] = (4096,)
    cache_sizes: tuple[int, ...] | None = None
    cache_batch: int = 1
    batch_sizes: tuple[int, ...] = (1, 8, 32, 128)
    expert_bytes: int | None = None
    layers: tuple[int, ...] | None = None
    sections: tuple[str, ...] = SECTIONS
    workers: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ep", _ints("ep", self.ep))
        if self.replicas is not None:
            object.__setattr__(self, "replicas", _ints("replicas", self.replicas, 0))
        _count("num_groups", self.num_groups)
        _count("num_nodes", self.num_nodes)
        cfs = tuple(float(c) for c in self.capacity_factors)
        if not cfs or any(not 0 < c < float("inf") for c in cfs):
            raise ConfigError(f"capacity factors ({option('capacity_factors')}) must be positive and finite, got"
                              f" {self.capacity_factors!r}.")
        object.__setattr__(self, "capacity_factors", cfs)
        object.__setattr__(self, "capacity_tokens", _ints("capacity_tokens", self.capacity_tokens))
        if self.cache_sizes is not None:
            object.__setattr__(self, "cache_sizes", _ints("cache_sizes", self.cache_sizes))
        _count("cache_batch", self.cache_batch)
        object.__setattr__(self, "batch_sizes", _ints("batch_sizes", self.batch_sizes))
        if self.expert_bytes is not None and (not isinstance(self.expert_bytes, int) or self.expert_bytes <= 0):
            raise ConfigError(f"{option('expert_bytes')} must be a positive integer, got {self.expert_bytes}.")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(sorted({int(x) for x in self.layers})))
        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown:
            raise ConfigError(f"unknown section {unknown[0]!r}; sections: {', '.join(SECTIONS)}.")
        object.__setattr__(self, "sections", tuple(self.sections))
        if self.workers is not None and (not isinstance(self.workers, int) or not 1 <= self.workers <= 64):
            raise ConfigError(f"{option('workers')} must be an integer from 1 to 64, got {self.workers}.")
