"""Decode order: documents as decode streams, ``B`` of them interleaved for batch size ``B``.

Continuous batching as serving engines do it: ``B`` lanes; each lane decodes one document token
by token and, when the document ends, takes the next document in ``doc_id`` order (the lane that
frees first takes it; lowest lane on ties). Step ``s`` runs the next token of every busy lane.
For ``B = 1`` the steps are the tokens in stored ``(doc_id, pos)`` order.

A layer's requests at a step are laid out in a ``[steps, B * k]`` grid, lane-major then slot
(``-1`` where a lane is idle or a slot was dropped); that order is the in-step order the cache
simulators use to break ties (earlier = more recently used: a lane's first choice ranks first).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from moelens.errors import ConfigError

__all__ = ["Schedule", "decode_schedule"]


@dataclass(frozen=True)
class Schedule:
    """Where each token runs: ``step[t]`` and ``lane[t]`` (tokens in the routing's order)."""

    batch: int
    num_steps: int
    step: np.ndarray  # [T] int64
    lane: np.ndarray  # [T] int32

    def by_step(self) -> tuple[np.ndarray, np.ndarray]:
        """``(order, starts)``: token indices sorted by step, and where each step's tokens start."""
        if self.batch == 1:
            return np.arange(len(self.step)), np.arange(len(self.step))
        order = np.argsort(self.step, kind="stable")
        starts = np.searchsorted(self.step[order], np.arange(self.num_steps))
        return order, starts

    def grid(self, experts: np.ndarray) -> np.ndarray:
        """``[steps, batch * k]`` expert ids of one layer's ``experts[T, k]`` in step order (``-1`` = none)."""
        T, k = experts.shape
        if self.batch == 1 and self.num_steps == T and T and self.step[-1] == T - 1:
            return experts
        out = np.full((self.num_steps, self.batch * k), -1, dtype=experts.dtype)
        cols = self.lane[:, None] * k + np.arange(k)
        out[self.step[:, None], cols] = experts
        return out


def decode_schedule(doc_index: np.ndarray, batch: int) -> Schedule:
    """The continuous-batching schedule of tokens whose documents are ``doc_index[T]`` (sorted)."""
    if batch < 1:
        raise ConfigError(f"batch size must be a positive integer, got {batch}.")
    d = np.asarray(doc_index, dtype=np.int64)
    T = len(d)
    if T == 0:
        return Schedule(batch, 0, np.zeros(0, np.int64), np.zeros(0, np.int32))
    if batch == 1:
        return Schedule(1, T, np.arange(T, dtype=np.int64), np.zeros(T, np.int32))
    starts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
    lengths = np.diff(np.r_[starts, T])
    doc_start = np.empty(len(starts), np.int64)
    doc_lane = np.empty(len(starts), np.int32)
    free = [(0, lane) for lane in range(batch)]  # (step at which the lane is free, lane)
    for i, n in enumerate(lengths):  # one iteration per document, not per token
        at, lane = heapq.heappop(free)
        doc_start[i], doc_lane[i] = at, lane
        heapq.heappush(free, (at + int(n), lane))
    which = np.repeat(np.arange(len(starts)), lengths)
    offset = np.arange(T, dtype=np.int64) - np.repeat(starts, lengths)
    step = doc_start[which] + offset
    return Schedule(batch, int(step.max()) + 1, step, doc_lane[which])
