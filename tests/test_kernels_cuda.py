"""CUDA-only checks: compiled Triton kernels against the references, and the async host copy.

Skipped where torch sees no CUDA device. The compiled kernels run in a fresh process because
this test session may have switched triton to its interpreter (tests/test_kernels_triton.py).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from moelens.kernels import RecordBuffer, route_records_torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

COMPARE = textwrap.dedent(
    """
    import sys
    import torch
    from moelens.kernels import (RecordBuffer, RouteRecords, StatsAccumulator, StatsTables, route_records,
                                 route_records_torch, select_experts, select_experts_torch, update_stats,
                                 update_stats_torch)
    from moelens.kernels.backend import triton_interpreted

    dev = sys.argv[1]
    assert dev == "cpu" or not triton_interpreted(), "expected compiled triton"
    g = torch.Generator(device=dev).manual_seed(0)

    def separated(scores, min_gap=1e-5):
        # rows whose sorted selection scores never come closer than rounding could resolve
        s = scores.double().sort(dim=-1).values
        gaps = s.diff(dim=-1)
        return ((gaps == 0) | (gaps >= min_gap)).all(dim=-1)

    checked = 0
    for T, E, k in [(1, 8, 1), (97, 60, 8), (4099, 64, 8), (97, 128, 2), (1031, 256, 8), (13, 256, 256)]:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            x = (torch.randn(T, E, device=dev, generator=g) * 2).to(dtype)
            valid = torch.rand(T, device=dev, generator=g) > 0.2
            x[~valid] = float("nan")
            out, ref = RouteRecords.empty(T + 3, k, device=dev), RouteRecords.empty(T + 3, k, device=dev)
            c1 = torch.zeros(E, dtype=torch.int32, device=dev)
            c2 = torch.zeros(E, dtype=torch.int64, device=dev)
            route_records(x, k=k, out=out, row_offset=2, counts=c1, valid=valid)
            route_records_torch(x, k=k, out=ref, row_offset=2, counts=c2, valid=valid)
            assert torch.equal(out.ids, ref.ids), (T, E, k, dtype)
            assert torch.equal(c1.long(), c2), (T, E, k, dtype)
            torch.testing.assert_close(out.weights, ref.weights, atol=1e-6, rtol=1e-5)
            for name in ("entropy", "margin", "lse"):
                torch.testing.assert_close(getattr(out, name), getattr(ref, name), atol=2e-5, rtol=1e-5,
                                           equal_nan=True)
            x = x.nan_to_num(0.0)
            bias = torch.randn(E, device=dev, generator=g) * 0.1
            groups = {8: 4, 60: 4, 64: 8, 128: 8, 256: 8}[E]
            top = groups // 2 if k <= (groups // 2) * (E // groups) else groups
            for rule, opts in [("softmax_topk", {}), ("topk_softmax", {}),
                               ("sigmoid_bias", {"bias": bias, "eps": 1e-6, "scaling_factor": 2.5}),
                               ("deepseek_v3", {"bias": bias, "n_group": groups, "topk_group": top,
                                                "scaling_factor": 2.5})]:
                a = select_experts(x, k, rule, **opts)
                b = select_experts_torch(x, k, rule, **opts)
                rows = torch.ones(T, dtype=torch.bool, device=dev)
                if rule in ("sigmoid_bias", "deepseek_v3"):
                    rows = separated(torch.sigmoid(x.double()) + bias.double())
                    if rule == "deepseek_v3":
                        c = torch.sigmoid(x.double()) + bias.double()
                        rows &= separated(c.view(T, groups, -1).topk(2, dim=-1).values.sum(-1))
                assert torch.equal(a.ids[rows], b.ids[rows]), (rule, T, E, k, dtype)
                torch.testing.assert_close(a.weights[rows], b.weights[rows], atol=2e-6, rtol=2e-6)
                checked += int(rows.sum())
            tables = [StatsTables.zeros(2, E, num_labels=3, entropy_bins=16, device=dev) for _ in range(2)]
            labels = torch.randint(-1, 4, (T,), device=dev, generator=g)
            update_stats(tables[0], 1, out.ids[2:T + 2], out.entropy[2:T + 2], labels, valid)
            update_stats_torch(tables[1], 1, out.ids[2:T + 2], out.entropy[2:T + 2], labels, valid)
            for name in ("expert_counts", "coactivation", "entropy_hist", "tokens", "label_expert_counts",
                         "label_entropy_hist", "label_tokens"):
                assert torch.equal(getattr(tables[0], name), getattr(tables[1], name)), name
    # the per-layer hot path must not synchronise with the host (sync debug mode raises if it does)
    buf = RecordBuffer(2, 512, 8, 64, device=dev, backend="triton")
    acc = StatsAccumulator(2, 64, num_labels=3, device=dev, backend="triton")
    x = torch.randn(300, 64, device=dev, generator=g).bfloat16()
    valid = torch.rand(300, device=dev, generator=g) > 0.1
    labels = torch.randint(0, 3, (300,), device=dev, generator=g)
    if dev == "cuda":
        torch.cuda.set_sync_debug_mode("error")
    ids, w = select_experts(x, 8, "softmax_topk")
    buf.reset()
    buf.write(0, x, ids, w, valid=valid)
    buf.write(1, x, valid=valid)
    acc.observe(0, x, ids, w, labels=labels, valid=valid)
    pending = buf.to_host_async(300)
    if dev == "cuda":
        torch.cuda.set_sync_debug_mode(0)
    host = pending.wait()
    assert (host["ids"][0][valid.cpu().numpy()] == ids[valid].cpu().numpy()).all()
    assert int(acc.tables.expert_counts.sum()) == 8 * int(valid.sum())
    print("compared", checked)
    """
)


def test_compiled_kernels_match_reference_on_cuda():
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", COMPARE, "cuda"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-6000:]
    assert "compared" in run.stdout


def test_record_buffer_copies_asynchronously_into_pinned_memory():
    torch.manual_seed(0)
    buf = RecordBuffer(2, 256, 4, 32, device="cuda", backend="torch", weight_dtype=torch.float16)
    x = torch.randn(200, 32, device="cuda")
    valid = torch.rand(200, device="cuda") > 0.1
    buf.write(0, x, valid=valid)
    buf.write(1, x[:100], row_offset=50)
    pending = buf.to_host_async(num_tokens=200)
    buf.reset()  # queued after the copy on the device: the copy must still see the records
    buf.write(0, torch.randn(200, 32, device="cuda"))
    host = pending.wait()
    assert pending.ready()
    assert all(t.is_pinned() for t in pending.tensors.values())
    ref0 = route_records_torch(x.cpu(), k=4)
    v = valid.cpu().numpy()
    np.testing.assert_array_equal(host["ids"][0][v], ref0.ids.numpy()[v])
    assert (host["ids"][0][~v] == -1).all()
    np.testing.assert_array_equal(host["ids"][1, 50:150], route_records_torch(x[:100].cpu(), k=4).ids.numpy())
    assert host["counts"][0].sum() == 4 * v.sum() and host["counts"][1].sum() == 400
    torch.cuda.synchronize()
    assert int(buf.counts[0].sum()) == 800  # the device buffer moved on to the next batch


def test_torch_backend_never_synchronises_per_layer():
    from moelens.kernels import StatsAccumulator, select_experts_torch

    buf = RecordBuffer(2, 512, 8, 64, device="cuda", backend="torch")
    acc = StatsAccumulator(2, 64, num_labels=3, device="cuda", backend="torch")
    x = torch.randn(300, 64, device="cuda").bfloat16()
    valid = torch.rand(300, device="cuda") > 0.1
    labels = torch.randint(0, 3, (300,), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        ids, w = select_experts_torch(x, 8, "deepseek_v3", bias=torch.zeros(64, device="cuda"), n_group=8,
                                      topk_group=4)  # fmt: skip
        buf.reset()
        buf.write(0, x, ids, w, valid=valid)
        buf.write(1, x, valid=valid)
        acc.observe(0, x, ids, w, labels=labels, valid=valid)
        pending = buf.to_host_async(300)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    host = pending.wait()
    v = valid.cpu().numpy()
    np.testing.assert_array_equal(host["ids"][0][v], ids[valid].cpu().numpy())
    assert int(acc.tables.expert_counts.sum()) == 8 * int(valid.sum())
