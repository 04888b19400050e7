"""Expert-cache simulation: hand-worked traces, the slow reference simulators, an exhaustive optimum,
and the invariants (Belady >= LRU and LFU at every size, warm hit rate 1 at C = E)."""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import pytest

from moelens.analysis.serving import _reference as ref
from moelens.analysis.serving.cache import hits_by_size, lru_ranks, requests
from moelens.analysis.serving.schedule import decode_schedule


def _grid(steps: list[list[int]], width: int | None = None) -> np.ndarray:
    width = width or max(len(s) for s in steps)
    g = np.full((len(steps), width), -1, np.int16)
    for i, s in enumerate(steps):
        g[i, :len(s)] = s
    return g


def _distinct(grid: np.ndarray) -> list[list[int]]:
    out = []
    for row in grid:
        seen: list[int] = []
        for e in row:
            if e >= 0 and e not in seen:
                seen.append(int(e))
        out.append(seen)
    return out


def test_two_expert_sequence_by_hand():
    # one expert per step: 0 0 1 0 1 1
    g = _grid([[0], [0], [1], [0], [1], [1]])
    req = requests(g, 2)
    # LRU, C=1: miss(cold) hit miss(cold) miss miss hit -> 2 hits; C=2: only the two cold misses -> 4
    assert hits_by_size(req, "lru", [1, 2]).tolist() == [2, 4]
    # LFU, C=1 (the most requested expert so far is kept): counts {0:1} -> step 1 hits 0; step 2 misses 1;
    # step 3 hits 0 (2 > 1); step 4 misses 1; step 5: 0 has 3 requests, 1 has 2 -> miss  => 2 hits
    assert hits_by_size(req, "lfu", [1]).tolist() == [2]
    # Belady, C=1: keep 0 through step 2 (0 is needed at step 3, 1 only at 4), hit at 3, then keep 1
    # for step 5 (0 is never needed again) -> hits at steps 1, 3, 5
    assert hits_by_size(req, "belady", [1, 2]).tolist() == [3, 4]


def test_a_step_is_served_as_a_whole():
    # 2 experts per step, cache of 2: [0,1] [2,3] [0,1]: LRU keeps {2,3} after step 1 -> no hit at step 2;
    # the repeated expert inside a step is one request
    g = _grid([[0, 1], [2, 3], [0, 1, 0]])
    req = requests(g, 4)
    assert req.count == 6 and req.compulsory == 4
    assert hits_by_size(req, "lru", [2, 3, 4]).tolist() == [0, 1, 2]
    # within step 0, expert 0 (the first choice) is the more recent: with C=3, {2, 3, 0} are cached
    assert [bool(x) for x in (lru_ranks(req)[4:] <= 3)] == [True, False]


@pytest.mark.parametrize("vectorized", [False, True])
def test_fast_paths_equal_the_reference_simulators(vectorized):
    rng = np.random.default_rng(1)
    for _ in range(120):
        E = int(rng.integers(2, 70))
        W = int(rng.integers(1, min(E, 6) + 1))
        S = int(rng.integers(1, 50))
        hot = rng.random(E) ** 3
        g = np.full((S, W), -1, np.int16)
        for s in range(S):
            m = int(rng.integers(0, W + 1))
            g[s, :m] = rng.choice(E, size=m, replace=bool(rng.random() < 0.3), p=hot / hot.sum())
        steps = _distinct(g)
        req = requests(g, E, vectorized=vectorized)
        assert req.expert.tolist() == [e for s in steps for e in s]
        sizes = list(range(1, E + 1))
        for policy, simulate in (("lru", ref.lru_hits), ("lfu", ref.lfu_hits), ("belady", ref.belady_hits)):
            assert hits_by_size(req, policy, sizes).tolist() == [sum(simulate(steps, c)) for c in sizes], policy


def _optimum(steps: list[list[int]], capacity: int) -> int:
    """Most hits any policy can get (exhaustive: after each step keep any subset of size <= C)."""
    @lru_cache(None)
    def best(s: int, cache: frozenset) -> int:
        if s == len(steps):
            return 0
        hits = sum(e in cache for e in steps[s])
        pool = sorted(cache | set(steps[s]))
        return hits + max(best(s + 1, frozenset(keep)) for r in range(min(capacity, len(pool)) + 1)
                          for keep in itertools.combinations(pool, r))
    return best(0, frozenset())


def test_belady_is_the_exhaustive_optimum_on_small_traces():
    rng = np.random.default_rng(5)
    for _ in range(150):
        E, W, S = int(rng.integers(2, 6)), int(rng.integers(1, 3)), int(rng.integers(1, 9))
        g = rng.integers(-1, E, size=(S, W)).astype(np.int16)
        req, steps = requests(g, E), _distinct(g)
        for c in range(1, E + 1):
            assert hits_by_size(req, "belady", [c])[0] == _optimum(steps, c)


def test_invariants_on_a_larger_trace():
    rng = np.random.default_rng(2)
    E, k, T = 32, 4, 3000
    p = rng.random(E) ** 2
    experts = np.stack([rng.choice(E, size=k, replace=False, p=p / p.sum()) for _ in range(T)]).astype(np.int16)
    req = requests(experts, E)
    sizes = list(range(1, E + 1))
    lru, lfu, bel = (hits_by_size(req, pol, sizes) for pol in ("lru", "lfu", "belady"))
    assert (bel >= lru).all() and (bel >= lfu).all()
    for h in (lru, lfu, bel):
        assert (np.diff(h) >= 0).all()  # all three are stack algorithms: more cache never hurts
        assert h[-1] == req.count - req.compulsory  # C = E: every request but the first of each expert hits


def test_decode_schedule_interleaves_documents():
    # documents of 3, 1 and 2 tokens on 2 lanes: doc0 -> lane 0 at steps 0-2, doc1 -> lane 1 at step 0,
    # doc2 -> lane 1 (free first, at step 1) at steps 1-2
    s = decode_schedule(np.array([0, 0, 0, 1, 2, 2]), 2)
    assert s.step.tolist() == [0, 1, 2, 0, 1, 2] and s.lane.tolist() == [0, 0, 0, 1, 1, 1] and s.num_steps == 3
    grid = s.grid(np.array([[1], [2], [3], [4], [5], [6]], np.int16))
    assert grid.tolist() == [[1, 4], [2, 5], [3, 6]]
    one = decode_schedule(np.array([0, 0, 1]), 1)
    assert one.step.tolist() == [0, 1, 2] and one.num_steps == 3
