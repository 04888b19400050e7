"""Sequential cache kernels (LFU ranks, Belady's hits), compiled with numba when it is installed.

These two simulations have a state that each request changes, so they cannot be written as
array operations; they are plain loops over a layer's requests, in O(1) (LFU, amortised) and
O(log C) (Belady) per request. With numba (``pip install 'moelens[serving]'``) they run compiled
(about 10-50 ns per request); without it the same functions run as Python (about 1 us per
request), fine for runs of a few million requests. :mod:`moelens.analysis.serving._reference`
holds obviously-correct per-request simulators that the tests compare these with.

Inputs are a layer's *requests* in step order: ``step[n]`` (non-decreasing), ``expert[n]`` (the
distinct experts of each step, in the step's tie order) and, for Belady, ``next_step[n]`` (the
step at which the same expert is requested next; ``NEVER`` if not).
"""

from __future__ import annotations

import numpy as np

__all__ = ["NEVER", "request_list", "lru_ranks", "lfu_ranks", "belady_hits", "capacity_ranks", "drop_tally", "compiled"]

NEVER = np.iinfo(np.int32).max  # "no next request" (steps are int32: at most 2**31 - 1 per run)


def _request_list(grid, num_experts, step, expert, prev, next_step):
    """The distinct experts of each row of ``grid[steps, width]`` in row order (``-1`` and ids
    outside ``[0, E)`` skipped), with each request's step, previous request and next step, written
    into the given buffers (at least ``steps * width`` long); returns how many."""
    S, W = grid.shape
    seen = np.full(num_experts, -1, np.int64)
    last = np.full(num_experts, -1, np.int64)
    n = 0
    for s in range(S):
        for c in range(W):
            e = grid[s, c]
            if e < 0 or e >= num_experts or seen[e] == s:
                continue
            seen[e] = s
            step[n] = s
            expert[n] = e
            p = last[e]
            prev[n] = p
            if p >= 0:
                next_step[p] = s
            next_step[n] = NEVER
            last[e] = n
            n += 1
    return n


def _lru_ranks(step, expert, num_experts, rank):
    """LRU stack distance of each request against the recency order at the end of the previous step
    (``E + 1`` for a first request): ``1 +`` the number of experts used more recently."""
    n = step.shape[0]
    E = num_experts
    last = np.full(E, -1, np.int64)  # time of last use: step * (E + 1) + (E - position in step)
    i = 0
    while i < n:
        j = i
        s = step[i]
        while j < n and step[j] == s:
            j += 1
        for a in range(i, j):
            t = last[expert[a]]
            if t < 0:
                rank[a] = E + 1
            else:
                newer = 0
                for x in range(E):
                    newer += last[x] > t
                rank[a] = newer + 1
        for a in range(i, j):
            last[expert[a]] = s * (E + 1) + (E - (a - i))
        i = j
    return rank


def _lfu_ranks(step, expert, num_experts, num_steps, rank):
    """Rank (1 = most frequent) of each request's expert at the end of the previous step; ``E + 1``
    for an expert never requested before. Order: request count (steps in which the expert was
    requested), ties to the more recently used (in-step order breaks ties within a step)."""
    n = step.shape[0]
    E = num_experts
    order = np.arange(E)  # experts by priority, position 0 first
    where = np.arange(E)  # position of each expert in order
    count = np.zeros(E, np.int64)
    above = np.zeros(num_steps + 2, np.int64)  # above[c] = number of experts with count > c = start of group c
    i = 0
    while i < n:
        j = i
        s = step[i]
        while j < n and step[j] == s:
            j += 1
        for a in range(i, j):
            e = expert[a]
            rank[a] = where[e] + 1 if count[e] > 0 else E + 1
        for a in range(j - 1, i - 1, -1):  # backwards: the step's first request ends up in front
            e = expert[a]
            c = count[e]
            target = above[c + 1]  # front of the group with count c + 1
            p = where[e]
            for q in range(p, target, -1):  # shift the experts in between down by one
                f = order[q - 1]
                order[q] = f
                where[f] = q
            order[target] = e
            where[e] = target
            above[c] += 1
            count[e] = c + 1
        i = j
    return rank


def _belady_hits(step, expert, next_step, num_experts, capacity, hit):
    """Hit flag of each request under Belady's optimal policy with bypass: after every step the
    cache keeps the ``capacity`` experts, among those it held and those just requested, whose next
    request comes soonest. The cached experts sit in a 4-ary max-heap on their next request; a
    step's hits are updated first (their next request moves later: up the heap), then each miss
    replaces the root when its own next request is sooner, or is used without being kept."""
    n = step.shape[0]
    E = num_experts
    hit[:n] = False
    cached = np.zeros(E, np.bool_)
    key = np.zeros(E, np.int64)
    heap = np.zeros(E, np.int64)
    hpos = np.zeros(E, np.int64)
    size = 0
    i = 0
    while i < n:
        j = i
        s = step[i]
        while j < n and step[j] == s:
            j += 1
        for a in range(i, j):
            e = expert[a]
            if cached[e]:
                hit[a] = True
                k = next_step[a]
                key[e] = k
                p = hpos[e]
                while p > 0:  # sift up
                    q = (p - 1) >> 2
                    y = heap[q]
                    if key[y] >= k:
                        break
                    heap[p] = y
                    hpos[y] = p
                    p = q
                heap[p] = e
                hpos[e] = p
        for a in range(i, j):
            if hit[a]:
                continue
            e = expert[a]
            k = next_step[a]
            if size < capacity:
                cached[e] = True
                key[e] = k
                p = size
                size += 1
                while p > 0:  # sift up
                    q = (p - 1) >> 2
                    y = heap[q]
                    if key[y] >= k:
                        break
                    heap[p] = y
                    hpos[y] = p
                    p = q
                heap[p] = e
                hpos[e] = p
            elif size > 0 and key[heap[0]] > k:
                cached[heap[0]] = False
                cached[e] = True
                key[e] = k
                p = 0
                while True:  # sift down from the root
                    c0 = 4 * p + 1
                    if c0 >= size:
                        break
                    best = c0
                    bk = key[heap[c0]]
                    for c in range(c0 + 1, min(c0 + 4, size)):
                        kk = key[heap[c]]
                        if kk > bk:
                            bk = kk
                            best = c
                    if bk <= k:
                        break
                    y = heap[best]
                    heap[p] = y
                    hpos[y] = p
                    p = best
                heap[p] = e
                hpos[e] = p
        i = j
    return hit


def _capacity_ranks(experts, score, num_experts, batch_tokens, by_score, min_caps, rank):
    """Place of each assignment in its expert's queue within its batch of ``batch_tokens`` tokens
    (0 = served first; ``-1`` for empty slots). ``by_score``: highest gate score first, ties to the
    earlier (token, slot); otherwise GShard's order: slot 0 of every token, then slot 1, ... and
    tokens in batch order within a slot.

    ``min_caps[b]`` is the smallest capacity batch ``b`` will be asked about: places below it are
    never dropped, so by score only the rest of an over-full queue is ordered exactly (a partition
    finds them) and the first ``min_caps[b]`` places are given in (token, slot) order."""
    T, k = experts.shape
    E = num_experts
    rank[:, :] = -1
    counts = np.zeros(E, np.int64)
    start = np.zeros(E + 1, np.int64)
    items = np.empty(batch_tokens * k, np.int64)
    vals = np.empty(batch_tokens * k, np.float32)
    for b0 in range(0, T, batch_tokens):
        b1 = min(T, b0 + batch_tokens)
        keep = min_caps[b0 // batch_tokens]
        counts[:] = 0
        if not by_score:
            for r in range(k):
                for t in range(b0, b1):
                    e = experts[t, r]
                    if e >= 0 and e < E:
                        rank[t, r] = counts[e]
                        counts[e] += 1
            continue
        for t in range(b0, b1):
            for r in range(k):
                e = experts[t, r]
                if e >= 0 and e < E:
                    counts[e] += 1
        start[0] = 0
        for e in range(E):
            start[e + 1] = start[e] + counts[e]
            counts[e] = start[e]
        for t in range(b0, b1):  # counting sort by expert, stable in (token, slot) order
            for r in range(k):
                e = experts[t, r]
                if e >= 0 and e < E:
                    items[counts[e]] = t * k + r
                    vals[counts[e]] = -score[t, r]
                    counts[e] += 1
        for e in range(E):
            lo = start[e]
            hi = start[e + 1]
            n = hi - lo
            if n <= keep or keep <= 0:
                if keep <= 0 and n > 0:  # every place may be cut: order the whole queue
                    order = np.argsort(vals[lo:hi], kind="mergesort")
                    for i in range(n):
                        j = items[lo + order[i]]
                        rank[j // k, j % k] = i
                else:
                    for i in range(n):
                        rank[items[lo + i] // k, items[lo + i] % k] = i
                continue
            v = np.partition(vals[lo:hi].copy(), keep - 1)[keep - 1]  # the keep-th highest score (negated)
            ties = keep
            for i in range(lo, hi):
                if vals[i] < v:
                    ties -= 1
            top = 0
            tail_items = np.empty(n - keep, np.int64)
            tail_vals = np.empty(n - keep, np.float32)
            m = 0
            for i in range(lo, hi):  # the top: better than v, and the first `ties` equal to v
                if vals[i] < v or (vals[i] == v and ties > 0):
                    if vals[i] == v:
                        ties -= 1
                    rank[items[i] // k, items[i] % k] = top
                    top += 1
                else:
                    tail_items[m] = items[i]
                    tail_vals[m] = vals[i]
                    m += 1
            order = np.argsort(tail_vals, kind="mergesort")  # stable: equal scores keep (token, slot) order
            for i in range(m):
                j = tail_items[order[i]]
                rank[j // k, j % k] = keep + i
    return rank


def _drop_tally(ranks, caps, batch_tokens, dropped):
    """For each capacity row ``caps[c, batch]``: add each token's dropped assignments to
    ``dropped[c, t]`` and return ``(dropped assignments, tokens with a drop)`` per row."""
    T, k = ranks.shape
    C = caps.shape[0]
    total = np.zeros(C, np.int64)
    tokens = np.zeros(C, np.int64)
    for t in range(T):
        b = t // batch_tokens
        for c in range(C):
            cap = caps[c, b]
            n = 0
            for r in range(k):
                if ranks[t, r] >= cap:
                    n += 1
            if n:
                dropped[c, t] += n
                total[c] += n
                tokens[c] += 1
    return total, tokens


_COMPILED: dict = {}


def compiled() -> bool:
    """True when numba is installed (the kernels run compiled)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _kernel(name):
    if name not in _COMPILED:
        functions = {"tally": _drop_tally, "capacity": _capacity_ranks, "requests": _request_list, "lru": _lru_ranks, "lfu": _lfu_ranks, "belady": _belady_hits}
        fn = functions[name]
        if compiled():
            import numba

            fn = numba.njit(cache=True)(fn)
        _COMPILED[name] = fn
    return _COMPILED[name]


def _buffer(ws, name: str, shape, dtype) -> np.ndarray:
    """A scratch array: from the workspace when given (reused from layer to layer), else new."""
    return np.empty(shape, dtype) if ws is None else ws.get(name, shape, dtype)


def request_list(grid: np.ndarray, num_experts: int, ws=None):
    """``(step, expert, prev, next_step)`` (int32) of a grid's requests (see :func:`_request_list`)."""
    n_max = grid.shape[0] * grid.shape[1]
    bufs = [_buffer(ws, f"req_{name}", (n_max,), np.int32) for name in ("step", "expert", "prev", "next")]
    n = _kernel("requests")(np.ascontiguousarray(grid), int(num_experts), *bufs)
    return tuple(b[:n] for b in bufs)


def _i32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, np.int32)


def lru_ranks(step: np.ndarray, expert: np.ndarray, num_experts: int, ws=None) -> np.ndarray:
    """``[n]`` LRU rank of each request (see :func:`_lru_ranks`)."""
    rank = _buffer(ws, "rank", (len(step),), np.int32)
    _kernel("lru")(_i32(step), _i32(expert), int(num_experts), rank)
    return rank


def lfu_ranks(step: np.ndarray, expert: np.ndarray, num_experts: int, num_steps: int, ws=None) -> np.ndarray:
    """``[n]`` LFU rank of each request (see :func:`_lfu_ranks`)."""
    rank = _buffer(ws, "rank", (len(step),), np.int32)
    _kernel("lfu")(_i32(step), _i32(expert), int(num_experts), int(num_steps), rank)
    return rank


def belady_hits(step: np.ndarray, expert: np.ndarray, next_step: np.ndarray, num_experts: int,
                capacity: int, ws=None) -> np.ndarray:
    """``[n]`` bool: the request hits a Belady cache of ``capacity`` experts (see :func:`_belady_hits`)."""
    hit = _buffer(ws, "hit", (len(step),), np.bool_)
    _kernel("belady")(_i32(step), _i32(expert), _i32(next_step), int(num_experts), int(capacity), hit)
    return hit


def capacity_ranks(experts: np.ndarray, score: np.ndarray | None, num_experts: int, batch_tokens: int,
                   by_score: bool, min_caps: np.ndarray | None = None, ws=None) -> np.ndarray:
    """``[T, k]`` queue place of each assignment (see :func:`_capacity_ranks`)."""
    e = np.ascontiguousarray(experts, np.int16)
    w = np.zeros((1, 1), np.float32) if score is None else np.ascontiguousarray(score, np.float32)
    nb = -(-e.shape[0] // batch_tokens)
    caps = np.zeros(max(nb, 1), np.int64) if min_caps is None else np.ascontiguousarray(min_caps, np.int64)
    rank = _buffer(ws, "capacity_rank", e.shape, np.int32)
    _kernel("capacity")(e, w, int(num_experts), int(batch_tokens), bool(by_score), caps, rank)
    return rank


def drop_tally(ranks: np.ndarray, caps: np.ndarray, batch_tokens: int, dropped: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dropped assignments per capacity row, added per token into ``dropped[rows, T]`` (see :func:`_drop_tally`)."""
    return _kernel("tally")(np.ascontiguousarray(ranks, np.int32), np.ascontiguousarray(caps, np.int64),
                            int(batch_tokens), dropped)


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel for the argument types used, so that forked
    worker processes inherit them instead of each compiling its own."""
    if not compiled():
        return
    grid = np.zeros((2, 2), np.int16)
    step, expert, prev, nxt = request_list(grid, 2)
    lru_ranks(step, expert, 2)
    lfu_ranks(step, expert, 2, 2)
    belady_hits(step, expert, nxt, 2, 1)
    w = np.zeros((2, 2), np.float32)
    for by_score in (False, True):
        r = capacity_ranks(grid, w, 2, 2, by_score, np.zeros(1, np.int64))
    drop_tally(r, np.ones((1, 1), np.int64), 2, np.zeros((1, 2), np.int32))
