"""Options of the serving what-ifs (a frozen dataclass, validated on construction, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from moelens.errors import ConfigError

__all__ = ["ServingOptions", "SECTIONS"]

SECTIONS = ("placement", "capacity", "cache", "prefetch", "coverage")


def _ints(name: str, values, minimum: int = 1) -> tuple[int, ...]:
    out = tuple(int(v) for v in values)
    if not out or any(v < minimum for v in out):
        raise ConfigError(f"{name} must be integers >= {minimum}, got {values!r}.")
    return out


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
        if self.num_groups < 1 or self.num_nodes < 1:
            raise ConfigError("num_groups and num_nodes must be positive integers.")
        cfs = tuple(float(c) for c in self.capacity_factors)
        if not cfs or any(not c > 0 for c in cfs):
            raise ConfigError(f"capacity factors must be positive, got {self.capacity_factors!r}.")
        object.__setattr__(self, "capacity_factors", cfs)
        object.__setattr__(self, "capacity_tokens", _ints("capacity_tokens", self.capacity_tokens))
        if self.cache_sizes is not None:
            object.__setattr__(self, "cache_sizes", _ints("cache sizes", self.cache_sizes))
        if self.cache_batch < 1:
            raise ConfigError(f"cache_batch must be a positive integer, got {self.cache_batch}.")
        object.__setattr__(self, "batch_sizes", _ints("batch sizes", self.batch_sizes))
        if self.expert_bytes is not None and self.expert_bytes <= 0:
            raise ConfigError(f"expert_bytes must be positive, got {self.expert_bytes}.")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(sorted({int(x) for x in self.layers})))
        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown:
            raise ConfigError(f"unknown section {unknown[0]!r}; sections: {', '.join(SECTIONS)}.")
        object.__setattr__(self, "sections", tuple(self.sections))
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be a positive integer, got {self.workers}.")
