"""The data types that pass between the stages of the trace pipeline.

Host-side types only (numpy arrays, no tensors): what a collector hands over after one forward
(:class:`RouteRows` or :class:`AggregateRows`), the pieces a capture mode keeps per document
(:class:`RoutePiece`), and what a source declares about the run it produces (:class:`RunSpec`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["HostStep", "HostRoute", "RouteRows", "AggregateRows", "RoutePiece", "RunSpec", "TraceSummary"]


@dataclass
class HostStep:
    """One forward of a layer stack, on the host: which rows were real tokens, at which positions."""

    step: int
    stack: str
    batch: int
    seq: int
    past: int
    valid: np.ndarray  # [batch * seq] bool
    positions: np.ndarray  # [batch * seq] int64
    input_ids: np.ndarray | None  # [batch * seq] int64

    @property
    def phase(self) -> str:
        return "prefill" if self.past == 0 else "decode"


@dataclass
class HostRoute:
    """One router call on the host, restricted to the real tokens of its step."""

    site: int
    step: int
    rows: np.ndarray  # [n] row index in the step's flattened batch (valid rows only)
    experts: np.ndarray  # [n, k] int16, -1 = dropped / skipped
    weights: np.ndarray  # [n, k] float32
    logits: np.ndarray | None  # [n, E'] float32
    confidence: np.ndarray | None = None  # [n, 3] float32: entropy, margin, lse (kernels path)


@dataclass
class RouteRows:
    """What a routes collector hands over for one batch: its steps and every router call."""

    steps: list[HostStep]
    routes: list[HostRoute]


@dataclass
class AggregateRows:
    """What the stats collector hands over when asked to flush: partial sums since the last flush,
    as rows of the store's ``_stats_*`` tables (``tables`` is None between flushes)."""

    tables: dict[str, Any] | None = None


@dataclass
class RoutePiece:
    """The routes of one router site for some tokens of one document (positions absolute)."""

    pos: np.ndarray  # [n] int32
    site: int
    experts: np.ndarray  # [n, k] int16
    weights: np.ndarray  # [n, k] float32
    logits: np.ndarray | None = None  # [n, width] float32 (NaN-padded to the run's width)
    confidence: np.ndarray | None = None  # [n, 3] float32


@dataclass(frozen=True)
class RunSpec:
    """What a source declares about the run it writes: the arguments of ``Store.create_run``."""

    model: str
    dataset: str
    dtype: str
    revision: str | None
    plan_meta: dict[str, Any]
    config: dict[str, Any]
    table_k: int
    logits_width: int | None = None
    confidence: bool = False
    weights: bool = True  # the source records gate weights (engines usually do not: routes.weight is NULL)


@dataclass
class TraceSummary:
    run_id: str
    out: str
    documents: int = 0  # documents written by this call
    skipped: int = 0  # empty / whitespace-only documents (recorded with n_tokens = 0)
    tokens: int = 0
    routes: int = 0
    seconds: float = 0.0
    resumed: int = 0  # documents already committed before this call
    status: str = "complete"
    notes: list[str] = field(default_factory=list)
