"""Every Triton kernel against its torch reference, run on CPU by the Triton interpreter.

TRITON_INTERPRET=1 only takes effect if it is set before triton is first imported in the
process. This module sets it at import time; if something else in the test session imported
triton earlier (torch._dynamo does when triton is installed), the interpreted tests here skip
and ``test_interpreted_suite_in_fresh_process`` reruns this file in a fresh interpreter.

Shapes are awkward on purpose (T = 1, prime T; E in {8, 60, 64, 128, 256}; k in {1, 2, 8, E}),
indices must match exactly, output rows outside the written range are poisoned with sentinels
that must survive, and padding rows carry NaN logits that must be neither written nor counted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

if "triton" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"  # must precede the first import of triton

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("triton", reason="triton is not installed (pip install 'moelens[triton]')")

import torch  # noqa: E402

from moelens.kernels import (  # noqa: E402
    RecordBuffer,
    RouteRecords,
    StatsAccumulator,
    StatsTables,
    route_records_torch,
    select_experts_torch,
    update_stats_torch,
)
from moelens.kernels.backend import triton_interpreted  # noqa: E402

INTERPRETED = triton_interpreted()
CHILD_FLAG = "MOELENS_KERNEL_TESTS_CHILD"
interpreted = pytest.mark.skipif(
    not INTERPRETED,
    reason="triton was imported before TRITON_INTERPRET=1 was set; "
    "test_interpreted_suite_in_fresh_process reruns these in a fresh process",
)
if INTERPRETED:
    from moelens.kernels import route_records, select_experts, update_stats

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(1, 8, 1), (1, 256, 8), (97, 8, 2), (97, 8, 8), (97, 60, 8), (97, 64, 64), (97, 128, 2),
          (97, 256, 8), (13, 256, 256)]  # fmt: skip


@pytest.mark.skipif(INTERPRETED, reason="the interpreted tests ran in this process")
def test_interpreted_suite_in_fresh_process():
    if os.environ.get(CHILD_FLAG) == "1":
        pytest.fail("triton is imported before this module even in a fresh process")
    env = {**os.environ, "TRITON_INTERPRET": "1", CHILD_FLAG: "1"}
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(Path(__file__).resolve()), "-q", "-x", "-p", "no:cacheprovider"],
        cwd=root, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in run.stdout


def _logits(T, E, dtype, seed, *, ties=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, E, generator=g) * 2
    if ties and E > 2:
        x[:, E // 2] = x[:, 1]  # an exact tie in every row
    return x.to(dtype), g


def _padding(T, g, x):
    valid = torch.rand(T, generator=g) > 0.3
    if T > 1:
        valid[0] = False
    x[~valid] = float("nan")  # padding rows: garbage that must not leak into records or counts
    return valid


def _assert_stats_close(got: RouteRecords, ref: RouteRecords, rows):
    for name in ("entropy", "margin", "lse"):
        torch.testing.assert_close(getattr(got, name)[rows], getattr(ref, name)[rows], atol=1e-5, rtol=1e-5,
                                   equal_nan=True, msg=name)  # fmt: skip


# --- route_records -------------------------------------------------------------------------------


@interpreted
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T, E, k", SHAPES)
def test_records_recompute_matches_reference(T, E, k, dtype):
    x, g = _logits(T, E, dtype, seed=T * 1000 + E + k)
    valid = _padding(T, g, x)
    weight_dtype = torch.float16 if dtype == torch.float16 else torch.float32
    out, ref = (RouteRecords.empty(T + 7, k, weight_dtype=weight_dtype) for _ in range(2))
    for buf in (out, ref):
        buf.fill_(ids=777, weight=-5.0, stat=-9.0)
    counts = torch.full((E,), 5, dtype=torch.int32)
    ref_counts = torch.full((E,), 5, dtype=torch.int64)
    route_records(x, k=k, out=out, row_offset=3, counts=counts, valid=valid)
    route_records_torch(x, k=k, out=ref, row_offset=3, counts=ref_counts, valid=valid)

    assert torch.equal(out.ids, ref.ids)
    assert torch.equal(counts.long(), ref_counts)
    written = torch.zeros(T + 7, dtype=torch.bool)
    written[3:3 + T] = valid
    tol = 1e-3 if weight_dtype == torch.float16 else 1e-6
    torch.testing.assert_close(out.weights, ref.weights, atol=tol, rtol=tol)
    _assert_stats_close(out, ref, written)
    # independent of the reference: poison survives outside the written rows, invariants hold
    assert (out.ids[~written] == 777).all() and (out.weights[~written] == -5.0).all()
    assert (out.entropy[~written] == -9.0).all() and (out.lse[~written] == -9.0).all()
    assert int(counts.sum()) - 5 * E == int(valid.sum()) * k
    assert all(len(set(row)) == k for row in out.ids[written].tolist())
    if E > 2 and k >= 2 and written.any():  # the tied pair (columns 1 and E//2) keeps id order
        row = out.ids[written][0].tolist()
        if 1 in row and E // 2 in row:
            assert row.index(1) < row.index(E // 2)


@interpreted
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T, E, k", SHAPES)
def test_records_given_ids_match_reference(T, E, k, dtype):
    x, g = _logits(T, E, dtype, seed=T + E * 7 + k)
    valid = _padding(T, g, x)
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])
    dropped = torch.rand(T, k, generator=g) < 0.1
    ids[dropped] = -1
    weights = torch.rand(T, k, generator=g).to(dtype)
    out, ref = RouteRecords.empty(T + 2, k), RouteRecords.empty(T + 2, k)
    counts, ref_counts = torch.zeros(E, dtype=torch.int64), torch.zeros(E, dtype=torch.int64)
    route_records(x, ids, weights, out=out, row_offset=1, counts=counts, valid=valid)
    route_records_torch(x, ids, weights, out=ref, row_offset=1, counts=ref_counts, valid=valid)
    assert torch.equal(out.ids, ref.ids)
    assert torch.equal(out.weights, ref.weights)  # a cast, so exact
    assert torch.equal(counts, ref_counts)
    assert int(counts.sum()) == int(((ids >= 0) & valid[:, None]).sum())
    rows = torch.zeros(T + 2, dtype=torch.bool)
    rows[1:1 + T] = valid
    _assert_stats_close(out, ref, rows)
    assert (out.ids[~rows] == -1).all() and out.entropy[~rows].isnan().all()


@interpreted
def test_records_ties_and_single_expert_by_hand():
    rec = route_records(torch.zeros(3, 8), k=8)
    assert rec.ids.tolist() == [list(range(8))] * 3
    np.testing.assert_allclose(rec.entropy.numpy(), np.log(8), rtol=1e-6)
    assert rec.margin.tolist() == [0.0] * 3
    rec = route_records(torch.tensor([[2.0]]), k=1)
    assert rec.ids.tolist() == [[0]] and rec.margin.tolist() == [1.0] and rec.entropy.tolist() == [0.0]


@interpreted
def test_records_from_a_strided_view():
    x = torch.randn(2, 41, 64)[:, 3:, :].reshape(-1, 64)[::2]  # row stride 128, 38 rows
    assert x.stride(0) == 128
    out = route_records(x, k=8)
    ref = route_records_torch(x, k=8)
    assert torch.equal(out.ids, ref.ids)
    torch.testing.assert_close(out.weights, ref.weights)


# --- select_experts ------------------------------------------------------------------------------


def _groups(E):
    return {8: 4, 60: 4, 64: 8, 128: 8, 256: 8}[E]


def _options(rule, E, k, g):
    if rule == "softmax_topk":
        return {}
    if rule == "softmax_topk_plain":
        return {"renormalize": False, "scaling_factor": 1.5}
    if rule == "topk_softmax":
        return {"scaling_factor": 2.0}
    bias = torch.randn(E, generator=g) * 0.1
    bias[E // 2] = bias[1]  # keep the planted tie a tie
    if rule == "sigmoid_bias":
        return {"bias": bias, "eps": 1e-6, "scaling_factor": 2.5}
    G = _groups(E)
    top = G // 2 if k <= (G // 2) * (E // G) else G
    return {"bias": bias, "n_group": G, "topk_group": top, "scaling_factor": 2.5, "eps": 1e-20}


def _separate(x, options, g, min_gap=1e-5):
    """Redraw rows whose sigmoid selection scores are closer than rounding could resolve.

    torch.sigmoid and Triton's sigmoid differ by an ulp on some inputs, so two scores closer
    than that could swap. Exact duplicates (same logit and bias) stay: both sides see a tie.
    """
    bias = options.get("bias")
    for _ in range(100):
        x64 = x.double()
        c = torch.sigmoid(x64) + (0 if bias is None else bias.double())
        bad = torch.zeros(len(x), dtype=torch.bool)
        for t in range(len(x)):
            values = [c[t].unique()]
            if "n_group" in options:
                grouped = c[t].view(options["n_group"], -1).topk(2, dim=-1).values.sum(-1)
                values.append(grouped.unique())
            bad[t] = any(len(v) > 1 and v.diff().min() < min_gap for v in values)
        if not bad.any():
            return x
        x[bad] = (torch.randn(int(bad.sum()), x.shape[1], generator=g) * 2).to(x.dtype)
        if x.shape[1] > 2:
            x[:, x.shape[1] // 2] = x[:, 1]
    raise AssertionError("could not draw well-separated scores")


SELECT_CASES = [(T, E, k, torch.float32) for T, E, k in SHAPES] + [
    (97, 60, 8, torch.bfloat16), (97, 256, 8, torch.float16), (1, 64, 2, torch.bfloat16)
]  # fmt: skip


@interpreted
@pytest.mark.parametrize("rule", ["softmax_topk", "softmax_topk_plain", "topk_softmax", "sigmoid_bias", "deepseek_v3"])
@pytest.mark.parametrize("T, E, k, dtype", SELECT_CASES, ids=str)
def test_select_matches_reference(rule, T, E, k, dtype):
    x, g = _logits(T, E, dtype, seed=T * 3 + E * 5 + k)
    options = _options(rule, E, k, g)
    name = "softmax_topk" if rule == "softmax_topk_plain" else rule
    if name in ("sigmoid_bias", "deepseek_v3"):
        x = _separate(x, options, g)
    ids, weights = select_experts(x, k, name, **options)
    ref_ids, ref_weights = select_experts_torch(x, k, name, **options)
    assert ids.dtype == ref_ids.dtype == torch.int64 and weights.dtype == torch.float32
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(weights, ref_weights, atol=2e-6, rtol=2e-6)
    assert all(len(set(row)) == k for row in ids.tolist())
    scale = options.get("scaling_factor", 1.0)
    if options.get("renormalize", True) or name == "topk_softmax":
        torch.testing.assert_close(weights.sum(-1), torch.full((T,), scale), atol=1e-5, rtol=1e-5)


@interpreted
def test_select_hand_tables():
    x = torch.log(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    ids, w = select_experts(x, 2, "softmax_topk")
    assert ids.tolist() == [[3, 2]]
    np.testing.assert_allclose(w.numpy(), [[4 / 7, 3 / 7]], rtol=1e-6)
    ids, w = select_experts(torch.tensor([[1.0, 3.0, 3.0, 0.0]]), 2, "topk_softmax")
    assert ids.tolist() == [[1, 2]]
    bias = torch.tensor([0.0, 0.1, 0.2, 0.1])
    ids, w = select_experts(torch.zeros(1, 4), 2, "sigmoid_bias", bias=bias, scaling_factor=2.0)
    assert ids.tolist() == [[2, 1]]
    np.testing.assert_allclose(w.numpy(), [[1.0, 1.0]], rtol=1e-6)
    s = torch.tensor([[0.9, 0.1, 0.88, 0.01, 0.8, 0.3, 0.2, 0.2]], dtype=torch.float64)
    ids, _ = select_experts(torch.log(s / (1 - s)).float(), 3, "deepseek_v3", n_group=4, topk_group=2)
    assert ids.tolist() == [[0, 4, 5]]
    # equal group scores: the lower group id is kept
    ids, _ = select_experts(torch.zeros(2, 8), 2, "deepseek_v3", n_group=4, topk_group=1)
    assert ids.tolist() == [[0, 1], [0, 1]]


@interpreted
def test_select_zero_rows():
    ids, w = select_experts(torch.zeros(0, 8), 2, "softmax_topk")
    assert ids.shape == (0, 2) and w.shape == (0, 2)


# --- stats ---------------------------------------------------------------------------------------


@interpreted
@pytest.mark.parametrize("T, E, k, NL", [(1, 8, 1, 2), (97, 8, 8, 3), (97, 60, 8, 0), (97, 256, 2, 4), (13, 64, 64, 1)])
def test_stats_update_matches_reference(T, E, k, NL):
    g = torch.Generator().manual_seed(T + E + k)
    got = StatsTables.zeros(2, E, num_labels=NL, entropy_bins=9)
    ref = StatsTables.zeros(2, E, num_labels=NL, entropy_bins=9)
    for layer in (1, 0, 1):
        ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)]).to(torch.int16)
        ids[torch.rand(T, k, generator=g) < 0.1] = -1
        entropy = torch.rand(T, generator=g) * float(np.log(E)) * 1.05
        entropy[torch.rand(T, generator=g) < 0.1] = float("nan")
        valid = torch.rand(T, generator=g) > 0.2 if layer else None
        labels = torch.randint(-2, NL + 2, (T,), generator=g) if NL else None
        main = layer == 1 or labels is None  # layer 0 calls add a further label kind only
        update_stats(got, layer, ids, entropy, labels, valid, main=main)
        update_stats_torch(ref, layer, ids, entropy, labels, valid, main=main)
    for name in ("expert_counts", "coactivation", "entropy_hist", "tokens",
                 "label_expert_counts", "label_entropy_hist", "label_tokens"):  # fmt: skip
        assert torch.equal(getattr(got, name), getattr(ref, name)), name
    assert got.expert_counts.sum() > 0


@interpreted
def test_stats_accumulator_triton_backend_hand_table():
    acc = StatsAccumulator(1, 4, entropy_bins=2, backend="triton")
    assert acc.backend == "triton"
    acc.update(0, torch.tensor([[1, 3], [3, 0], [2, -1]], dtype=torch.int16), torch.tensor([0.1, 1.0, 0.7]))
    host = acc.to_host()
    assert host["coactivation"][0].tolist() == [[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 0], [1, 1, 0, 2]]
    assert host["entropy_hist"][0].tolist() == [1, 2]


# --- RecordBuffer with the Triton backend --------------------------------------------------------


@interpreted
def test_record_buffer_triton_equals_torch():
    g = torch.Generator().manual_seed(5)
    bufs = [RecordBuffer(3, 40, 8, 64, backend=b, weight_dtype=torch.float16) for b in ("triton", "torch")]
    assert [b.backend for b in bufs] == ["triton", "torch"]
    x = torch.randn(37, 64, generator=g).bfloat16()
    ids = torch.stack([torch.randperm(64, generator=g)[:8] for _ in range(37)])
    w = torch.rand(37, 8, generator=g).bfloat16()
    valid = torch.rand(37, generator=g) > 0.2
    for buf in bufs:
        buf.write(0, x, ids, w, valid=valid)
        buf.write(2, x[:20], row_offset=20)
        buf.write(2, x[20:], valid=valid[20:])
    got, ref = (b.to_host_async(num_tokens=37).wait() for b in bufs)
    for name in ("ids", "counts"):
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    for name in ("weights", "entropy", "margin", "lse"):
        np.testing.assert_allclose(got[name], ref[name], atol=1e-3, rtol=1e-3, err_msg=name)
