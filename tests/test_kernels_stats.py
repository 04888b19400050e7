"""Stats-mode aggregates (torch reference) against a hand table and independent numpy loops."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from moelens.errors import ConfigError
from moelens.kernels import StatsAccumulator, StatsTables, route_records_torch, update_stats_torch


def np_aggregate(batches, L, E, NL, B):
    """Independent oracle: plain Python loops over (layer, ids, entropy, labels, valid) batches."""
    counts = np.zeros((L, E), np.int64)
    coact = np.zeros((L, E, E), np.int64)
    hist = np.zeros((L, B), np.int64)
    tokens = np.zeros(L, np.int64)
    lcounts = np.zeros((L, NL + 1, E), np.int64)
    lhist = np.zeros((L, NL + 1, B), np.int64)
    ltokens = np.zeros((L, NL + 1), np.int64)
    scale = np.float32(B / math.log(E))
    for layer, ids, entropy, labels, valid in batches:
        for t in range(len(ids)):
            if valid is not None and not valid[t]:
                continue
            lab = None
            if labels is not None:
                lab = int(labels[t]) if 0 <= labels[t] < NL else NL
                ltokens[layer, lab] += 1
            tokens[layer] += 1
            chosen = [int(e) for e in ids[t] if 0 <= e < E]
            for a in chosen:
                counts[layer, a] += 1
                if lab is not None:
                    lcounts[layer, lab, a] += 1
                for b in chosen:
                    coact[layer, a, b] += 1
            h = np.float32(entropy[t])
            if not np.isnan(h):
                b = int(min(max(np.floor(h * scale), 0), B - 1))
                hist[layer, b] += 1
                if lab is not None:
                    lhist[layer, lab, b] += 1
    return {"expert_counts": counts, "coactivation": coact, "entropy_hist": hist, "tokens": tokens,
            "label_expert_counts": lcounts, "label_entropy_hist": lhist, "label_tokens": ltokens}  # fmt: skip


def test_coactivation_hand_table():
    # two tokens, k=2, E=4: token 0 -> {1, 3}, token 1 -> {3, 0}; a dropped slot counts nothing
    acc = StatsAccumulator(1, 4, entropy_bins=2, backend="torch")
    ids = torch.tensor([[1, 3], [3, 0], [2, -1]], dtype=torch.int16)
    acc.update(0, ids, torch.tensor([0.1, 1.0, 0.7]))
    host = acc.to_host()
    assert host["coactivation"][0].tolist() == [
        [1, 0, 0, 1],
        [0, 1, 0, 1],
        [0, 0, 1, 0],
        [1, 1, 0, 2],
    ]
    assert host["expert_counts"][0].tolist() == [1, 1, 1, 2]
    # bins of width log(4)/2 = 0.693: 0.1 -> 0, 1.0 -> 1, 0.7 -> 1
    assert host["entropy_hist"][0].tolist() == [1, 2]
    assert host["tokens"].tolist() == [3]
    np.testing.assert_allclose(host["entropy_bin_edges"], [0.0, math.log(4) / 2, math.log(4)])
    assert "label_expert_counts" not in host


@pytest.mark.parametrize("E, k, NL", [(8, 2, 3), (60, 8, 0), (16, 16, 2)])
def test_update_matches_numpy_loops(E, k, NL):
    g = torch.Generator().manual_seed(E + k)
    L, B = 3, 7
    tables = StatsTables.zeros(L, E, num_labels=NL, entropy_bins=B)
    batches = []
    for layer, T in ((0, 1), (2, 29), (2, 13), (1, 31)):
        ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)]).to(torch.int16)
        ids[0, -1] = -1
        entropy = torch.rand(T, generator=g) * math.log(E) * 1.05  # some above log E: clamped
        entropy[-1] = float("nan") if T > 1 else entropy[-1]
        valid = torch.rand(T, generator=g) > 0.25 if layer != 1 else None
        labels = torch.randint(-1, NL + 2, (T,), generator=g) if NL else None
        update_stats_torch(tables, layer, ids, entropy, labels, valid)
        batches.append((layer, ids.numpy(), entropy.numpy(), None if labels is None else labels.numpy(),
                        None if valid is None else valid.numpy()))  # fmt: skip
    expected = np_aggregate(batches, L, E, NL, B)
    for name, table in expected.items():
        np.testing.assert_array_equal(getattr(tables, name).numpy(), table, err_msg=name)
    # invariants: the diagonal is the expert count; counts sum to recorded, non-dropped ids
    for layer in range(L):
        np.testing.assert_array_equal(np.diag(tables.coactivation[layer].numpy()), tables.expert_counts[layer].numpy())
    total_ids = sum(int(((ids >= 0) & (np.ones(len(ids), bool) if valid is None else valid)[:, None]).sum())
                    for _, ids, _, _, valid in batches)  # fmt: skip
    assert int(tables.expert_counts.sum()) == total_ids


def test_accumulator_observe_columns_and_reset():
    g = torch.Generator().manual_seed(3)
    acc = StatsAccumulator(2, 8, num_labels=2, entropy_bins=4, backend="torch")
    logits = torch.randn(6, 8, generator=g)
    labels = torch.tensor([0, 1, 1, 5, -1, 0])
    valid = torch.tensor([True, True, True, True, True, False])
    rec = acc.observe(1, logits, k=2, labels=labels, valid=valid)
    ref = route_records_torch(logits, k=2)
    assert torch.equal(rec.ids[:5], ref.ids[:5])
    host = acc.to_host()
    assert host["tokens"].tolist() == [0, 5]
    assert host["label_tokens"][1].tolist() == [1, 2, 2]  # labels 5 and -1 fall in the last row
    assert host["expert_counts"][1].sum() == 10
    cols = acc.to_columns()
    frame = pl.DataFrame(cols["expert_counts"])
    assert frame.shape == (16, 3) and frame["count"].sum() == 10
    co = pl.DataFrame(cols["coactivation"])
    assert (co["count"] > 0).all() and co["count"].sum() == 5 * 4
    hist = pl.DataFrame(cols["entropy_hist"])
    assert hist.filter(pl.col("layer") == 1)["count"].sum() == 5
    np.testing.assert_allclose(hist["hi"] - hist["lo"], math.log(8) / 4)
    assert pl.DataFrame(cols["label_expert_counts"])["count"].sum() == 10
    acc.reset()
    assert all(v.sum() == 0 for name, v in acc.to_host().items() if name != "entropy_bin_edges")


def test_single_expert_and_dropped_only():
    acc = StatsAccumulator(1, 1, entropy_bins=3, backend="torch")
    acc.update(0, torch.tensor([[0], [-1]]), torch.tensor([0.0, 0.0]))
    host = acc.to_host()
    assert host["expert_counts"].tolist() == [[1]] and host["coactivation"].tolist() == [[[1]]]
    assert host["entropy_hist"].tolist() == [[2, 0, 0]]


def test_update_rejects_bad_arguments():
    acc = StatsAccumulator(2, 8, backend="torch")
    ids, h = torch.zeros(3, 2, dtype=torch.int16), torch.zeros(3)
    with pytest.raises(ConfigError, match="num_labels=0"):
        acc.update(0, ids, h, labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ConfigError, match="layer=2"):
        acc.update(2, ids, h)
    with pytest.raises(ConfigError, match="entropy"):
        acc.update(0, ids, torch.zeros(4))
    with pytest.raises(ConfigError, match="valid"):
        acc.update(0, ids, h, valid=torch.ones(3))
    with pytest.raises(ConfigError, match="num_experts"):
        StatsAccumulator(2, 0)


def test_label_only_update_adds_just_the_label_tables():
    g = torch.Generator().manual_seed(11)
    E, NL, B, T = 8, 3, 5, 40
    tables = StatsTables.zeros(1, E, num_labels=NL, entropy_bins=B)
    ids = torch.stack([torch.randperm(E, generator=g)[:2] for _ in range(T)]).to(torch.int16)
    entropy = torch.rand(T, generator=g) * math.log(E)
    labels = torch.randint(-1, NL + 1, (T,), generator=g)
    valid = torch.rand(T, generator=g) > 0.2
    update_stats_torch(tables, 0, ids, entropy, labels, valid, main=False)
    expected = np_aggregate([(0, ids.numpy(), entropy.numpy(), labels.numpy(), valid.numpy())], 1, E, NL, B)
    for name in ("label_expert_counts", "label_entropy_hist", "label_tokens"):
        np.testing.assert_array_equal(getattr(tables, name).numpy(), expected[name], err_msg=name)
    for name in ("expert_counts", "coactivation", "entropy_hist", "tokens"):
        assert not getattr(tables, name).any(), name
    with pytest.raises(ConfigError, match="pass labels"):
        update_stats_torch(tables, 0, ids, entropy, None, valid, main=False)


def test_stats_sink_with_two_label_kinds_equals_one_accumulator_per_kind():
    """One shared accumulator (co-activation once) gives what a full accumulator per kind gave."""
    from moelens.hooks.events import RouterEvent, StepContext
    from moelens.kernels.sinks import StatsSink

    g = torch.Generator().manual_seed(5)
    E, k, T = 8, 2, 30
    sink = StatsSink({0: 0, 3: 1}, num_experts=E, k=k, device="cpu", label_sizes={"language": 3, "domain": 2},
                     entropy_bins=6, backend="torch")
    alone = {kind: StatsAccumulator(2, E, num_labels=n, entropy_bins=6, backend="torch")
             for kind, n in (("language", 3), ("domain", 2))}
    valid = torch.rand(T, generator=g) > 0.1
    sink.on_step(StepContext(0, "model", 1, T, 0, None, valid, torch.arange(T)))
    for _ in range(2):
        labels = {"language": torch.randint(-1, 4, (T,), generator=g), "domain": torch.randint(-1, 2, (T,), generator=g)}
        sink.set_labels(labels)
        for site, slot in ((0, 0), (3, 1)):
            logits = torch.randn(T, E, generator=g)
            weights, ids = torch.softmax(logits, -1).topk(k, dim=-1)
            sink.on_route(RouterEvent(site, 0, ids, weights, logits))
            for kind, acc in alone.items():
                acc.observe(slot, logits, ids, weights, labels=labels[kind], valid=valid)
    drained = sink.drain()
    assert set(drained) == {"language", "domain"}
    for kind, acc in alone.items():
        want = acc.to_host()
        for name, table in want.items():
            np.testing.assert_array_equal(drained[kind][name], table, err_msg=f"{kind}.{name}")
    # one co-activation table on the device, whatever the number of label kinds
    assert sink.accumulator.tables.coactivation.shape == (2, E, E)
    assert all(v.sum() == 0 for n, v in sink.drain()["language"].items() if n != "entropy_bin_edges")
