"""Options of the analyses: frozen dataclasses, validated on construction (no I/O).

Every threshold the suite uses is here with its default, and the same numbers are documented
in ``docs/metrics.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from moelens.errors import ConfigError, option

__all__ = ["LoadOptions", "SpecializationOptions", "VocabularyOptions", "ReportOptions"]


MAX_DEVICES = 1 << 16
MAX_BOOTSTRAP = 100_000
MAX_WORKERS = 64
MAX_TOP = 1_000_000


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(name: str, value: object) -> None:
    _check(_is_int(value) and value >= 1, f"{option(name)} must be a positive integer, got {value!r}.")  # type: ignore[operator]


def _number(name: str, value: object, ok: bool, what: str) -> None:
    _check(isinstance(value, (int, float)) and not isinstance(value, bool) and ok,
           f"{option(name)} must be {what}, got {value!r}.")


def _seed(value: object) -> None:
    _check(_is_int(value) and 0 <= value < 2 ** 63, f"{option('seed')} must be a non-negative integer, got {value!r}.")  # type: ignore[operator]


@dataclass(frozen=True)
class LoadOptions:
    """Load, dead-expert and collapse thresholds.

    Attributes:
        dead_threshold: an expert is dead at a layer when its utilization (load / uniform load)
            is below this (0.1 = it receives less than 10 % of a fair share).
        collapse_effective: a layer is collapsed when ``exp(H) / E`` is below this.
        collapse_dead: a layer is collapsed when at least this fraction of its experts is dead.
        devices: expert-parallel sizes for which balancedness is computed (at most the number of
            experts of the run analysed).
    """

    dead_threshold: float = 0.1
    collapse_effective: float = 0.3
    collapse_dead: float = 0.5
    devices: tuple[int, ...] = (8,)

    def __post_init__(self) -> None:
        _number("dead_threshold", self.dead_threshold, 0 <= self.dead_threshold < 1, "in [0, 1)")
        _number("collapse_effective", self.collapse_effective, 0 < self.collapse_effective <= 1, "in (0, 1]")
        _number("collapse_dead", self.collapse_dead, 0 < self.collapse_dead <= 1, "in (0, 1]")
        devices = tuple(self.devices)
        _check(all(_is_int(d) and 1 <= d <= MAX_DEVICES for d in devices) and devices,
               f"{option('devices')} must be integers from 1 to {MAX_DEVICES:,}, got {', '.join(map(str, devices)) or 'none'}.")
        object.__setattr__(self, "devices", tuple(int(d) for d in devices))


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
        min_share_ratio: reported only when the expert takes at least this multiple of the
            uniform share ``k/E`` of the value's tokens (a support floor: a lift of 15 on 0.3 %
            of a language's tokens is not a specialist).
        min_utilization: an expert whose load at the layer is below this fraction of a fair
            share (load / (routed choices / E), as in :class:`LoadOptions`) is dead or near-dead
            there: its cells are not tested (``state = "untested"``), whatever its lift.
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
    min_share_ratio: float = 0.5
    min_utilization: float = 0.2
    max_values: int = 64
    max_units: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        _check(_is_int(self.bootstrap) and 20 <= self.bootstrap <= MAX_BOOTSTRAP,
               f"{option('bootstrap')} needs at least 20 replicates (at most {MAX_BOOTSTRAP:,}), got {self.bootstrap}.")
        _number("confidence", self.confidence, 0.5 <= self.confidence < 1, "in [0.5, 1)")
        _number("alpha", self.alpha, 0 < self.alpha < 1, "in (0, 1)")
        _number("min_lift", self.min_lift, 1 <= self.min_lift < math.inf, "a finite number >= 1")
        _number("min_share_ratio", self.min_share_ratio, 0 <= self.min_share_ratio < math.inf, "a finite number >= 0")
        _number("min_utilization", self.min_utilization, 0 <= self.min_utilization < 1, "in [0, 1)")
        for name in ("min_tokens", "min_docs", "min_count", "max_values", "max_units"):
            _positive(name, getattr(self, name))
        _seed(self.seed)


@dataclass(frozen=True)
class VocabularyOptions:
    """Attributes:
        min_count: the *filtered* convention leaves out token ids seen fewer times (10, as the
            ``len >= 10`` filter of OLMoE's released script); the *paper* convention
            (``paper_*`` columns) averages over every token id, as OLMoE §5.4's figures do.
        top_tokens: characteristic tokens listed per expert.
        min_pair_count: a (token, expert) pair needs this many co-occurrences to be listed.
        seed: seed of the shuffled baseline.
    """

    min_count: int = 10
    top_tokens: int = 10
    min_pair_count: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("min_count", "top_tokens", "min_pair_count"):
            _positive(name, getattr(self, name))
        _seed(self.seed)


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
        coactivation_min_count: the strongest co-activated pair of a layer is chosen among
            experts with at least this many tokens (per-token and stats runs alike).
        repeat_labels: document labels whose values get their own consecutive-token repeat rates
            (Mixtral Table 5 per subset; default: the labels tested for specialization).
    """

    layers: tuple[int, ...] | None = None
    labels: tuple[str, ...] | None = None
    top: int = 5
    confidence_section: bool = True
    workers: int | None = None
    coactivation_min_count: int = 100
    repeat_labels: tuple[str, ...] | None = None
    load: LoadOptions = field(default_factory=LoadOptions)
    specialization: SpecializationOptions = field(default_factory=SpecializationOptions)
    vocabulary: VocabularyOptions = field(default_factory=VocabularyOptions)

    def __post_init__(self) -> None:
        _check(_is_int(self.top) and 1 <= self.top <= MAX_TOP,
               f"{option('top')} must be an integer from 1 to {MAX_TOP:,}, got {self.top!r}.")
        if self.workers is not None:
            _check(_is_int(self.workers) and 1 <= self.workers <= MAX_WORKERS,
                   f"{option('workers')} must be an integer from 1 to {MAX_WORKERS}, got {self.workers!r}.")
        _check(_is_int(self.coactivation_min_count) and self.coactivation_min_count >= 0,
               f"{option('coactivation_min_count')} must be a non-negative integer, got {self.coactivation_min_count!r}.")
        if self.layers is not None:
            _check(all(_is_int(x) for x in self.layers), f"{option('layers')} must be integers, got {self.layers!r}.")
            object.__setattr__(self, "layers", tuple(sorted({int(x) for x in self.layers})))
            _check(bool(self.layers), f"{option('layers')} is empty; give at least one layer or leave it out.")
        for name in ("labels", "repeat_labels"):
            value = getattr(self, name)
            if value is not None:
                _check(not isinstance(value, str), f"{option(name)} must be a list of label names, not one string.")
                object.__setattr__(self, name, tuple(str(x) for x in value))
