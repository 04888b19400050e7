"""Options of the analyses: frozen dataclasses, validated on construction (no I/O).

Every threshold the suite uses is here with its default, and the same numbers are documented
in ``docs/metrics.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from moelens.errors import ConfigError

__all__ = ["LoadOptions", "SpecializationOptions", "VocabularyOptions", "ReportOptions"]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class LoadOptions:
    """Load, dead-expert and collapse thresholds.

    Attributes:
        dead_threshold: an expert is dead at a layer when its utilization (load / uniform load)
            is below this (0.1 = it receives less than 10 % of a fair share).
        collapse_effective: a layer is collapsed when ``exp(H) / E`` is below this.
        collapse_dead: a layer is collapsed when at least this fraction of its experts is dead.
        devices: expert-parallel sizes for which balancedness is computed.
    """

    dead_threshold: float = 0.1
    collapse_effective: float = 0.3
    collapse_dead: float = 0.5
    devices: tuple[int, ...] = (8,)

    def __post_init__(self) -> None:
        _check(0 <= self.dead_threshold < 1, f"dead_threshold must be in [0, 1), got {self.dead_threshold}.")
        _check(0 < self.collapse_effective <= 1, f"collapse_effective must be in (0, 1], got {self.collapse_effective}.")
        _check(0 < self.collapse_dead <= 1, f"collapse_dead must be in (0, 1], got {self.collapse_dead}.")
        object.__setattr__(self, "devices", tuple(int(d) for d in self.devices))
        _check(all(d >= 1 for d in self.devices), f"devices must be positive integers, got {self.devices}.")


@dataclass(frozen=True)
class SpecializationOptions:
    """Bootstrap and significance settings of :func:`moelens.analysis.specialization.specialization`.

    Attributes:
        bootstrap: replicates, resampling documents with replacement.
        confidence: level of the percentile interval reported as ``ci_low`` / ``ci_high``.
        alpha: false-discovery rate (Benjamini-Hochberg) over all (layer, value, expert) tests
            of one label.
        min_lift: smallest lift reported as specialization (an effect-size floor: with a
            million tokens a lift of 1.02 can be "significant" and still mean nothing).
        min_tokens / min_docs / min_count: a (layer, value, expert) is tested only when the
            value has at least ``min_tokens`` tokens in at least ``min_docs`` documents, and
            reported only when the expert got at least ``min_count`` of them.
        max_values: test at most this many values of a label (the most frequent); the rest
            still count in the expert's overall share.
        max_units: bootstrap units; with more documents than this, consecutive documents are
            pooled into this many blocks (a block bootstrap over documents).
        seed: random seed of the resampling (results are deterministic).
    """

    bootstrap: int = 200
    confidence: float = 0.95
    alpha: float = 0.01
    min_lift: float = 1.25
    min_tokens: int = 20
    min_docs: int = 5
    min_count: int = 5
    max_values: int = 64
    max_units: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.bootstrap >= 20, f"bootstrap needs at least 20 replicates, got {self.bootstrap}.")
        _check(0.5 <= self.confidence < 1, f"confidence must be in [0.5, 1), got {self.confidence}.")
        _check(0 < self.alpha < 1, f"alpha must be in (0, 1), got {self.alpha}.")
        _check(self.min_lift >= 1, f"min_lift must be >= 1, got {self.min_lift}.")
        for name in ("min_tokens", "min_docs", "min_count", "max_values", "max_units"):
            _check(int(getattr(self, name)) >= 1, f"{name} must be a positive integer.")


@dataclass(frozen=True)
class VocabularyOptions:
    """Attributes:
        min_count: token ids with fewer occurrences are left out (OLMoE uses 10).
        top_tokens: characteristic tokens listed per expert.
        min_pair_count: a (token, expert) pair needs this many co-occurrences to be listed.
        seed: seed of the shuffled baseline.
    """

    min_count: int = 10
    top_tokens: int = 10
    min_pair_count: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.min_count >= 1 and self.top_tokens >= 1 and self.min_pair_count >= 1,
               "vocabulary counts must be positive integers.")


@dataclass(frozen=True)
class ReportOptions:
    """What ``moelens report`` computes.

    Attributes:
        layers: decoder-layer indices (default: every traced MoE layer).
        labels: labels to test for specialization (default: every label present with 2 to
            ``specialization.max_values`` values: domain, language, source, meta keys, position).
        top: rows per (label, value) kept in the report's specialization lists (strongest lift first).
        confidence_section: include router confidence when the run stored logits.
        workers: processes for the per-layer pass (default: 2 on Linux for runs of 4 M routes
            or more, else 1); results do not depend on it.
    """

    layers: tuple[int, ...] | None = None
    labels: tuple[str, ...] | None = None
    top: int = 5
    confidence_section: bool = True
    workers: int | None = None
    load: LoadOptions = field(default_factory=LoadOptions)
    specialization: SpecializationOptions = field(default_factory=SpecializationOptions)
    vocabulary: VocabularyOptions = field(default_factory=VocabularyOptions)

    def __post_init__(self) -> None:
        _check(self.top >= 1, f"top must be a positive integer, got {self.top}.")
        _check(self.workers is None or self.workers >= 1, f"workers must be a positive integer, got {self.workers}.")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(sorted({int(x) for x in self.layers})))
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))
