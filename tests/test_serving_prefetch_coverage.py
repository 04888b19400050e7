"""Prefetch accuracy and batch coverage on planted traces: a predictable mapping gives accuracy 1,
independent layers give the uniform baseline; coverage against E(1 - (1 - k/E)^B)."""

from __future__ import annotations

import numpy as np
import pytest

from moelens.analysis.serving.coverage import step_distinct, uniform_distinct
from moelens.analysis.serving.prefetch import layer_masks, prefetch_accuracy
from moelens.analysis.serving.schedule import decode_schedule


def _random_sets(rng, T, E, k):
    return np.argsort(rng.random((T, E)), axis=1)[:, :k].astype(np.int16)


def _accuracy(source_layer, target, fold, E, k):
    hits, popular, total = prefetch_accuracy(source_layer[:, 0], layer_masks(target, E), target, fold, E, k)
    return hits / total, popular / total


def test_predictable_next_layer_gives_accuracy_one():
    rng = np.random.default_rng(0)
    T, E, k = 4000, 16, 2
    first = _random_sets(rng, T, E, k)
    # the next layer's experts are a fixed function of the first choice: {e+1, e+5} mod E
    second = np.stack([(first[:, 0] + 1) % E, (first[:, 0] + 5) % E], axis=1).astype(np.int16)
    fold = (np.arange(T) // 50) % 2 == 1
    acc, popular = _accuracy(first, second, fold, E, k)
    assert acc == 1.0
    assert popular < 0.3  # the next layer is near uniform overall: popularity cannot do it


def test_independent_layers_give_the_uniform_baseline():
    rng = np.random.default_rng(1)
    T, E, k = 60000, 16, 2
    first, second = _random_sets(rng, T, E, k), _random_sets(rng, T, E, k)
    fold = (np.arange(T) // 100) % 2 == 1
    acc, popular = _accuracy(first, second, fold, E, k)
    # each guessed set of k is independent of the truth: expected accuracy k/E = 0.125;
    # standard error ~ sqrt(.125 * .875 / 120000) = 0.001
    assert acc == pytest.approx(k / E, abs=0.006)
    assert popular == pytest.approx(k / E, abs=0.006)


def test_coverage_baseline_formula_and_planted_traces():
    assert uniform_distinct(8, 2, 1) == pytest.approx(2.0)
    assert uniform_distinct(8, 2, 2) == pytest.approx(8 * (1 - 0.75 ** 2))  # 3.5
    E, k, B = 16, 2, 4
    docs = np.repeat(np.arange(40), 50)
    s = decode_schedule(docs, B)
    order, starts = s.by_step()
    # everyone routed to {3, 7}: every step touches exactly 2 experts
    same = np.tile(np.array([[3, 7]], np.int16), (len(docs), 1))
    distinct, busy = step_distinct(layer_masks(same, E), order, starts, B)
    assert (distinct == 2).all() and busy.max() == B
    # independent uniform tokens: the mean over full steps is E(1-(1-k/E)^B) = 6.2 (+/- a few 0.01)
    rng = np.random.default_rng(0)
    uniform = np.argsort(rng.random((len(docs), E)), axis=1)[:, :k].astype(np.int16)
    distinct, busy = step_distinct(layer_masks(uniform, E), order, starts, B)
    assert distinct[busy == B].mean() == pytest.approx(uniform_distinct(E, k, B), abs=0.1)
