"""Interrupted runs lose nothing committed, and resuming never duplicates a row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest

import moelens
from moelens.store.arrays import load_routing


@pytest.fixture
def many_docs(tmp_path, write_jsonl):
    rows = [{"text": f"document {i}: " + "lorem ipsum dolor sit amet " * (1 + i % 4), "language": "la"}
            for i in range(600)]
    return write_jsonl(tmp_path / "many.jsonl", rows)


def _start(model_dir: Path, data: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "moelens", "trace", str(model_dir), str(data), "--out", str(out),
           "--batch-size", "1", "--no-progress"]
    # one intra-op thread, like this test process (conftest), so float rounding is identical
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_commits(out: Path, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    """Wait until documents have been committed (the WAL grows past the schema's own writes)."""
    wal = Path(str(out) + ".wal")
    deadline = time.time() + timeout
    baseline = None
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"trace ended before it could be interrupted: {proc.stderr.read()}")
        size = wal.stat().st_size if wal.exists() else 0
        if size and baseline is None:
            baseline = size
        if baseline is not None and size > baseline + 200_000:
            return
        time.sleep(0.05)
    raise AssertionError("no commits observed")


def _check_no_duplicates(out: Path, expected_docs: int) -> None:
    con = duckdb.connect(str(out), read_only=True)
    rows, distinct = con.execute(
        "SELECT count(*), count(DISTINCT (doc_id, pos, layer, rank)) FROM routes").fetchone()
    assert rows == distinct
    tokens, distinct_tokens = con.execute("SELECT count(*), count(DISTINCT (doc_id, pos)) FROM tokens").fetchone()
    assert tokens == distinct_tokens
    assert con.execute("SELECT count(*), count(DISTINCT doc_id) FROM documents").fetchone() == (expected_docs,) * 2
    assert con.execute("SELECT status FROM runs").fetchone()[0] == "complete"
    con.close()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill -9", "ctrl-c"])
def test_interrupted_run_resumes_without_duplicates(tiny_model_dir, many_docs, tmp_path, how):
    out = tmp_path / "run.duckdb"
    proc = _start(tiny_model_dir, many_docs, out)
    try:
        _wait_for_commits(out, proc)
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL if how == "kill -9" else signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    if how == "ctrl-c":
        assert proc.returncode == 130
        assert "run the same command again to resume" in stderr
        con = duckdb.connect(str(out), read_only=True)
        assert con.execute("SELECT status FROM runs").fetchone()[0] == "interrupted"
        con.close()
    else:
        assert proc.returncode == -signal.SIGKILL
    con = duckdb.connect(str(out), read_only=True)
    committed = con.execute("SELECT count(*) FROM documents").fetchone()[0]
    con.close()
    assert 0 < committed < 600  # interrupted mid-run with work committed

    summary = moelens.trace(str(tiny_model_dir), str(many_docs), out=str(out), batch_size=1, progress=False)
    assert summary.resumed == committed
    assert summary.documents == 600 - committed
    _check_no_duplicates(out, 600)

    clean = tmp_path / "clean.duckdb"
    moelens.trace(str(tiny_model_dir), str(many_docs), out=str(clean), batch_size=1, progress=False)
    a, b = load_routing(out), load_routing(clean)
    assert np.array_equal(a.doc_id, b.doc_id) and np.array_equal(a.token_id, b.token_id)
    assert np.array_equal(a.experts, b.experts) and np.array_equal(a.weights, b.weights)

    # a third run of the same command does nothing
    again = moelens.trace(str(tiny_model_dir), str(many_docs), out=str(out), batch_size=1, progress=False)
    assert again.documents == 0 and "already complete" in again.notes[0]
    _check_no_duplicates(out, 600)
