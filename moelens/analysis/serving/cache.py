"""Expert-cache simulation for offloading: hit rate versus cache size under LRU, LFU and Belady.

Model (per MoE layer, in decode order - :mod:`~moelens.analysis.serving.schedule`): a GPU holds a
cache of ``C`` of the layer's ``E`` experts. At each decode step the layer needs the distinct
experts its tokens were routed to (its *requests*); a request is a **hit** when the expert was in
the cache at the end of the previous step, otherwise its weights are copied to the GPU (``bytes
moved = misses x expert size``). Every policy sees the whole step at once (the router has run),
so a step's own requests never evict each other. Policies:

* **LRU** - the cache holds the ``C`` most recently requested experts (every miss is inserted).
  Ties within a step go to the step's in-step order (a lane's first choice counts as the most
  recent). A stack algorithm: one pass gives every ``C`` at once. Computed here with array
  operations: the LRU rank of a request is ``1 + |experts requested strictly between the expert's
  previous request and now|`` (plus the experts ahead of it in its previous step), a range-OR of
  per-step bitmasks (a sparse table built level by level) and a popcount.
* **LFU** - the cache holds the ``C`` experts requested in the most steps so far, ties to the more
  recently used; an expert is admitted when it overtakes the least frequent cached one (a
  newly missed expert that is not frequent enough is used from its staging copy and not kept).
  Also a stack algorithm (one pass, every ``C``), run by a compiled kernel.
* **Belady** - the offline optimum with bypass: after each step the cache keeps, among the
  experts it held and those just requested, the ``C`` whose next request is soonest. No policy,
  online or not, hits more often, so it bounds the other two. One kernel pass per ``C``.

The first request of each expert is a compulsory miss under every policy; ``hit_rate_warm`` leaves
those out (it is 1 for ``C = E``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moelens.analysis.serving import _kernels
from moelens.analysis.serving._kernels import NEVER, belady_hits, lfu_ranks

__all__ = ["Requests", "requests", "lru_ranks", "hits_by_size", "POLICIES"]

POLICIES = ("lru", "lfu", "belady")


@dataclass
class Requests:
    """One layer's requests in step order: the distinct experts of each step, in in-step order.

    Bitmasks are stored one 64-expert word per row (``[words, n]``) so that every pass over them
    is a contiguous 1-D array operation.
    """

    num_experts: int
    num_steps: int
    step: np.ndarray  # [n] int32, non-decreasing
    expert: np.ndarray  # [n] int32
    ahead: np.ndarray | None  # [words, n] uint64: experts before this one in its step (more recently used)
    step_masks: np.ndarray | None  # [words, steps] uint64: experts requested at each step
    prev: np.ndarray  # [n] int32 index of the same expert's previous request (-1: none)
    next_step: np.ndarray  # [n] step of the same expert's next request (NEVER: none)

    @property
    def count(self) -> int:
        return int(self.step.shape[0])

    @property
    def compulsory(self) -> int:
        if not hasattr(self, "_compulsory"):
            self._compulsory = int((self.prev < 0).sum())
        return self._compulsory


def _bit_tables(num_experts: int) -> list[np.ndarray]:
    """Per 64-expert word, the bit of each id read as uint16 (so -1 -> 65535 -> no bit)."""
    ids = np.arange(num_experts)
    tables = []
    for w in range(max(1, -(-num_experts // 64))):
        table = np.zeros(1 << 16, np.uint64)
        mine = ids[(ids >> 6) == w]
        table[mine] = np.left_shift(np.uint64(1), (mine & 63).astype(np.uint64))
        tables.append(table)
    return tables


def requests(grid: np.ndarray, num_experts: int, vectorized: bool | None = None, ws=None) -> Requests:
    """The requests of a ``[steps, width]`` grid of expert ids (``-1`` = none; repeats within a step collapse).

    With numba installed (``vectorized=None``) a compiled loop lists them; otherwise (or with
    ``vectorized=True``) array operations do, and also build the bitmasks the array-only LRU needs.
    """
    if not (vectorized if vectorized is not None else not _kernels.compiled()):
        step, expert, prev, next_step = _kernels.request_list(grid, num_experts, ws)
        return Requests(int(num_experts), int(grid.shape[0]), step, expert, None, None, prev, next_step)
    S, W = grid.shape
    E = int(num_experts)
    tables = _bit_tables(E)
    words = len(tables)
    ids = np.ascontiguousarray(grid, dtype=np.int16).view(np.uint16)
    running = np.zeros((words, S), np.uint64)
    first = np.ones((S, W), bool)
    ahead_cols = []
    bits = np.empty(S, np.uint64)
    for c in range(W):
        col = np.ascontiguousarray(ids[:, c])
        fresh = np.zeros(S, bool)
        ahead_cols.append(running.copy())
        for w, table in enumerate(tables):
            np.take(table, col, out=bits)
            fresh |= (bits != 0) & ((running[w] & bits) == 0)
            running[w] |= bits
        first[:, c] = fresh
    if first.all():  # every cell a distinct expert (the usual case at batch 1): requests in row-major order
        n = S * W
        step = np.repeat(np.arange(S, dtype=np.int64), W)
        expert = grid.reshape(-1).astype(np.int64)
        ahead = np.empty((words, n), np.uint64)
        for c in range(W):
            ahead.reshape(words, S, W)[:, :, c] = ahead_cols[c]
    else:
        flat = np.flatnonzero(first.ravel())
        n = len(flat)
        step = flat // W
        expert = grid.reshape(-1)[flat].astype(np.int64)
        slot = (np.cumsum(first.ravel()) - 1).reshape(S, W)
        ahead = np.empty((words, n), np.uint64)
        for c in range(W):
            f = first[:, c]
            ahead[:, slot[f, c]] = ahead_cols[c][:, f]
    del ahead_cols
    order = np.argsort(expert.astype(np.int16), kind="stable")  # by expert, then time (a radix sort)
    a, b = order[:-1], order[1:]
    same = expert[b] == expert[a]
    a, b = a[same], b[same]
    prev = np.full(n, -1, np.int64)
    prev[b] = a
    next_step = np.full(n, NEVER, np.int64)
    next_step[a] = step[b]
    return Requests(E, S, step.astype(np.int32), expert.astype(np.int32), ahead, running, prev.astype(np.int32),
                    next_step.astype(np.int32))


def _range_or_popcount(masks: np.ndarray, lo: np.ndarray, hi: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """``popcount(OR(masks[:, lo..hi]) | extra)`` per query (``hi < lo``: the range is empty).

    A sparse table of ORs over power-of-two spans, built one level at a time in place; queries are
    grouped by the level of their length and each is answered by two overlapping spans.
    """
    words, S = masks.shape
    n = len(lo)
    length = hi - lo + 1
    # level + 1 of each query (0 = empty range): floor(log2(length)) + 1, exact through frexp
    code = np.where(length > 0, np.frexp(np.maximum(length, 1).astype(np.float64))[1], 0).astype(np.uint8)
    order = np.argsort(code, kind="stable")
    top = int(code.max()) if n else 0
    bounds = np.searchsorted(code[order], np.arange(top + 2))
    lo_s, hi_s = lo[order], hi[order]
    out_s = np.zeros(n, np.int64)
    for w in range(words):
        ex = extra[w][order]
        out_s[:bounds[1]] += np.bitwise_count(ex[:bounds[1]])
        table = masks[w].copy()
        for lvl in range(top):
            q0, q1 = bounds[lvl + 1], bounds[lvl + 2]
            if q1 > q0:
                a = lo_s[q0:q1]
                b = hi_s[q0:q1] - (1 << lvl) + 1
                out_s[q0:q1] += np.bitwise_count(np.take(table, a) | np.take(table, b) | ex[q0:q1])
            half = 1 << lvl
            if lvl + 1 < top and half < S:
                table[:S - half] |= table[half:].copy()
    out = np.empty(n, np.int64)
    out[order] = out_s
    return out


def lru_ranks(req: Requests, ws=None) -> np.ndarray:
    """``[n]`` LRU stack distance of each request (1 = most recent; ``E + 1`` = compulsory miss):
    the request hits an LRU cache of ``C`` experts iff its rank is at most ``C``."""
    if req.ahead is None:  # listed by the compiled kernel: rank with it too
        return _kernels.lru_ranks(req.step, req.expert, req.num_experts, ws)
    rank = np.full(req.count, req.num_experts + 1, np.int64)
    has = np.flatnonzero(req.prev >= 0)
    if len(has):
        prev = req.prev[has]
        rank[has] = 1 + _range_or_popcount(req.step_masks, req.step[prev].astype(np.int64) + 1,
                                           req.step[has].astype(np.int64) - 1, req.ahead[:, prev])
    return rank


def hits_by_size(req: Requests, policy: str, sizes: list[int], ws=None) -> np.ndarray:
    """``[len(sizes)]`` hits of ``req`` under ``policy`` for each cache size."""
    E = req.num_experts
    if policy in ("lru", "lfu"):
        rank = lru_ranks(req, ws) if policy == "lru" else lfu_ranks(req.step, req.expert, E, req.num_steps, ws)
        cum = np.cumsum(np.bincount(rank, minlength=E + 2))  # ranks are 1..E, or E + 1 for a first request
        return np.array([cum[min(int(c), E)] for c in sizes], np.int64)
    if policy == "belady":
        return np.array([int(np.count_nonzero(belady_hits(req.step, req.expert, req.next_step, E, int(c), ws)))
                         if c > 0 else 0 for c in sizes], np.int64)
    from moelens.errors import ConfigError

    raise ConfigError(f"cache policy must be one of {', '.join(POLICIES)}; got {policy!r}.")
