"""Run comparison (router saturation, load and specialization shift) and router confidence by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moelens.analysis import from_arrays
from moelens.analysis.compare import align_tokens, build_comparison, load_shift, router_saturation, specialization_shift
from moelens.analysis.confidence import aux_loss, router_probabilities, token_confidence
from moelens.errors import ConfigError


def _pair():
    # run a: tokens [0,1] [2,3] [0,2]; run b: [1,0] [2,0] [3,1] -> |∩| = 2, 1, 0
    a = from_arrays(np.array([[0, 1], [2, 3], [0, 2]], dtype=np.int16), num_experts=4, run_id="a",
                    documents=[{"doc_id": 0, "domain": "x"}])
    b = from_arrays(np.array([[1, 0], [2, 0], [3, 1]], dtype=np.int16), num_experts=4, run_id="b",
                    documents=[{"doc_id": 0, "domain": "x"}])
    return a, b


def test_router_saturation_by_hand():
    a, b = _pair()
    row = router_saturation(a, b).row(0, named=True)
    assert row["tokens"] == 3
    assert row["saturation"] == pytest.approx((2 / 2 + 1 / 2 + 0) / 3)
    assert row["top1_agreement"] == pytest.approx(1 / 3)  # only token 1 (2 = 2)
    assert row["baseline_saturation"] == 0.5 and row["baseline_top1"] == 0.25


def test_load_shift_by_hand():
    # a: experts 0:2 1:1 2:2 3:1 of 6; b: 0:2 1:2 2:1 3:1 -> delta [0, 1/6, -1/6, 0], TV = 1/6
    a, b = _pair()
    shift = load_shift(a, b)
    assert np.allclose(shift["delta"].to_numpy(), [0, 1 / 6, -1 / 6, 0])
    assert shift["tv"].to_list()[0] == pytest.approx(1 / 6)


def test_specialization_shift_by_hand():
    a, b = _pair()
    per_value, per_layer = specialization_shift(a, b, "domain")
    # one value: shares a = [2,1,2,1]/3, b = [2,2,1,1]/3; TV / k = 0.5 * (2/3) / 2
    assert np.allclose(per_value["share_a"].to_numpy(), [2 / 3, 1 / 3, 2 / 3, 1 / 3])
    assert np.allclose(per_value["share_b"].to_numpy(), [2 / 3, 2 / 3, 1 / 3, 1 / 3])
    assert per_layer["mean_tv"].to_list()[0] == pytest.approx(1 / 6)


def test_alignment_keeps_shared_tokens_with_the_same_ids():
    a = from_arrays(np.zeros((4, 1), np.int16), num_experts=2, doc_id=[0, 0, 1, 1], token_id=[5, 6, 7, 8])
    b = from_arrays(np.zeros((3, 1), np.int16), num_experts=2, doc_id=[0, 0, 1], token_id=[5, 9, 7])
    al = align_tokens(a, b)
    assert al.a.tolist() == [0, 2] and al.b.tolist() == [0, 2] and al.token_mismatches == 1
    with pytest.raises(ConfigError, match="experts"):
        align_tokens(a, from_arrays(np.zeros((3, 1), np.int16), num_experts=3))


def test_identical_runs_compare_as_saturated():
    rng = np.random.default_rng(0)
    e = np.argsort(rng.random((2, 500, 16)), axis=2)[:, :, :4].astype(np.int16)
    a = from_arrays(e, num_experts=16, run_id="a", doc_id=np.repeat(np.arange(10), 50))
    b = from_arrays(e[:, :, ::-1].copy(), num_experts=16, run_id="b", doc_id=np.repeat(np.arange(10), 50))
    data = build_comparison(a, b)
    assert [r["saturation"] for r in data["layers"]] == [1.0, 1.0]
    assert [r["load_tv"] for r in data["layers"]] == [0.0, 0.0]
    assert all(r["specialization_tv"]["position"] == 0.0 for r in data["layers"])
    # reversed slot order: the sets agree, the first choices do not
    assert all(r["top1_agreement"] < 0.2 for r in data["layers"])


def test_confidence_by_hand():
    # logits [ln 3, 0]: softmax [.75, .25]; H = 0.562335 nats, / ln 2 = 0.811278; margin .5; lse = ln 4
    c = token_confidence(np.array([[math.log(3), 0.0], [0.0, 0.0]]))
    assert c["entropy"][0] == pytest.approx(0.562335, abs=1e-6)
    assert c["entropy_norm"][0] == pytest.approx(0.811278, abs=1e-6)
    assert c["margin"][0] == pytest.approx(0.5) and c["lse"][0] == pytest.approx(math.log(4))
    # uniform router: normalized entropy 1, margin 0, lse = ln E
    assert c["entropy_norm"][1] == pytest.approx(1.0) and c["margin"][1] == 0 and c["lse"][1] == pytest.approx(math.log(2))


def test_probabilities_follow_the_scoring_rule():
    x = np.array([[0.0, math.log(3.0), np.nan]])  # a nan padding column stays out
    soft = router_probabilities(x, "softmax", "logits")
    assert np.allclose(soft[0, :2], [0.25, 0.75]) and np.isnan(soft[0, 2])
    sig = router_probabilities(x, "sigmoid", "logits")  # sigmoid 0.5 and 0.75, normalised
    assert np.allclose(sig[0, :2], [0.5 / 1.25, 0.75 / 1.25])
    probs = router_probabilities(np.array([[0.2, 0.6]]), "softmax", "probs")
    assert np.allclose(probs, [[0.25, 0.75]])
    assert "lse" not in token_confidence(np.array([[0.2, 0.6]]), "softmax", "probs")


def test_aux_loss_by_hand():
    # f = [3, 1] / 4, P = [.6, .4]: E * sum f P = 2 * (.45 + .1) = 1.1; uniform = 1
    assert aux_loss(np.array([3, 1]), np.array([0.6, 0.4])) == pytest.approx(1.1)
    assert aux_loss(np.array([5, 5, 5, 5]), np.full(4, 0.25)) == pytest.approx(1.0)
