"""Beyond one process and one device: sharded traces merged, torchrun on CPU (gloo), disk offload.

The oracle for each is the plain single-process trace of the same documents: every public view
(documents, tokens, routes with the site and pass of every choice, router logits) must come out
row for row identical; only run-level bookkeeping (created_at, the source of the rows) may differ.
Documents are traced one per forward (batch size 1) so that the comparison is exact: a shard
batches other neighbours together, and padding changes the last bits of a batched matmul (see the
README's batch-consistency measurements).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

import moelens
from moelens.cli import main
from moelens.pipeline.shards import shard_path
from moelens.sources.merge import ShardMismatchError

VIEWS = {
    "documents": "SELECT doc_id, domain, language, n_tokens, source, meta FROM documents ORDER BY doc_id",
    "tokens": "SELECT doc_id, pos, token_id, token FROM tokens ORDER BY doc_id, pos",
    "routes": "SELECT doc_id, pos, layer, pass, site, rank, expert, weight FROM routes_all "
              "ORDER BY doc_id, pos, site, rank",
    "logits": "SELECT doc_id, pos, layer, logits FROM router_logits ORDER BY doc_id, pos, layer",
}


def _views(db, run_id=None):
    con = duckdb.connect(str(db), read_only=True)
    try:
        run = run_id or con.execute("SELECT run_id FROM runs").fetchone()[0]
        out = {}
        for name, sql in VIEWS.items():
            where = sql.replace(" ORDER BY", f" WHERE run_id = '{run}' ORDER BY")
            out[name] = con.execute(where).fetchall()
        out["identity"] = json.loads(con.execute("SELECT config FROM runs WHERE run_id = ?", [run]).fetchone()[0])[
            "identity"]
        return out
    finally:
        con.close()


TEXTS = ["The quick brown fox jumps over the lazy dog.", "Der schnelle braune Fuchs springt.",
         "def double(x):\n    return 2 * x\n", "敏捷的棕色狐狸跳过了懒狗。", "Быстрая коричневая лиса."]


def _data(tmp_path, write_jsonl):
    rows = [{"text": TEXTS[i % len(TEXTS)] * (1 + i % 4), "language": "xy"[i % 2],
             "domain": "abc"[i % 3]} for i in range(13)]
    rows[4]["text"] = " "  # an empty document in shard 0 of 2
    return write_jsonl(tmp_path / "docs.jsonl", rows)


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_shards_by_hand_merge_into_the_single_process_run(tmp_path, tiny_model_dir, write_jsonl, capsys):
    data = _data(tmp_path, write_jsonl)
    common = ["--no-progress", "--logits", "--batch-size", "1", "--max-length", "16", "--run-id", "r"]
    one = tmp_path / "one.duckdb"
    assert main(["trace", str(tiny_model_dir), str(data), "--out", str(one), *common]) == 0
    out = tmp_path / "runs.duckdb"
    assert main(["trace", str(tiny_model_dir), str(data), "--out", str(out), "--shard", "0/2", *common]) == 0
    assert not out.exists() and Path(shard_path(str(out), 0, 2)).exists()

    # shard 1 missing: one line, nothing written
    capsys.readouterr()
    assert main(["merge", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "shard 1 of 2 missing" in err and "\n" not in err
    assert not out.exists()

    assert main(["trace", str(tiny_model_dir), str(data), "--out", str(out), "--shard", "1/2", *common]) == 0
    shard1 = shard_path(str(out), 1, 2)
    con = duckdb.connect(shard1)
    con.execute("UPDATE runs SET status = 'interrupted'")
    con.close()
    assert main(["merge", "--out", str(out), "--no-progress"]) == 2
    assert "run its trace command again" in capsys.readouterr().err
    assert not out.exists()
    # resuming the shard finishes it without a new row; then the merge goes through
    before = _views(shard1)
    assert main(["trace", str(tiny_model_dir), str(data), "--out", str(out), "--shard", "1/2", *common]) == 0
    assert _views(shard1) == before
    assert main(["merge", "--out", str(out), "--no-progress"]) == 0
    merged, plain = _views(out), _views(one)
    assert merged == plain  # every row of every view, and the identity of a single-process run
    shard_docs = [len(_views(shard_path(str(out), i, 2))["documents"]) for i in range(2)]
    assert shard_docs == [7, 6]  # doc_id % 2: disjoint and complete

    # merging again is a no-op; a resumed single-process trace into the merged file too
    digest = _digest(out)
    assert main(["merge", "--out", str(out), "--no-progress"]) == 0
    assert main(["trace", str(tiny_model_dir), str(data), "--out", str(out), *common]) == 0
    assert "already complete" in capsys.readouterr().out
    assert _views(out) == plain and _digest(out) == digest


def test_merge_refuses_shards_of_different_runs(tmp_path, tiny_model_dir, write_jsonl):
    data = _data(tmp_path, write_jsonl)
    out = tmp_path / "x.duckdb"
    base = dict(out=str(out), progress=False, run_id="r")
    moelens.trace(str(tiny_model_dir), str(data), shard=(0, 2), max_length=16, **base)
    moelens.trace(str(tiny_model_dir), str(data), shard=(1, 2), max_length=32, **base)
    with pytest.raises(ShardMismatchError, match="max_length"):
        moelens.tracing.merge([shard_path(str(out), i, 2) for i in range(2)], str(tmp_path / "m.duckdb"))
    with pytest.raises(ShardMismatchError, match="given twice"):
        moelens.tracing.merge([shard_path(str(out), 0, 2)] * 2, str(tmp_path / "m.duckdb"))
    assert not (tmp_path / "m.duckdb").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu_equal_the_single_process_run(tmp_path, tiny_model_dir, write_jsonl):
    data = _data(tmp_path, write_jsonl)
    args = ["trace", str(tiny_model_dir), str(data), "--no-progress", "--batch-size", "1", "--max-length", "16",
            "--run-id", "r"]
    one = tmp_path / "one.duckdb"
    assert main([*args, "--out", str(one)]) == 0
    out = tmp_path / "dist.duckdb"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                             "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
                             "-m", "moelens", *args, "--out", str(out)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0 merged 2 shards" in result.stdout
    assert _views(out) == _views(one)
    assert all(Path(shard_path(str(out), i, 2)).exists() for i in range(2))


def test_disk_offload_records_the_same_routes(tmp_path, tiny_model_dir, write_jsonl):
    from moelens.models.loading import load_model

    data = _data(tmp_path, write_jsonl)
    size = sum(p.stat().st_size for p in Path(tiny_model_dir).glob("*.safetensors"))
    memory = {"cpu": str(size // 2)}  # half the weights do not fit: accelerate offloads layers to disk
    placed = load_model(str(tiny_model_dir), device_map="auto", max_memory=memory,
                        offload_folder=str(tmp_path / "off")).model.hf_device_map
    assert "disk" in placed.values() and "cpu" in placed.values(), placed
    common = dict(progress=False, batch_size=3, max_length=16, logits=True, run_id="r")  # same batches both runs
    moelens.trace(str(tiny_model_dir), str(data), out=str(tmp_path / "plain.duckdb"), **common)
    summary = moelens.trace(str(tiny_model_dir), str(data), out=str(tmp_path / "offload.duckdb"), device_map="auto",
                            max_memory=memory, offload_folder=str(tmp_path / "off2"), **common)
    assert any("device map auto" in n for n in summary.notes)
    assert _views(tmp_path / "offload.duckdb") == _views(tmp_path / "plain.duckdb")
