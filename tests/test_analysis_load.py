"""Load metrics: hand-computed values on literal tables, invariants, collapse and EP balancedness."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from moelens.analysis import LoadOptions, from_arrays
from moelens.analysis.load import balancedness, device_loads, expert_counts, expert_load, layer_load_stats, load_summary


def test_layer_load_stats_by_hand():
    # counts [6, 2, 0, 0]: total 8, mean 2, shares [.75, .25, 0, 0]
    s = layer_load_stats(np.array([6, 2, 0, 0]))
    assert s["share"].tolist() == [0.75, 0.25, 0.0, 0.0]
    assert s["utilization"].tolist() == [3.0, 1.0, 0.0, 0.0]
    assert s["max_over_mean"] == 3.0 and s["imbalance_ratio"] == 2.0
    # std of [6, 2, 0, 0] = sqrt((16 + 0 + 4 + 4) / 4) = sqrt(6); CV = sqrt(6) / 2
    assert s["cv"] == pytest.approx(math.sqrt(6) / 2)
    # Gini = sum |xi - xj| over ordered pairs / (2 n^2 mean) = 40 / 64
    assert s["gini"] == pytest.approx(0.625)
    # H = -(.75 ln .75 + .25 ln .25) = 0.562335 nats; / ln 4 = 0.405639; exp(H) = 1.754765
    assert s["entropy"] == pytest.approx(0.562335, abs=1e-6)
    assert s["entropy_norm"] == pytest.approx(0.405639, abs=1e-6)
    assert s["effective_experts"] == pytest.approx(1.754765, abs=1e-6)
    assert s["dead_experts"] == [2, 3] and s["dead_fraction"] == 0.5 and s["never_routed"] == 2
    # exp(H)/E = 0.44 >= 0.3, but half the experts are dead (>= 50 %): collapsed for that reason only
    assert s["collapsed"] and "2 of 4 experts dead" in s["collapse_reason"]
    assert "effective" not in s["collapse_reason"]


def test_uniform_load_is_the_baseline():
    s = layer_load_stats(np.full(8, 10))
    assert s["max_over_mean"] == 1.0 and s["imbalance_ratio"] == 0.0 and s["cv"] == 0.0 and s["gini"] == 0.0
    assert s["entropy_norm"] == pytest.approx(1.0) and s["effective_experts"] == pytest.approx(8.0)
    assert s["dead_experts"] == [] and not s["collapsed"] and s["collapse_reason"] is None
    assert s["balancedness_contiguous_8"] == 1.0 and s["balancedness_greedy_8"] == 1.0


def test_collapse_by_effective_experts_and_thresholds():
    # 2 of 8 experts take everything: exp(H) = 2 (25 % < 30 %) and 6 of 8 dead (75 %)
    s = layer_load_stats(np.array([50, 50, 0, 0, 0, 0, 0, 0]))
    assert s["collapsed"] and "effective experts 2.0 of 8" in s["collapse_reason"] and "6 of 8 experts dead" in s["collapse_reason"]
    # one expert at 8 % of a fair share is dead at the default 10 % threshold, alive at 5 %
    counts = np.array([100, 100, 100, 100, 100, 100, 100, 8])
    assert layer_load_stats(counts)["dead_experts"] == [7]
    assert layer_load_stats(counts, LoadOptions(dead_threshold=0.05))["dead_experts"] == []


def test_balancedness_contiguous_and_greedy_by_hand():
    counts = np.array([5, 3, 1, 1])
    # contiguous: devices {0,1} = 8 and {2,3} = 2 -> mean 5 / max 8
    assert device_loads(counts, 2, "contiguous").tolist() == [8.0, 2.0]
    assert balancedness(counts, 2, "contiguous") == pytest.approx(5 / 8)
    # greedy (EPLB balanced_packing, 2 experts per device): 5 -> d0, 3 -> d1, 1 -> d1 (full), 1 -> d0
    assert sorted(device_loads(counts, 2, "greedy").tolist()) == [4.0, 6.0]
    assert balancedness(counts, 2, "greedy") == pytest.approx(5 / 6)
    # uneven split: 5 experts on 2 devices get 3 + 2 (contiguous) and room 3 + 2 (greedy)
    assert device_loads(np.ones(5), 2, "contiguous").tolist() in ([3.0, 2.0], [2.0, 3.0])
    assert sum(device_loads(np.arange(5), 2, "greedy")) == 10


def test_counts_from_routing_ignore_dropped_slots_and_invariants():
    rng = np.random.default_rng(0)
    E, k, T = 16, 4, 2000
    experts = np.argsort(rng.random((3, T, E)), axis=2)[:, :, :k].astype(np.int16)
    experts[1, :10, 3] = -1  # dropped choices
    experts[2, :5] = -1  # five tokens fully dropped at layer 2
    routing = from_arrays(experts, num_experts=E, doc_id=np.repeat(np.arange(20), 100))
    layers, counts, tokens = expert_counts(routing)
    assert layers.tolist() == [0, 1, 2]
    assert counts.sum(1).tolist() == [T * k, T * k - 10, (T - 5) * k]
    assert tokens.tolist() == [T, T, T - 5]
    assert counts[0].tolist() == [int((experts[0] == e).sum()) for e in range(E)]
    summary = load_summary(routing)
    assert ((summary["entropy_norm"] >= 0) & (summary["entropy_norm"] <= 1 + 1e-12)).all()
    assert ((summary["effective_experts"] >= k - 1e-9) & (summary["effective_experts"] <= E + 1e-9)).all()
    table = expert_load(routing)
    sums = table.group_by("layer").agg(s=pl.col("share").sum())["s"].to_numpy()
    assert np.allclose(sums, 1.0)
    # random uniform routing: nothing dead, not collapsed, max/mean close to 1
    assert not summary["collapsed"].any() and (summary["dead_fraction"] == 0).all()
    assert (summary["max_over_mean"] < 1.3).all()


def test_load_options_are_validated():
    from moelens.errors import ConfigError

    with pytest.raises(ConfigError, match="dead_threshold"):
        LoadOptions(dead_threshold=1.5)
    with pytest.raises(ConfigError, match="devices"):
        LoadOptions(devices=(0,))
