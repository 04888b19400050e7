"""Candidate pairs by hand: co-activation, label profiles, weight similarity, disjoint best pairs."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from moelens.interventions.candidates import best_pairs, coactivation_similarity, profile_similarity, weight_pairs


def test_coactivation_similarity_by_hand():
    # layer 0, 3 experts: N(0)=4, N(1)=9, N(2)=1; N(0,1)=3, N(0,2)=0, N(1,2)=1 (ordered rows both ways)
    counts = {(0, 1): 3, (0, 2): 0, (1, 2): 1}
    n = {0: 4, 1: 9, 2: 1}
    rows = [{"layer": 0, "expert": i, "partner": j, "count": counts[tuple(sorted((i, j)))], "expert_count": n[i]}
            for i in range(3) for j in range(3) if i != j]
    got = coactivation_similarity(pl.DataFrame(rows))
    assert got.select("a", "b").rows() == [(0, 1), (0, 2), (1, 2)]
    assert got["coactivation"].to_list() == pytest.approx([3 / 6, 0.0, 1 / 3])


def test_profile_similarity_by_hand():
    # shares over (domain=code, domain=prose, language=ar): e0 (1, 0, 1), e1 (2, 0, 2), e2 (0, 1, 0)
    shares = {0: (1.0, 0.0, 1.0), 1: (2.0, 0.0, 2.0), 2: (0.0, 1.0, 0.0)}
    keys = [("domain", "code"), ("domain", "prose"), ("language", "ar")]
    rows = [{"label": k[0], "layer": 3, "value": k[1], "expert": e, "share": s[i]}
            for e, s in shares.items() for i, k in enumerate(keys)]
    got = profile_similarity(pl.DataFrame(rows))
    assert got.select("layer", "a", "b").rows() == [(3, 0, 1), (3, 0, 2), (3, 1, 2)]
    assert got["profile_similarity"].to_list() == pytest.approx([1.0, 0.0, 0.0])
    # a half-overlapping profile: (1, 0, 1) vs (1, 1, 0) -> 1 / 2
    rows2 = [{"label": k[0], "layer": 0, "value": k[1], "expert": e, "share": s[i]}
             for e, s in {0: (1.0, 0.0, 1.0), 1: (1.0, 1.0, 0.0)}.items() for i, k in enumerate(keys)]
    assert profile_similarity(pl.DataFrame(rows2))["profile_similarity"][0] == pytest.approx(0.5)


def test_best_pairs_by_hand():
    sim = np.array([[1.0, 0.2, 0.9, 0.1],
                    [0.2, 1.0, 0.3, 0.8],
                    [0.9, 0.3, 1.0, 0.95],
                    [0.1, 0.8, 0.95, 1.0]])
    frame = weight_pairs(sim, 5)
    assert frame.height == 6 and frame.filter((pl.col("a") == 1) & (pl.col("b") == 3))["weight_similarity"][0] == 0.8
    # 2-3 (0.95) first; 0-2 and 1-3 blocked; 0-1 (0.2) is left
    assert best_pairs(frame, 5, 2) == [(2, 3), (0, 1)]
    assert best_pairs(frame, 4, 2) == []
    assert math.isclose(frame["weight_similarity"].max(), 0.95)


def test_size_quality_prune_equals_measure_of_the_same_pruning():
    pa = pytest.importorskip("pyarrow")
    pytest.importorskip("torch")
    from moelens.data import DocumentSet
    from moelens.interventions.effects import measure
    from moelens.interventions.whatif import size_quality
    from moelens.models.discover import plan_model
    from moelens.models.tiny import build_tiny_model

    model = build_tiny_model("qwen3_moe")
    layer = min(plan_model(model).moe_layers)
    rng = np.random.default_rng(2)
    docs = DocumentSet(pa.table({"input_ids": [rng.integers(2, 250, size=10).tolist() for _ in range(3)]}),
                       name="d", text_column=None, ids_column="input_ids")
    usage = {layer: np.array([40.0, 5.0, 30.0, 1.0, 22.0, 9.0, 17.0, 3.0])}
    curve = size_quality(model, docs, layers=[layer], n=[2], methods=["least-used"], usage=usage,
                         labels=[], n_boot=20, progress=False)
    mine = measure(model, docs, [{"prune": {layer: [3, 7]}}], labels=[], n_boot=20, progress=False)
    row = curve.row(0, named=True)
    assert row["experts"] == [3, 7] and row["n_removed"] == 2
    assert row["d_loss"] == pytest.approx(mine["d_loss"][0]) and row["kl"] == pytest.approx(mine["kl"][0])
