"""Bad engine files: one-line typed errors (exit code 2) and a database left byte for byte as it was.

Each case writes an engine file the way the engine would, then breaks it the way files break in
practice (a wrong shape, ids of another model, a truncated payload, a rank's file missing, mixed
layer counts); the oracle is the SHA-256 of the database before and after.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from moelens.cli import main

ew_spec = importlib.util.spec_from_file_location("engine_writers", Path(__file__).with_name("engine_writers.py"))
ew = importlib.util.module_from_spec(ew_spec)
ew_spec.loader.exec_module(ew)

E, K, L = 8, 2, 4
MOE = [1, 2, 3]


def _experts(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([np.stack([rng.choice(E, K, replace=False) for _ in range(n)]) for _ in MOE])


def _vllm_line(i: int, n: int = 6, **changes) -> dict:
    out = ew.vllm_request_output(f"r{i}", np.arange(n), _experts(n, i), MOE, L, prompt_len=3, last_token=1)
    line = {"request_id": f"r{i}", "prompt_token_ids": out.prompt_token_ids,
            "outputs": [{"index": 0, "token_ids": out.outputs[0].token_ids,
                         "routed_experts": out.outputs[0].routed_experts.tolist()}]}
    line["outputs"][0].update(changes)
    return line


@pytest.fixture
def db(tmp_path):
    """A database that already holds an imported run."""
    path = tmp_path / "runs.duckdb"
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(_vllm_line(0)) + "\n")
    assert main(["import", "vllm", str(good), "--out", str(path), "--num-experts", str(E), "--no-progress"]) == 0
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fails(db: Path, argv: list[str], capsys, needle: str, tmp_path: Path) -> None:
    before = _sha(db)
    wal = db.with_suffix(".duckdb.wal")
    assert main(["import", *argv, "--out", str(db), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err
    assert _sha(db) == before and not wal.exists()


def test_vllm_wrong_row_count(db, tmp_path, capsys):
    line = _vllm_line(1)
    line["outputs"][0]["routed_experts"].append(line["outputs"][0]["routed_experts"][0])  # one row too many
    (tmp_path / "bad.jsonl").write_text(json.dumps(line) + "\n")
    _fails(db, ["vllm", str(tmp_path / "bad.jsonl"), "--num-experts", str(E)], capsys, "one row per token but the last",
           tmp_path)


def test_vllm_ids_beyond_num_experts(db, tmp_path, capsys):
    (tmp_path / "ids.jsonl").write_text(json.dumps(_vllm_line(1)) + "\n")
    _fails(db, ["vllm", str(tmp_path / "ids.jsonl"), "--num-experts", "4"], capsys, ">= num_experts=4", tmp_path)


def test_vllm_mixed_layer_counts(db, tmp_path, capsys):
    other = _vllm_line(2)
    other["outputs"][0]["routed_experts"] = [row[:3] for row in other["outputs"][0]["routed_experts"]]
    (tmp_path / "mixed.jsonl").write_text(json.dumps(_vllm_line(1)) + "\n" + json.dumps(other) + "\n")
    _fails(db, ["vllm", str(tmp_path / "mixed.jsonl"), "--num-experts", str(E)], capsys, "3 layers", tmp_path)


def test_vllm_truncated_encoded_array_and_truncated_file(db, tmp_path, capsys):
    from moelens.sources.vllm import encode_array

    line = _vllm_line(1)
    enc = encode_array(np.asarray(line["outputs"][0]["routed_experts"], dtype=np.int32))
    enc["data"] = base64.b64encode(base64.b64decode(enc["data"])[:-8]).decode()
    line["outputs"][0]["routed_experts"] = enc
    (tmp_path / "t.jsonl").write_text(json.dumps(line) + "\n")
    _fails(db, ["vllm", str(tmp_path / "t.jsonl"), "--num-experts", str(E)], capsys, "truncated", tmp_path)
    (tmp_path / "cut.jsonl").write_text(json.dumps(_vllm_line(1))[:-40])
    _fails(db, ["vllm", str(tmp_path / "cut.jsonl"), "--num-experts", str(E)], capsys, "not JSON", tmp_path)


def test_sglang_truncated_base64(db, tmp_path, capsys):
    n = 6
    resp = ew.sglang_response("a", list(range(3)), [3, 4, 5, 6], ew.engine_rows(_experts(n, 3), MOE, L, 0))
    resp["meta_info"]["routed_experts"] = resp["meta_info"]["routed_experts"][:-6]
    (tmp_path / "s.jsonl").write_text(json.dumps(resp) + "\n")
    _fails(db, ["sglang", str(tmp_path / "s.jsonl"), "--num-experts", str(E), "--top-k", str(K)], capsys,
           "routed_experts", tmp_path)


@pytest.mark.parametrize("pybase64", [True, False])
def test_sglang_corrupted_base64(db, tmp_path, capsys, monkeypatch, pybase64):
    import sys

    if not pybase64:  # the standard library's lenient decoder: corruption shows as a wrong size
        monkeypatch.setitem(sys.modules, "pybase64", None)
    n = 6
    resp = ew.sglang_response("a", list(range(3)), [3, 4, 5, 6], ew.engine_rows(_experts(n, 3), MOE, L, 0))
    payload = resp["meta_info"]["routed_experts"]
    resp["meta_info"]["routed_experts"] = payload[:10] + "!" + payload[11:]
    (tmp_path / "s.jsonl").write_text(json.dumps(resp) + "\n")
    _fails(db, ["sglang", str(tmp_path / "s.jsonl"), "--num-experts", str(E), "--top-k", str(K)], capsys,
           "routed_experts", tmp_path)


def test_sglang_start_len_without_earlier_turns(db, tmp_path, capsys):
    n = 6
    rows = ew.engine_rows(_experts(n, 4), MOE, L, 0)
    resp = ew.sglang_response("a", list(range(3)), [3, 4, 5, 6], rows[2:], start_len=2)
    (tmp_path / "s.jsonl").write_text(json.dumps(resp) + "\n")
    _fails(db, ["sglang", str(tmp_path / "s.jsonl"), "--num-experts", str(E), "--top-k", str(K)], capsys,
           "routed_experts_start_len=2", tmp_path)


def test_sglang_dump_rank_missing_and_truncated(db, tmp_path, capsys):
    p2l = np.tile(np.arange(E), (L, 1))
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    for rank in (0, 2):
        rec = ew.sglang_per_token_record(0, rank, [(np.arange(5), _experts(5, rank))], p2l, MOE, mode=1)
        ew.sglang_detail_dump(dumps, rank, [rec], p2l, 10.0 + rank)
    _fails(db, ["sglang-dump", str(dumps)], capsys, "rank 1 is missing", tmp_path)
    _fails(db, ["sglang-dump", str(dumps), "--world-size", "4"], capsys, "rank 1 is missing", tmp_path)
    one = dumps / "expert_distribution_recorder_10.0_0.pt"
    cut = tmp_path / "cut" / one.name
    cut.parent.mkdir()
    cut.write_bytes(one.read_bytes()[: one.stat().st_size // 2])
    _fails(db, ["sglang-dump", str(cut)], capsys, "not a readable torch.save file", tmp_path)


def test_sglang_dump_physical_ids_beyond_the_map(db, tmp_path, capsys):
    p2l = np.tile(np.arange(E), (L, 1))
    rec = ew.sglang_per_token_record(0, 0, [(np.arange(5), _experts(5, 1))], p2l, MOE, mode=1)
    rec["topk_ids_of_layer"][1, 0, 0] = 12
    ew.sglang_detail_dump(tmp_path, 0, [rec], p2l, 1.0)
    _fails(db, ["sglang-dump", str(tmp_path / "expert_distribution_recorder_1.0_0.pt")], capsys,
           "physical expert id 12", tmp_path)


def test_megatron_mixed_layer_counts_and_missing_rank(db, tmp_path, capsys):
    per_layer = {layer: _experts(4, 9)[i] for i, layer in enumerate(MOE)}
    records = ew.megatron_records(0, 0, per_layer, routing_map=False)
    records += ew.megatron_records(0, 0, {1: per_layer[1], 2: per_layer[2]}, routing_map=False)  # layer 3 missing
    traces = tmp_path / "mixed"
    traces.mkdir()
    ew.megatron_trace_file(traces, 0, records)
    _fails(db, ["megatron", str(traces), "--num-experts", str(E)], capsys, "mixed layer counts", tmp_path)
    traces = tmp_path / "ranks"
    traces.mkdir()
    for rank in (0, 2):
        ew.megatron_trace_file(traces, rank, ew.megatron_records(rank, 0, per_layer, routing_map=False))
    _fails(db, ["megatron", str(traces), "--num-experts", str(E)], capsys, "rank 1 is missing", tmp_path)


def test_megatron_wrong_shape(db, tmp_path, capsys):
    records = ew.megatron_records(0, 0, {1: _experts(4, 2)[0]}, routing_map=False)
    records[0]["num_tokens"] = 5
    ew.megatron_trace_file(tmp_path, 0, records)
    _fails(db, ["megatron", str(tmp_path), "--num-experts", str(E)], capsys, "num_tokens=5", tmp_path)


def test_trtllm_missing_rank_slots_without_placement_and_bad_counts(db, tmp_path, capsys):
    counts = {(0, 1): np.arange(E), (0, 2): np.arange(E)}
    ew.trtllm_statistic(tmp_path / "a", {0: counts, 2: counts}, E, K)
    _fails(db, ["trtllm", str(tmp_path / "a")], capsys, "rank 1 is missing", tmp_path)
    slots = {(0, 1): np.arange(10), (0, 2): np.arange(10)}
    ew.trtllm_statistic(tmp_path / "b", {0: slots}, 10, K)
    _fails(db, ["trtllm", str(tmp_path / "b"), "--num-experts", str(E)], capsys, "pass --placement", tmp_path)
    ew.trtllm_statistic(tmp_path / "c", {0: {(0, 1): np.arange(E)}}, 9, K)
    _fails(db, ["trtllm", str(tmp_path / "c")], capsys, "expected 9", tmp_path)


def test_labels_for_unknown_documents(db, tmp_path, capsys):
    (tmp_path / "ok.jsonl").write_text(json.dumps(_vllm_line(1)) + "\n")
    (tmp_path / "labels.jsonl").write_text(json.dumps({"doc_id": 3, "language": "en"}) + "\n")
    _fails(db, ["vllm", str(tmp_path / "ok.jsonl"), "--num-experts", str(E), "--documents",
                str(tmp_path / "labels.jsonl"), "--run-id", "new"], capsys, "doc_id 3 is not among", tmp_path)


def test_existing_run_id_needs_overwrite(db, tmp_path, capsys):
    (tmp_path / "ok.jsonl").write_text(json.dumps(_vllm_line(1)) + "\n")
    _fails(db, ["vllm", str(tmp_path / "ok.jsonl"), "--num-experts", str(E), "--run-id", "vllm:good"], capsys,
           "--overwrite", tmp_path)
    assert main(["import", "vllm", str(tmp_path / "ok.jsonl"), "--out", str(db), "--num-experts", str(E),
                 "--run-id", "vllm:good", "--overwrite", "--no-progress"]) == 0


def test_missing_num_experts_and_no_database_created(tmp_path, capsys):
    (tmp_path / "ok.jsonl").write_text(json.dumps(_vllm_line(1)) + "\n")
    assert main(["import", "vllm", str(tmp_path / "ok.jsonl"), "--out", str(tmp_path / "new.duckdb")]) == 2
    assert "--num-experts" in capsys.readouterr().err
    assert not (tmp_path / "new.duckdb").exists()
