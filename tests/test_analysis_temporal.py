"""Consecutive-token repeat rates (Mixtral Table 5), their analytic baselines, and reuse gaps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moelens.analysis import from_arrays
from moelens.analysis.temporal import any_overlap_baseline, first_or_second_baseline, repeat_rates, reuse_distance


def test_repeat_rates_by_hand():
    # E = 4, k = 2. Doc 0: [0,1] [0,2] [3,1] [3,0]; doc 1: [2,3] [2,3].
    # Pairs within documents: (t0,t1) first 0=0, sets share 0 (|∩| 1); (t1,t2) no, no (0);
    # (t2,t3) 3=3, share 3 (1); (t4,t5) 2=2, share both (2). The pair (t3,t4) crosses documents.
    experts = np.array([[0, 1], [0, 2], [3, 1], [3, 0], [2, 3], [2, 3]], dtype=np.int16)
    routing = from_arrays(experts, num_experts=4, doc_id=[0, 0, 0, 0, 1, 1])
    row = repeat_rates(routing).row(0, named=True)
    assert row["pairs"] == 4
    assert row["first_choice"] == 0.75 and row["first_or_second"] == 0.75 and row["any_overlap"] == 0.75
    assert row["topk_overlap"] == pytest.approx((0.5 + 0 + 0.5 + 1.0) / 4)
    assert row["baseline_first_choice"] == 0.25
    assert row["baseline_first_or_second"] == pytest.approx(1 - 1 / 6)  # 1 - C(2,2)/C(4,2)
    assert row["baseline_topk_overlap"] == 0.5


def test_first_or_second_baseline_formula():
    # Mixtral: 1 - (6/8)(5/7) = 1 - 30/56 = 46.4 % for E = 8
    assert first_or_second_baseline(8) == pytest.approx(1 - 30 / 56)
    assert round(100 * first_or_second_baseline(8)) == 46
    for E in (4, 8, 16, 64):
        assert first_or_second_baseline(E) == pytest.approx(1 - (E - 2) * (E - 3) / (E * (E - 1)))
    assert any_overlap_baseline(128, 8) == pytest.approx(1 - math.comb(120, 8) / math.comb(128, 8))
    # Monte Carlo: two independent uniform top-2 sets of 8 experts
    rng = np.random.default_rng(0)
    a = np.argsort(rng.random((200_000, 8)), axis=1)[:, :2]
    b = np.argsort(rng.random((200_000, 8)), axis=1)[:, :2]
    hit = (a[:, :1] == b).any(1) | (a[:, 1:] == b).any(1)
    assert hit.mean() == pytest.approx(first_or_second_baseline(8), abs=0.005)


def test_uniform_random_routing_repeats_at_the_baseline():
    rng = np.random.default_rng(1)
    T, E, k = 200_000, 8, 2
    experts = np.argsort(rng.random((T, E)), axis=1)[:, :k].astype(np.int16)
    row = repeat_rates(from_arrays(experts, num_experts=E, doc_id=np.repeat(np.arange(400), T // 400))).row(0, named=True)
    assert row["first_choice"] == pytest.approx(1 / 8, abs=0.004)
    assert row["first_or_second"] == pytest.approx(first_or_second_baseline(8), abs=0.006)
    assert row["topk_overlap"] == pytest.approx(k / E, abs=0.004)
    assert row["shuffled_first_choice"] == pytest.approx(1 / 8, abs=0.004)


def test_shuffled_baseline_separates_order_from_document_effects():
    # each document uses only two experts, in random order: repeats are high, but shuffling the
    # order inside documents keeps them high -> no temporal effect beyond the document's experts
    rng = np.random.default_rng(2)
    docs, n, E = 200, 100, 16
    pairs = np.stack([rng.choice(E, 2, replace=False) for _ in range(docs)])
    experts = pairs[np.repeat(np.arange(docs), n), rng.integers(0, 2, docs * n)][:, None].astype(np.int16)
    row = repeat_rates(from_arrays(experts, num_experts=E, doc_id=np.repeat(np.arange(docs), n))).row(0, named=True)
    assert row["first_choice"] == pytest.approx(0.5, abs=0.02)
    assert row["shuffled_first_choice"] == pytest.approx(row["first_choice"], abs=0.02)
    assert row["first_choice"] > 3 * row["baseline_first_choice"]


def test_repeat_rates_by_label():
    experts = np.array([[0], [0], [1], [2], [2], [2]], dtype=np.int16)
    docs = [{"doc_id": 0, "domain": "a"}, {"doc_id": 1, "domain": "b"}]
    rates = repeat_rates(from_arrays(experts, num_experts=3, doc_id=[0, 0, 0, 1, 1, 1], documents=docs), by="domain")
    assert rates.select("domain", "pairs", "first_choice").rows() == [("a", 2, 0.5), ("b", 2, 1.0)]


def test_reuse_gaps_by_hand():
    # top-1 sequence of one document: 0 1 0 0 2 1 -> gaps: pos 2 (0, last at 0) = 2; pos 3 = 1; pos 5 (1) = 4
    experts = np.array([0, 1, 0, 0, 2, 1], dtype=np.int16)[:, None]
    row = reuse_distance(from_arrays(experts, num_experts=3)).row(0, named=True)
    assert row["reused"] == 0.5 and row["mean"] == pytest.approx(7 / 3) and row["median"] == 2.0
    assert row["within_1"] == pytest.approx(1 / 6) and row["within_4"] == 0.5
    assert row["baseline_mean"] == 3.0


def test_dropped_slots_do_not_count_as_repeats():
    experts = np.array([[-1], [-1], [1], [1]], dtype=np.int16)
    row = repeat_rates(from_arrays(experts, num_experts=2)).row(0, named=True)
    assert row["first_choice"] == 1.0  # only the pair (t2, t3) has both slots
