"""Co-activation, cross-layer transitions, vocabulary and position: hand-computed tables and baselines."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from moelens.analysis import VocabularyOptions, from_arrays
from moelens.analysis.coactivation import coactivation_baseline, coactivation_counts, coactivation_pairs, coactivation_summary
from moelens.analysis.crosslayer import crosslayer_summary, transitions
from moelens.analysis.position import first_token_experts, position_profile
from moelens.analysis.vocabulary import expert_top_tokens, token_experts, token_specialization

COACT = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3]], dtype=np.int16)  # E = 4, k = 3


def test_coactivation_all_pairs_by_hand():
    # token pairs: {0,1,2}: (0,1) (0,2) (1,2); {0,1,3}: (0,1) (0,3) (1,3); {0,2,3}: (0,2) (0,3) (2,3)
    # -> (0,1) 2, (0,2) 2, (0,3) 2, (1,2) 1, (1,3) 1, (2,3) 1; N = [3, 2, 2, 2] on the diagonal
    M = coactivation_counts(COACT, 4)
    assert M.tolist() == [[3, 2, 2, 2], [2, 2, 1, 1], [2, 1, 2, 1], [2, 1, 1, 2]]
    frame = coactivation_pairs(from_arrays(COACT, num_experts=4))
    cond = {(r["expert"], r["partner"]): r["conditional"] for r in frame.iter_rows(named=True)}
    assert cond[(1, 0)] == 1.0 and cond[(0, 1)] == pytest.approx(2 / 3) and cond[(1, 2)] == 0.5
    assert frame["baseline"].unique().to_list() == [pytest.approx(2 / 3)]  # (k-1)/(E-1)


def test_coactivation_adjacent_pairs_like_olmoe_script():
    # adjacent pairs of the rank-ordered lists: (0,1) (1,2) | (0,1) (1,3) | (0,2) (2,3)
    M = coactivation_counts(COACT, 4, pairs="adjacent")
    assert M[0, 1] == 2 and M[1, 2] == 1 and M[1, 3] == 1 and M[0, 2] == 1 and M[2, 3] == 1 and M[0, 3] == 0
    assert (M == M.T).all()
    assert coactivation_baseline(4, 3, "adjacent") == pytest.approx(2 * 2 / (3 * 3))


def test_coactivation_invariants_and_uniform_baseline():
    rng = np.random.default_rng(0)
    E, k = 16, 4
    experts = np.argsort(rng.random((50_000, E)), axis=1)[:, :k].astype(np.int16)
    M = coactivation_counts(experts, E)
    off = M - np.diag(np.diag(M))
    assert (M == M.T).all() and (off.sum(1) == (k - 1) * np.diag(M)).all()
    frame = coactivation_pairs(from_arrays(experts, num_experts=E))
    assert frame["conditional"].mean() == pytest.approx((k - 1) / (E - 1), rel=0.02)
    summary = coactivation_summary(from_arrays(experts, num_experts=E)).row(0, named=True)
    assert summary["max_conditional"] < 1.15 * (k - 1) / (E - 1)


def test_transitions_and_predictability():
    # layer 1's top-1 is layer 0's top-1 + 1 (mod 4): perfectly predictable
    rng = np.random.default_rng(1)
    first = rng.integers(0, 4, 4000).astype(np.int16)
    experts = np.stack([first[:, None], ((first + 1) % 4)[:, None], rng.integers(0, 4, (4000, 1)).astype(np.int16)])
    routing = from_arrays(experts, num_experts=4, doc_id=np.repeat(np.arange(40), 100))
    t = transitions(routing, 0)
    assert t.height == 4 and (t["p"] == 1.0).all() and ((t["to_expert"] - t["from_expert"]) % 4 == 1).all()
    summary = crosslayer_summary(routing)
    assert summary["predictability"].to_list()[0] == 1.0 and summary["nmi"].to_list()[0] == pytest.approx(1.0)
    # layer 2 is independent: predictability at the marginal baseline (cross-fitted, so no overfit)
    row = summary.row(1, named=True)
    assert row["predictability"] == pytest.approx(row["baseline_marginal"], abs=0.03)
    assert row["baseline_uniform"] == 0.25 and row["nmi"] < 0.01


def test_token_specialization_by_hand():
    # token 5 seen 4 times with top-1 experts 0 0 0 1 -> 3/4; token 7 with 2 3 2 3 -> 2/4; token 9 once (rare)
    experts = np.array([[0, 1], [0, 2], [0, 3], [1, 0], [2, 0], [3, 0], [2, 1], [3, 1], [1, 2]], dtype=np.int16)
    tokens = [5, 5, 5, 5, 7, 7, 7, 7, 9]
    routing = from_arrays(experts, num_experts=4, token_id=tokens)
    row = token_specialization(routing, options=VocabularyOptions(min_count=4)).row(0, named=True)
    assert row["token_ids"] == 2 and row["occurrences"] == 8
    assert row["top1_mean"] == pytest.approx((0.75 + 0.5) / 2) and row["top1_weighted"] == pytest.approx(5 / 8)
    # top-k: token 5 has expert 0 in all 4 sets; token 7 has expert 0 in 2, 1 in 2, 2 in 2, 3 in 2
    assert row["topk_mean"] == pytest.approx((1.0 + 0.5) / 2)
    assert row["baseline_top1"] == 0.25 and row["baseline_topk"] == 0.5
    per_token = token_experts(routing, 0, VocabularyOptions(min_count=4))
    assert per_token.select("token_id", "top1_expert", "top1_share").rows() == [(5, 0, 0.75), (7, 2, 0.5)]


def test_expert_top_tokens_lift_by_hand():
    experts = np.array([[0], [0], [0], [1], [1], [1], [1], [0]], dtype=np.int16)
    tokens = [5, 5, 5, 5, 7, 7, 7, 7]
    routing = from_arrays(experts, num_experts=2, token_id=tokens)
    top = expert_top_tokens(routing, options=VocabularyOptions(min_count=1, min_pair_count=1, top_tokens=2))
    e0 = top.filter(pl.col("expert") == 0)
    # expert 0: overall share 4/8; token 5: 3/4 -> lift 1.5; token 7: 1/4 -> lift 0.5
    assert e0.select("token_id", "count", "share", "lift").rows() == [(5, 3, 0.75, 1.5), (7, 1, 0.25, 0.5)]


def test_uniform_routing_vocabulary_matches_shuffled_baseline():
    rng = np.random.default_rng(3)
    T, E = 100_000, 8
    experts = np.argsort(rng.random((T, E)), axis=1)[:, :2].astype(np.int16)
    routing = from_arrays(experts, num_experts=E, token_id=rng.integers(0, 200, T))
    row = token_specialization(routing).row(0, named=True)
    assert row["top1_mean"] == pytest.approx(row["shuffled_top1_mean"], abs=0.01)
    assert row["topk_mean"] == pytest.approx(row["shuffled_topk_mean"], abs=0.01)


def test_position_profile_and_first_token_experts():
    # three documents; the first token always goes to expert 3, later tokens to 0, 1, 2 in turn
    experts = np.array([[3], [0], [1], [2], [3], [1], [2], [0], [3], [2], [0], [1]], dtype=np.int16)
    routing = from_arrays(experts, num_experts=4, doc_id=np.repeat([0, 1, 2], 4))
    first = first_token_experts(routing, top=1).row(0, named=True)
    assert first["expert"] == 3 and first["share"] == 1.0 and first["first_tokens"] == 3
    assert first["lift"] == pytest.approx(1.0 / (3 / 12))
    prof = position_profile(routing)
    assert prof["bucket"].to_list() == ["0", "1", "2-3"] and prof["tokens"].to_list() == [3, 3, 6]
    assert prof["entropy_norm"].to_list()[0] == 0.0 and prof["top_share"].to_list()[0] == 1.0
