"""The torch references of moelens.kernels against hand-computed tables and numpy loops.

These references are the specification the Triton kernels are tested against
(tests/test_kernels_triton.py), so here they are checked against oracles that share no code
with them: literal tables worked out by hand, and per-row numpy/Python loops in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moelens.errors import ConfigError
from moelens.kernels import (
    RecordBuffer,
    RouteRecords,
    route_records_torch,
    select_experts_torch,
)

# --- numpy oracles (float64, explicit loops) ----------------------------------------------------


def np_topk(scores: np.ndarray, k: int) -> list[int]:
    """k best columns by descending score, equal scores by ascending column."""
    return sorted(range(len(scores)), key=lambda e: (-scores[e], e))[:k]


def np_stats(row: np.ndarray) -> tuple[float, float, float]:
    """(entropy in nats, p1 - p2, logsumexp) of softmax(row)."""
    m = row.max()
    e = np.exp(row - m)
    p = e / e.sum()
    entropy = -sum(q * math.log(q) for q in p if q > 0)
    top = sorted(p, reverse=True) + [0.0]
    return entropy, top[0] - top[1], m + math.log(e.sum())


def np_select(x: np.ndarray, k: int, rule: str, bias=None, n_group=None, topk_group=None,
              renormalize=True, scale=1.0, eps=0.0):  # fmt: skip
    ids, weights = [], []
    for row in x.astype(np.float64):
        E = len(row)
        if rule in ("softmax_topk", "topk_softmax"):
            chosen = np_topk(row, k)
            if rule == "softmax_topk":
                p = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
                w = [p[e] for e in chosen]
            else:
                v = np.array([row[e] for e in chosen])
                w = list(np.exp(v - v.max()) / np.exp(v - v.max()).sum())
        else:
            s = 1.0 / (1.0 + np.exp(-row))
            c = s + (bias if bias is not None else 0.0)
            if n_group is not None:
                size = E // n_group
                group_score = [sum(sorted(c[g * size:(g + 1) * size], reverse=True)[:2]) for g in range(n_group)]
                kept = np_topk(np.array(group_score), topk_group)
                c = np.array([c[e] if e // size in kept else -np.inf for e in range(E)])
            chosen = np_topk(c, k)
            w = [s[e] for e in chosen]
        if renormalize and rule != "topk_softmax":
            total = sum(w) + eps
            w = [v / total for v in w]
        ids.append(chosen)
        weights.append([v * scale for v in w])
    return np.array(ids), np.array(weights)


# --- route_records_torch ------------------------------------------------------------------------


def test_records_hand_table():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [math.log(1), math.log(2), math.log(3), math.log(4)]])
    rec = route_records_torch(logits, k=2)
    assert rec.ids.tolist() == [[0, 1], [3, 2]]  # uniform row: ties go to the lower ids
    assert rec.ids.dtype == torch.int16
    np.testing.assert_allclose(rec.weights.numpy(), [[0.25, 0.25], [0.4, 0.3]], rtol=1e-6)
    h2 = -sum(p * math.log(p) for p in (0.1, 0.2, 0.3, 0.4))
    np.testing.assert_allclose(rec.entropy.numpy(), [math.log(4), h2], rtol=1e-6)
    np.testing.assert_allclose(rec.margin.numpy(), [0.0, 0.1], atol=1e-6)
    np.testing.assert_allclose(rec.lse.numpy(), [math.log(4), math.log(10)], rtol=1e-6)


def test_records_single_expert_and_inf_logits():
    rec = route_records_torch(torch.tensor([[3.0]]), k=1)
    assert rec.ids.tolist() == [[0]] and rec.weights.tolist() == [[1.0]]
    assert rec.entropy.tolist() == [0.0] and rec.margin.tolist() == [1.0] and rec.lse.tolist() == [3.0]
    # a masked (-inf) expert has probability 0 and contributes 0 to the entropy, not NaN
    rec = route_records_torch(torch.tensor([[0.0, float("-inf"), 0.0]]), k=3)
    assert rec.ids.tolist() == [[0, 2, 1]]
    np.testing.assert_allclose(rec.entropy.numpy(), [math.log(2)], rtol=1e-6)
    assert rec.weights[0, 2].item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_records_match_numpy(dtype):
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(31, 60, generator=g) * 3).to(dtype)
    rec = route_records_torch(logits, k=8)
    x = logits.float().numpy()  # the oracle sees exactly the values the kernel upcasts
    for t, row in enumerate(x):
        entropy, margin, lse = np_stats(row)
        assert rec.ids[t].tolist() == np_topk(row, 8)
        assert rec.entropy[t].item() == pytest.approx(entropy, abs=2e-5)
        assert rec.margin[t].item() == pytest.approx(margin, abs=1e-6)
        assert rec.lse[t].item() == pytest.approx(lse, abs=2e-5)
    assert ((rec.entropy >= -1e-6) & (rec.entropy <= math.log(60) + 1e-5)).all()


def test_records_given_ids_offset_valid_counts_and_poison():
    T, E, k = 5, 6, 2
    logits = torch.randn(T, E)
    logits[3] = float("nan")  # a padding row: must be neither written nor counted
    ids = torch.tensor([[0, 5], [2, -1], [5, 4], [1, 1], [5, 0]])
    weights = torch.tensor([[0.7, 0.3], [1.0, 0.0], [0.5, 0.5], [9.0, 9.0], [0.6, 0.4]])
    valid = torch.tensor([True, True, True, False, True])
    out = RouteRecords.empty(10, k, weight_dtype=torch.float16)
    out.fill_(ids=77, weight=-5.0, stat=-9.0)
    counts = torch.full((E,), 10, dtype=torch.int32)
    got = route_records_torch(logits, ids, weights, out=out, row_offset=4, counts=counts, valid=valid)
    assert got is out
    assert out.ids[4:9].tolist() == [[0, 5], [2, -1], [5, 4], [77, 77], [5, 0]]
    assert out.weights.dtype == torch.float16
    assert out.weights[4:9].tolist() == [[0.7001953125, 0.300048828125], [1.0, 0.0], [0.5, 0.5],
                                          [-5.0, -5.0], [0.60009765625, 0.39990234375]]  # fmt: skip
    for name in ("ids", "weights", "entropy", "margin", "lse"):
        poisoned = torch.cat([getattr(out, name)[:4], getattr(out, name)[9:], getattr(out, name)[7:8]])
        assert (poisoned == (77 if name == "ids" else -5.0 if name == "weights" else -9.0)).all(), name
    assert torch.isfinite(out.entropy[4:7]).all() and torch.isfinite(out.entropy[8]).all()
    # counts add 1 per recorded id of a valid row; the dropped -1 and the padding row add nothing
    assert (counts - 10).tolist() == [2, 0, 1, 0, 1, 3]


def test_records_zero_rows_and_weight_dtype():
    out = route_records_torch(torch.zeros(0, 8), k=2)
    assert out.ids.shape == (0, 2)
    rec = route_records_torch(torch.randn(3, 8), k=2, weight_dtype=torch.float16)
    assert rec.weights.dtype == torch.float16


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"topk_ids": torch.zeros(4, 2, dtype=torch.long)}, "together"),
        ({}, "Pass k"),
        ({"k": 9}, "k=9"),
        ({"k": 2, "out": RouteRecords.empty(5, 2), "row_offset": 2}, "overflow"),
        ({"k": 3, "out": RouteRecords.empty(8, 2)}, "2 slots"),
        ({"k": 2, "counts": torch.zeros(7, dtype=torch.int32)}, "counts"),
        ({"k": 2, "valid": torch.ones(3, dtype=torch.bool)}, "valid"),
        ({"k": 2, "weight_dtype": torch.bfloat16}, "weight_dtype"),
    ],
)
def test_records_reject_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        route_records_torch(torch.randn(4, 8), **kwargs)


def test_records_reject_integer_logits():
    with pytest.raises(ConfigError, match="dtype"):
        route_records_torch(torch.zeros(4, 8, dtype=torch.int64), k=2)


# --- select_experts_torch ------------------------------------------------------------------------


def _logit(p):
    p = torch.tensor(p, dtype=torch.float64)
    return torch.log(p / (1 - p)).float()


def test_select_hand_tables():
    x = torch.log(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    ids, w = select_experts_torch(x, 2, "softmax_topk")
    assert ids.tolist() == [[3, 2]] and ids.dtype == torch.int64
    np.testing.assert_allclose(w.numpy(), [[4 / 7, 3 / 7]], rtol=1e-6)
    ids, w = select_experts_torch(x, 2, "softmax_topk", renormalize=False, scaling_factor=2.0)
    np.testing.assert_allclose(w.numpy(), [[0.8, 0.6]], rtol=1e-6)

    ids, w = select_experts_torch(torch.tensor([[1.0, 3.0, 3.0, 0.0]]), 2, "topk_softmax")
    assert ids.tolist() == [[1, 2]]  # tie: lower id first
    np.testing.assert_allclose(w.numpy(), [[0.5, 0.5]], rtol=1e-6)

    bias = torch.tensor([0.0, 0.1, 0.2, 0.1])
    ids, w = select_experts_torch(torch.zeros(1, 4), 2, "sigmoid_bias", bias=bias, scaling_factor=2.0)
    assert ids.tolist() == [[2, 1]]  # biased scores 0.5,0.6,0.7,0.6: the 0.6 tie goes to expert 1
    np.testing.assert_allclose(w.numpy(), [[1.0, 1.0]], rtol=1e-6)  # unbiased 0.5, 0.5 renormalised x 2

    # groups of 2, top-2 sums [1.0, 0.89, 1.1, 0.4]: groups 2 and 0 survive, so expert 1 (0.88)
    # loses to expert 5 (0.3) although a plain top-3 would take it
    s = [[0.9, 0.1, 0.88, 0.01, 0.8, 0.3, 0.2, 0.2]]
    ids, w = select_experts_torch(_logit(s), 3, "deepseek_v3", n_group=4, topk_group=2, scaling_factor=2.5)
    assert ids.tolist() == [[0, 4, 5]]
    np.testing.assert_allclose(w.numpy(), [[0.9 / 2.0 * 2.5, 0.8 / 2.0 * 2.5, 0.3 / 2.0 * 2.5]], rtol=1e-5)
    ids, _ = select_experts_torch(_logit(s), 3, "sigmoid_bias")
    assert ids.tolist() == [[0, 2, 4]]


RULE_CASES = [
    ("softmax_topk", {}),
    ("softmax_topk", {"renormalize": False, "scaling_factor": 1.5}),
    ("topk_softmax", {"scaling_factor": 2.0}),
    ("sigmoid_bias", {"bias": True, "eps": 1e-6, "scaling_factor": 2.5}),
    ("sigmoid_bias", {"renormalize": False}),
    ("deepseek_v3", {"bias": True, "n_group": 4, "topk_group": 2, "scaling_factor": 2.5, "eps": 1e-20}),
    ("deepseek_v3", {"bias": True, "renormalize": False}),
]


@pytest.mark.parametrize("rule, options", RULE_CASES)
@pytest.mark.parametrize("E, k", [(8, 1), (8, 2), (16, 16), (64, 8)])
def test_select_matches_numpy_loops(rule, options, E, k):
    g = torch.Generator().manual_seed(E * 31 + k)
    x = torch.randn(13, E, generator=g) * 2
    x[:, 1] = x[:, 0]  # an exact tie in every row
    options = dict(options)
    if options.get("bias"):
        options["bias"] = torch.randn(E, generator=g) * 0.1
        options["bias"][1] = options["bias"][0]
    if "n_group" in options and k > options["topk_group"] * E // options["n_group"]:
        options["topk_group"] = options["n_group"]
    ids, w = select_experts_torch(x, k, rule, **options)
    np_ids, np_w = np_select(
        x.numpy(), k, rule, bias=None if options.get("bias") is None else options["bias"].double().numpy(),
        n_group=options.get("n_group"), topk_group=options.get("topk_group"),
        renormalize=options.get("renormalize", True), scale=options.get("scaling_factor", 1.0),
        eps=options.get("eps", 0.0),
    )  # fmt: skip
    assert ids.tolist() == np_ids.tolist()
    np.testing.assert_allclose(w.numpy(), np_w, rtol=2e-6, atol=1e-7)
    # invariants: distinct ids per row; renormalised weights sum to the scaling factor
    assert all(len(set(row)) == k for row in ids.tolist())
    if options.get("renormalize", True) or rule == "topk_softmax":
        np.testing.assert_allclose(w.sum(-1).numpy(), options.get("scaling_factor", 1.0), rtol=1e-5)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((2, "nope"), {}, "Unknown scoring rule"),
        ((0, "softmax_topk"), {}, "k=0"),
        ((9, "softmax_topk"), {}, "k=9"),
        ((2, "softmax_topk"), {"bias": torch.zeros(8)}, "bias"),
        ((2, "sigmoid_bias"), {"bias": torch.zeros(7)}, "bias"),
        ((2, "sigmoid_bias"), {"n_group": 4, "topk_group": 2}, "deepseek_v3"),
        ((2, "deepseek_v3"), {"n_group": 3, "topk_group": 1}, "n_group=3"),
        ((2, "deepseek_v3"), {"n_group": 8, "topk_group": 1}, "n_group=8"),
        ((2, "deepseek_v3"), {"n_group": 4}, "together"),
        ((2, "deepseek_v3"), {"n_group": 4, "topk_group": 5}, "topk_group=5"),
        ((5, "deepseek_v3"), {"n_group": 4, "topk_group": 2}, "exceeds"),
    ],
)
def test_select_reject_bad_arguments(args, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        select_experts_torch(torch.randn(3, 8), *args, **kwargs)


def test_records_recompute_equals_unnormalised_softmax_topk():
    x = torch.randn(17, 60)
    rec = route_records_torch(x, k=4)
    ids, w = select_experts_torch(x, 4, "softmax_topk", renormalize=False)
    assert torch.equal(rec.ids.long(), ids)
    torch.testing.assert_close(rec.weights, w)


# --- RecordBuffer on CPU ------------------------------------------------------------------------


def test_record_buffer_cpu_roundtrip():
    buf = RecordBuffer(3, 12, 2, 8, backend="torch")
    assert buf.backend == "torch"
    x0, x2 = torch.randn(5, 8), torch.randn(7, 8).half()
    ids = torch.tensor([[1, 2], [3, -1], [0, 7], [7, 0], [4, 4]])
    weights = torch.rand(5, 2)
    valid = torch.tensor([True, True, False, True, True, True, True])
    buf.write(0, x0, ids, weights)
    buf.write(2, x2, valid=valid, row_offset=3)
    pending = buf.to_host_async(num_tokens=10)
    assert pending.ready()
    host = pending.wait()
    assert host["ids"].shape == (3, 10, 2) and host["ids"].dtype == np.int16
    assert host["counts"].shape == (3, 8)
    ref0 = route_records_torch(x0, ids, weights)
    ref2 = route_records_torch(x2, k=2)
    np.testing.assert_array_equal(host["ids"][0, :5], ref0.ids.numpy())
    np.testing.assert_array_equal(host["ids"][2, 3:10][valid.numpy()], ref2.ids.numpy()[valid.numpy()])
    assert (host["ids"][2, 5] == -1).all() and (host["ids"][1] == -1).all() and (host["ids"][2, :3] == -1).all()
    assert np.isnan(host["entropy"][1]).all()
    np.testing.assert_allclose(host["entropy"][2, 3:10][valid.numpy()], ref2.entropy.numpy()[valid.numpy()])
    assert host["counts"][0].tolist() == [2, 1, 1, 1, 2, 0, 0, 2]
    assert host["counts"][2].sum() == 2 * 6 and host["counts"][1].sum() == 0
    buf.reset()
    assert (buf.records.ids == -1).all() and (buf.counts == 0).all()
    assert host["counts"][0].sum() == 9  # the host copy is independent of the device buffer


def test_record_buffer_rejects_bad_use():
    buf = RecordBuffer(2, 4, 2, 8, backend="torch")
    with pytest.raises(ConfigError, match="layer=2"):
        buf.write(2, torch.randn(3, 8))
    with pytest.raises(ConfigError, match="experts"):
        buf.write(0, torch.randn(3, 6))
    with pytest.raises(ConfigError, match="overflow"):
        buf.write(0, torch.randn(3, 8), row_offset=2)
    with pytest.raises(ConfigError, match="num_tokens"):
        buf.to_host_async(num_tokens=5)
    with pytest.raises(ConfigError, match="k=9"):
        RecordBuffer(2, 4, 9, 8, backend="torch")


# --- no host synchronisation on the per-layer paths ---------------------------------------------

VALUE_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__")


def _refuse(self, *args, **kwargs):
    raise AssertionError("a per-layer path read a tensor value on the host")


def test_per_layer_paths_never_read_tensor_values():
    """Every Tensor -> Python value conversion is a host sync on CUDA; none may happen here."""
    from moelens.kernels import StatsAccumulator

    x = torch.randn(9, 16)
    ids, w = select_experts_torch(x, 4, "deepseek_v3", bias=torch.randn(16), n_group=4, topk_group=2)
    valid = torch.rand(9) > 0.3
    buf = RecordBuffer(2, 16, 4, 16, backend="torch")
    acc = StatsAccumulator(2, 16, num_labels=2, backend="torch")
    with pytest.MonkeyPatch.context() as mp:
        for name in VALUE_READS:
            mp.setattr(torch.Tensor, name, _refuse)
        with pytest.raises(AssertionError, match="host"):
            x.sum().item()  # the guard is live
        for rule in ("softmax_topk", "topk_softmax", "sigmoid_bias"):
            select_experts_torch(x, 4, rule)
        select_experts_torch(x, 4, "deepseek_v3", n_group=4, topk_group=2)
        buf.reset()
        buf.write(1, x, ids, w, valid=valid, row_offset=3)
        buf.write(0, x.half(), valid=valid)
        rec = acc.observe(1, x, ids, w, labels=torch.arange(9) % 3, valid=valid)
        acc.update(0, rec.ids, rec.entropy)
    assert int(buf.counts.sum()) == 2 * 4 * int(valid.sum())
    assert int(acc.tables.tokens.sum()) == int(valid.sum()) + 9
