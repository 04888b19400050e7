"""Slow, obviously-correct simulators: one Python step at a time, the specification the fast paths are tested against.

Each takes a layer's decode steps as a list of lists of expert ids (the step's distinct experts
in in-step order) and returns per-request hit flags, or, for capacity, the dropped assignments.
"""

from __future__ import annotations

import math

__all__ = ["lru_hits", "lfu_hits", "belady_hits", "capacity_drops"]


def lru_hits(steps: list[list[int]], capacity: int) -> list[bool]:
    recency: list[int] = []  # most recent first
    hits = []
    for req in steps:
        cache = set(recency[:capacity])
        hits += [e in cache for e in req]
        recency = list(req) + [e for e in recency if e not in req]
    return hits


def lfu_hits(steps: list[list[int]], capacity: int) -> list[bool]:
    count: dict[int, int] = {}
    last: dict[int, tuple[int, int]] = {}  # (step, -position in step): larger = more recent
    hits = []
    for s, req in enumerate(steps):
        ranked = sorted(count, key=lambda e: (-count[e], (-last[e][0], -last[e][1])))
        cache = set(ranked[:capacity])
        hits += [e in cache for e in req]
        for i, e in enumerate(req):
            count[e] = count.get(e, 0) + 1
            last[e] = (s, -i)
    return hits


def belady_hits(steps: list[list[int]], capacity: int) -> list[bool]:
    def next_use(e: int, after: int) -> float:
        for t in range(after + 1, len(steps)):
            if e in steps[t]:
                return t
        return math.inf

    cache: set[int] = set()
    hits = []
    for s, req in enumerate(steps):
        hits += [e in cache for e in req]
        candidates = sorted(cache | set(req), key=lambda e: (next_use(e, s), e))
        cache = set(candidates[:capacity])
    return hits


def capacity_drops(experts: list[list[int]], scores: list[list[float]] | None, num_experts: int,
                   capacity_factor: float, batch_tokens: int, policy: str) -> set[tuple[int, int]]:
    """``{(token, slot)}`` dropped when each batch of ``batch_tokens`` consecutive tokens gives every
    expert ``ceil(CF * T_batch * k / E)`` places, filled in priority order: ``position`` = slot, then
    token (GShard, Switch); ``score`` = gate score, highest first, then token and slot."""
    dropped = set()
    k = len(experts[0]) if experts else 0
    for lo in range(0, len(experts), batch_tokens):
        batch = range(lo, min(len(experts), lo + batch_tokens))
        cap = math.ceil(capacity_factor * len(batch) * k / num_experts)
        cells = [(t, r) for t in batch for r in range(k) if experts[t][r] >= 0]
        if policy == "position":
            cells.sort(key=lambda c: (c[1], c[0]))
        else:
            cells.sort(key=lambda c: (-scores[c[0]][c[1]], c[0], c[1]))
        used: dict[int, int] = {}
        for t, r in cells:
            e = experts[t][r]
            used[e] = used.get(e, 0) + 1
            if used[e] > cap:
                dropped.add((t, r))
    return dropped
