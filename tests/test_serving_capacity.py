"""Capacity-factor drops: hand-worked examples under each policy, the reference simulator, and the
invariants (drop count independent of policy; nothing dropped at CF = E / k)."""

from __future__ import annotations

import numpy as np

from moelens.analysis.serving import _reference as ref
from moelens.analysis.serving.capacity import batch_capacity, capacity, drop_counts, drop_ranks


def _dropped(experts, weights, E, cf, batch, policy):
    ranks = drop_ranks(np.array(experts, np.int16), None if weights is None else np.array(weights, np.float32),
                       E, batch, policy)
    caps = np.repeat(batch_capacity(len(experts), batch, cf, len(experts[0]), E), batch)[:len(experts)]
    return {(t, r) for t, r in zip(*np.nonzero(ranks >= caps[:, None]))}


def test_capacity_formula():
    # ceil(CF * T * k / E): Megatron-Core get_capacity(num_tokens=T*k, num_experts=E, capacity_factor=CF)
    assert capacity(1.0, 4, 1, 2) == 2
    assert capacity(1.25, 4096, 8, 128) == 320
    assert capacity(1.1, 10, 2, 3) == 8  # 7.33 -> 8
    assert batch_capacity(10, 4, 1.0, 1, 2).tolist() == [2, 2, 1]  # the last batch has 2 tokens


def test_top1_example_by_hand():
    # 4 tokens, E=2, k=1, CF=1 -> capacity 2; expert 0 is asked by tokens 0, 1, 2
    experts, scores = [[0], [0], [0], [1]], [[0.1], [0.9], [0.5], [0.7]]
    assert _dropped(experts, scores, 2, 1.0, 4, "position") == {(2, 0)}  # the last in batch order
    assert _dropped(experts, scores, 2, 1.0, 4, "score") == {(0, 0)}  # the lowest score
    assert drop_counts(np.array(experts, np.int16), 2, 4, [1.0, 2.0])[0].tolist() == [1, 0]


def test_top2_example_slot_order_by_hand():
    # E=3, k=2, T=3, CF=1 -> capacity 2. Expert 0 is asked by t0 (slot 0), t1 (slot 1), t2 (slot 0).
    experts = [[0, 1], [1, 0], [0, 2]]
    scores = [[0.6, 0.4], [0.52, 0.48], [0.45, 0.1]]
    # GShard: every first choice before any second choice -> t1's second choice is cut
    assert _dropped(experts, scores, 3, 1.0, 3, "position") == {(1, 1)}
    # by score: expert 0 keeps 0.6 and 0.48 -> t2's first choice (0.45) is cut
    assert _dropped(experts, scores, 3, 1.0, 3, "score") == {(2, 0)}


def test_ties_in_score_go_to_the_earlier_token():
    experts, scores = [[0], [0], [0]], [[0.5], [0.5], [0.5]]
    assert _dropped(experts, scores, 3, 1.0, 3, "score") == {(1, 0), (2, 0)}  # capacity 1


def test_kernels_equal_the_reference_simulator():
    rng = np.random.default_rng(0)
    for _ in range(150):
        E = int(rng.integers(2, 9))
        k = int(rng.integers(1, min(E, 3) + 1))
        T = int(rng.integers(1, 40))
        experts = np.argsort(rng.random((T, E)), axis=1)[:, :k].astype(np.int16)
        experts[rng.random((T, k)) < 0.1] = -1
        scores = rng.integers(0, 4, (T, k)).astype(np.float32)  # many ties
        batch = int(rng.integers(1, 12))
        cf = float(rng.choice([0.5, 1.0, 1.25, 2.0]))
        for policy in ("position", "score"):
            want = ref.capacity_drops(experts.tolist(), scores.tolist(), E, cf, batch, policy)
            assert _dropped(experts, scores, E, cf, batch, policy) == want
        assert drop_counts(experts, E, batch, [cf])[0][0] == len(want)


def test_partial_ordering_for_the_smallest_capacity_changes_no_drop():
    rng = np.random.default_rng(3)
    for _ in range(100):
        E, k, T = int(rng.integers(2, 9)), 1, int(rng.integers(1, 60))
        k = int(rng.integers(1, min(E, 3) + 1))
        experts = np.argsort(rng.random((T, E)), axis=1)[:, :k].astype(np.int16)
        scores = rng.integers(0, 4, (T, k)).astype(np.float32)
        batch = int(rng.integers(1, 20))
        caps = np.stack([batch_capacity(T, batch, cf, k, E) for cf in (0.5, 1.0, 2.0)])
        full = drop_ranks(experts, scores, E, batch, "score")
        part = drop_ranks(experts, scores, E, batch, "score", caps.min(0))
        for c in caps:
            cut = np.repeat(c, batch)[:T][:, None]
            assert np.array_equal(full >= cut, part >= cut)


def test_nothing_dropped_at_cf_e_over_k_and_policies_drop_equally_many():
    rng = np.random.default_rng(1)
    E, k, T = 16, 4, 5000
    p = rng.random(E) ** 4  # very skewed
    experts = np.stack([rng.choice(E, size=k, replace=False, p=p / p.sum()) for _ in range(T)]).astype(np.int16)
    scores = rng.random((T, k)).astype(np.float32)
    for batch in (7, 512, 4096):
        assert drop_counts(experts, E, batch, [E / k])[0].tolist() == [0]
        for cf in (0.5, 1.0, 1.5):
            caps = np.repeat(batch_capacity(T, batch, cf, k, E), batch)[:T][:, None]
            n = [int((drop_ranks(experts, scores, E, batch, pol) >= caps).sum()) for pol in ("position", "score")]
            assert n[0] == n[1] == drop_counts(experts, E, batch, [cf])[0][0] > 0
