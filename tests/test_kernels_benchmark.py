"""benchmarks/gpu_capture_overhead.py keeps working: its CPU smoke run and its no-GPU message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_capture_overhead.py"


@pytest.mark.slow
def test_smoke_run_records_what_the_routers_returned():
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--modes", "naive-cpu,records-torch,stats-torch"],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "check: records-torch records equal the router output on every row: yes" in run.stdout
    rows = [line.split()[0] for line in run.stdout.splitlines() if line.split()[:1]]
    assert {"none", "naive-cpu", "records-torch", "stats-torch"} <= set(rows)


def test_without_cuda_it_says_what_to_do():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the benchmark would run")
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stdout.strip().count("\n") == 0 and "--smoke" in run.stdout
