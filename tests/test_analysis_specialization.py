"""Specialization by label: hand-computed shares, lifts and NMI; the bootstrap; the significance rule."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from moelens.analysis import SpecializationOptions, from_arrays
from moelens.analysis._common import bh_qvalues
from moelens.analysis.labels import LabelNotFoundError, available_labels, position_bucket, position_bucket_names, resolve_label
from moelens.analysis.specialization import analyse_labels, label_nmi, resample_weights, specialization_tests


def _hand_routing():
    # E = 3, k = 1. Domain a: docs 0, 1; domain b: docs 2, 3.
    #   doc 0: experts 0 0 1 | doc 1: 0 2 | doc 2: 1 1 2 | doc 3: 2 1
    experts = np.array([0, 0, 1, 0, 2, 1, 1, 2, 2, 1], dtype=np.int16)[:, None]
    doc = [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    docs = [{"doc_id": 0, "domain": "a", "meta": {"src": "x"}}, {"doc_id": 1, "domain": "a", "meta": {"src": "y"}},
            {"doc_id": 2, "domain": "b"}, {"doc_id": 3, "domain": "b", "meta": {"src": "x"}}]
    return from_arrays(experts, num_experts=3, doc_id=doc, documents=docs)


def test_share_and_lift_by_hand():
    # domain a (5 tokens): expert 0: 3, 1: 1, 2: 1 -> shares .6 .2 .2
    # domain b (5 tokens): expert 0: 0, 1: 3, 2: 2 -> shares 0 .6 .4
    # overall (10 tokens): .3 .4 .3 -> lifts a: 2, .5, .667; b: 0, 1.5, 1.333
    opts = SpecializationOptions(min_tokens=1, min_docs=1, min_count=1)
    t = specialization_tests(_hand_routing(), "domain", options=opts).sort("value", "expert")
    assert t["value"].to_list() == ["a"] * 3 + ["b"] * 3
    assert t["count"].to_list() == [3, 1, 1, 0, 3, 2]
    assert t["tokens"].to_list() == [5] * 6 and t["docs"].to_list() == [2] * 6
    assert np.allclose(t["share"].to_numpy(), [0.6, 0.2, 0.2, 0.0, 0.6, 0.4])
    assert np.allclose(t["overall_share"].to_numpy(), [0.3, 0.4, 0.3] * 2)
    assert np.allclose(t["lift"].to_numpy(), [2.0, 0.5, 2 / 3, 0.0, 1.5, 4 / 3])
    assert np.allclose(t["baseline_share"].to_numpy(), 1 / 3)  # k / E
    # the interval brackets the estimate
    ok = t.filter(pl.col("ci_low").is_not_nan())
    assert ((ok["ci_low"] <= ok["lift"] + 1e-9) & (ok["lift"] <= ok["ci_high"] + 1e-9)).all()


def test_nmi_by_hand():
    # joint P(v, e) = [[.3 .1 .1], [0 .3 .2]]; H(V) = ln 2, H(E) = H(.3, .4, .3) = 1.088900,
    # H(joint) = 1.504788 -> I = 0.277259, NMI = I / ((H(V) + H(E)) / 2) = 0.311169
    nmi = label_nmi(_hand_routing(), "domain")
    assert nmi["nmi"].item() == pytest.approx(0.311169, abs=1e-6)
    # independence bias (V-1)(E-k) / (2A) = 1 * 2 / 20 nats, normalised by (H(V) + H(E)) / 2 = 0.891024
    assert nmi["nmi_baseline"].item() == pytest.approx(0.1 / 0.891024, abs=1e-6)


def test_meta_keys_and_unknown_labels():
    routing = _hand_routing()
    assert available_labels(routing) == {"domain": "document", "src": "document", "position": "token",
                                         "token_id": "token"}
    src = resolve_label(routing, "meta.src")
    assert src.values == ("x", "y") and src.codes.tolist() == [0, 1, -1, 0]  # most frequent value first
    with pytest.raises(LabelNotFoundError) as err:
        resolve_label(routing, "topic")
    message = str(err.value)
    assert "\n" not in message and "available labels: domain, src, position, token_id" in message


def test_position_buckets_by_hand():
    pos = np.array([0, 1, 2, 3, 4, 7, 8, 15, 16, 1023, 1024])
    assert position_bucket(pos).tolist() == [0, 1, 2, 2, 3, 3, 4, 4, 5, 10, 11]
    assert position_bucket_names(6) == ("0", "1", "2-3", "4-7", "8-15", "16-31")


def test_bh_qvalues_by_hand():
    # sorted p .01 .03 .04 .5 -> p * m / rank = .04 .06 .0533 .5 -> running minimum from the top
    q = bh_qvalues(np.array([0.01, 0.04, 0.03, 0.5, np.nan]))
    assert np.allclose(q[:4], [0.04, 0.16 / 3, 0.16 / 3, 0.5]) and np.isnan(q[4])


def test_resample_weights():
    W = resample_weights(50, 40, seed=3)
    assert W.shape == (40, 50) and (W.sum(1) == 50).all() and (W >= 0).all()
    assert np.array_equal(W, resample_weights(50, 40, seed=3))
    assert not np.array_equal(W, resample_weights(50, 40, seed=4))


def _random_routing(seed: int, docs: int = 300, tokens_per_doc: int = 40, E: int = 16, k: int = 2, plant: float = 0.0):
    rng = np.random.default_rng(seed)
    T = docs * tokens_per_doc
    doc = np.repeat(np.arange(docs), tokens_per_doc)
    experts = np.argsort(rng.random((2, T, E)), axis=2)[:, :, :k].astype(np.int16)
    domain = rng.integers(0, 3, docs)
    if plant:  # layer 1: tokens of domain "d0" get expert 5 in slot 0 with probability `plant`
        chosen = (domain[doc] == 0) & (rng.random(T) < plant)
        e = experts[1]
        old0, old1 = e[chosen, 0].copy(), e[chosen, 1].copy()
        e[chosen, 0] = 5
        e[chosen, 1] = np.where(old1 == 5, old0, old1)  # keep the two experts distinct
    documents = [{"doc_id": d, "domain": f"d{domain[d]}", "meta": {"coin": str(rng.integers(0, 2))}} for d in range(docs)]
    return from_arrays(experts, num_experts=E, doc_id=doc, documents=documents)


def test_uniform_random_routing_is_never_specialized():
    for seed in (0, 1):
        for a in analyse_labels(_random_routing(seed), ["domain", "coin", "position"]):
            t = a.tests.filter(pl.col("tested"))
            assert t.height > 0
            assert not t["significant"].any(), a.label
            assert abs(t["lift"].mean() - 1.0) < 0.02
            covered = ((t["ci_low"] <= 1.0) & (t["ci_high"] >= 1.0)).mean()
            assert covered >= 0.9, (a.label, covered)
            # NMI at the level expected from chance alone
            assert (a.nmi["nmi"] < 5 * a.nmi["nmi_baseline"] + 1e-3).all()


def test_planted_specialization_is_found_with_an_interval_above_one():
    routing = _random_routing(7, plant=0.5)
    t = specialization_tests(routing, "domain")
    sig = t.filter(pl.col("significant"))
    assert sig.select("layer", "value", "expert").rows() == [(1, "d0", 5)]
    row = sig.row(0, named=True)
    # expected share 0.5 + 0.5 * 2/16 = 0.5625 vs overall about 1/3 * .5625 + 2/3 * 1/8
    assert row["share"] == pytest.approx(0.5625, abs=0.03) and row["ci_low"] > 1.0 and row["q_value"] < 1e-6
    assert row["lift"] == pytest.approx(0.5625 / (0.5625 / 3 + 2 / 3 * 0.125), rel=0.1)
    nmi = label_nmi(routing, "domain")
    assert nmi.filter(pl.col("layer") == 1)["nmi"].item() > 20 * nmi.filter(pl.col("layer") == 1)["nmi_baseline"].item()


def test_values_with_too_few_documents_are_not_tested():
    routing = _random_routing(3, plant=0.9, docs=300)
    docs = routing.documents.with_columns(
        domain=pl.when(pl.col("doc_id") < 3).then(pl.lit("rare")).otherwise(pl.col("domain")))
    routing.documents = docs
    t = specialization_tests(routing, "domain")
    rare = t.filter(pl.col("value") == "rare")
    assert rare["docs"].max() == 3 and not rare["tested"].any() and not rare["significant"].any()


def test_bootstrap_is_deterministic_and_seeded():
    routing = _random_routing(5, plant=0.3)
    a = specialization_tests(routing, "domain")
    b = specialization_tests(routing, "domain")
    c = specialization_tests(routing, "domain", options=SpecializationOptions(seed=1))
    assert a.equals(b)
    assert not np.allclose(a["ci_low"].to_numpy(), c["ci_low"].to_numpy(), equal_nan=True)
    assert np.allclose(a["lift"].to_numpy(), c["lift"].to_numpy(), equal_nan=True)  # estimates do not move


def test_block_bootstrap_when_documents_exceed_max_units():
    routing = _random_routing(7, plant=0.5)
    small = SpecializationOptions(max_units=64)
    t = specialization_tests(routing, "domain", options=small)
    full = specialization_tests(routing, "domain")
    assert np.allclose(t["lift"].to_numpy(), full["lift"].to_numpy(), equal_nan=True)
    assert t.filter(pl.col("significant")).select("layer", "value", "expert").rows() == [(1, "d0", 5)]


def _dead_expert_routing(seed: int = 11):
    """E = 8, k = 1, 200 documents of 40 tokens, 8 domains (25 documents each). Expert 7 is dead: it takes only
    40 tokens, all of domain d0 (lift 8 on 4 % of d0). Expert 3 is a real d0 specialist: half of d0's tokens."""
    rng = np.random.default_rng(seed)
    docs, per = 200, 40
    doc = np.repeat(np.arange(docs), per)
    domain = np.array([f"d{d % 8}" for d in range(docs)])
    e = rng.integers(0, 7, len(doc)).astype(np.int16)  # experts 0..6 uniformly
    is_d0 = domain[doc] == "d0"
    e[is_d0 & (rng.random(len(doc)) < 0.5)] = 3
    d0_tokens = np.flatnonzero(is_d0)
    e[d0_tokens[rng.choice(len(d0_tokens), 40, replace=False)]] = 7
    documents = [{"doc_id": d, "domain": str(domain[d])} for d in range(docs)]
    return from_arrays(e[:, None], num_experts=8, doc_id=doc, documents=documents)


def test_dead_and_near_dead_experts_are_never_specialists():
    """Defect: ranking by lift put dead experts on top; a dead expert was 'significant' on a handful of tokens."""
    routing = _dead_expert_routing()
    loose = SpecializationOptions(min_count=1, min_share_ratio=0.0, min_utilization=0.0)
    old_rule = specialization_tests(routing, "domain", options=loose)
    dead = old_rule.filter((pl.col("expert") == 7) & (pl.col("value") == "d0")).row(0, named=True)
    # by hand: 40 of 1,000 d0 tokens, 40 of 8,000 tokens overall -> share 4 %, lift 8, utilization 40 / (8000 / 8)
    assert dead["count"] == 40 and dead["share"] == pytest.approx(40 / 1000) and dead["lift"] == pytest.approx(8.0)
    assert dead["utilization"] == pytest.approx(40 / 1000) and dead["significant"]  # the old rule flagged it
    assert old_rule.filter(pl.col("significant")).sort("lift", descending=True)["expert"][0] == 7  # and ranked it first
    t = specialization_tests(routing, "domain")
    row = t.filter((pl.col("expert") == 7) & (pl.col("value") == "d0")).row(0, named=True)
    assert not row["significant"] and not row["supported"] and row["state"] == "not_significant"
    sig = t.filter(pl.col("significant"))
    assert sig.select("layer", "value", "expert").rows() == [(0, "d0", 3)]
    assert sig["state"].to_list() == ["significant"]


def test_rankings_use_the_lower_bound_of_the_interval():
    from moelens.analysis.specialization import rank_cells

    cells = pl.DataFrame({"value": ["few", "many", "nan"], "lift": [9.0, 3.0, 5.0], "ci_low": [1.1, 2.5, float("nan")]})
    assert rank_cells(cells)["value"].to_list() == ["many", "few", "nan"]


def test_states_and_untested_reasons():
    routing = _random_routing(3, plant=0.9, docs=300)
    routing.documents = routing.documents.with_columns(
        domain=pl.when(pl.col("doc_id") < 3).then(pl.lit("rare")).otherwise(pl.col("domain")))
    t = specialization_tests(routing, "domain")
    assert set(t["state"].unique()) == {"significant", "not_significant", "untested"}
    assert ((t["state"] == "untested") == ~t["tested"]).all()
    assert ((t["state"] == "significant") == t["significant"]).all()
    rare = t.filter(pl.col("value") == "rare")
    assert rare["untested_reason"].unique().to_list() == ["3 documents < 5 needed"]
    assert t.filter(pl.col("tested"))["untested_reason"].null_count() == t.filter(pl.col("tested")).height
    few_tokens = specialization_tests(routing, "domain", options=SpecializationOptions(min_tokens=10**6))
    common = few_tokens.filter(pl.col("value") != "rare")  # (rare: too few documents is said first)
    assert common["untested_reason"].str.ends_with(" tokens < 1000000 needed").all() and not few_tokens["tested"].any()


def test_top1_share_by_hand():
    # k = 2, E = 3, one document of domain a: slot 0 experts 0 0 1, slot 1 experts 1 2 2
    experts = np.array([[0, 1], [0, 2], [1, 2]], dtype=np.int16)
    routing = from_arrays(experts, num_experts=3, documents=[{"doc_id": 0, "domain": "a"}])
    t = specialization_tests(routing, "domain", options=SpecializationOptions(min_tokens=1, min_docs=1)).sort("expert")
    assert t["top1_count"].to_list() == [2, 1, 0] and np.allclose(t["top1_share"].to_numpy(), [2 / 3, 1 / 3, 0])
    assert t["count"].to_list() == [2, 2, 2] and np.allclose(t["share"].to_numpy(), [2 / 3] * 3)  # top-k sums to k


def test_share_matrix_equals_the_tests_and_covers_every_cell():
    from moelens.analysis.sharematrix import share_matrix

    routing = _random_routing(5, plant=0.4)
    full = share_matrix(routing, "domain").sort("layer", "value", "expert")
    tests = specialization_tests(routing, "domain").sort("layer", "value", "expert")
    assert full.height == 2 * 3 * 16  # layers x values x experts, significant or not
    for column in ("count", "tokens", "top1_count"):
        assert full[column].to_list() == tests[column].to_list()
    for column in ("share", "top1_share", "lift", "overall_share"):
        np.testing.assert_allclose(full[column].to_numpy(), tests[column].to_numpy(), rtol=1e-12)
    sums = full.group_by("layer", "value").agg(pl.col("share").sum(), pl.col("top1_share").sum())
    assert np.allclose(sums["share"].to_numpy(), 2.0) and np.allclose(sums["top1_share"].to_numpy(), 1.0)


def test_identifier_like_columns_are_not_labels_unless_asked():
    """Defect: compare treated the 409-value `id` column as a label."""
    from moelens.analysis.compare import build_comparison
    from moelens.analysis.labels import default_labels, identifier_columns

    routing = _random_routing(2, docs=40)
    routing.documents = routing.documents.with_columns(meta=pl.format('{{"id": "doc-{}", "coin": "{}"}}',
                                                                      pl.col("doc_id"), pl.col("doc_id") % 2))
    assert identifier_columns(routing) == ["id"]
    assert "id" not in available_labels(routing) and "coin" in available_labels(routing)
    assert "id" not in default_labels(routing, 1000)
    data = build_comparison(routing, routing)
    assert set(data["specialization_shift"]) == {"domain", "coin", "position"}
    asked = specialization_tests(routing, "id")  # still there by name
    assert asked["value"].n_unique() == 40 and not asked["tested"].any()


def test_declared_labels_are_never_identifiers():
    """domain and language are labels even when every document has its own value (12 languages, one each)."""
    from moelens.analysis.labels import identifier_columns

    routing = _random_routing(4, docs=12)
    routing.documents = routing.documents.with_columns(language=pl.format("l{}", pl.col("doc_id")),
                                                       source=pl.format("/data/{}.txt", pl.col("doc_id")))
    assert available_labels(routing)["language"] == "document" and "source" not in available_labels(routing)
    assert identifier_columns(routing) == ["source"]
