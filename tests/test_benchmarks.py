"""The benchmark scripts run (tiny sizes) and check what they measure against the torch path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_capture_overhead_benchmark_smoke_records_match_the_torch_path():
    out = _run("benchmarks/gpu_trace_overhead.py", "--smoke")
    assert "records == torch path records (ids and weights, every layer): True" in out
    for mode in ("plain", "naive", "torch", "triton", "stats"):
        assert f"  {mode}" in out


def test_store_ingest_benchmark_runs_both_layouts():
    out = _run("benchmarks/store_ingest.py", "--tokens", "4096", "--layers", "4", "--docs-per-batch", "4", "--repeat", "1")
    assert "packed (moelens writer" in out and "naive (one Arrow row per route)" in out and "speed-up" in out
