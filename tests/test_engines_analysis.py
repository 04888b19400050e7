"""Imported runs through the report, ``moelens.open`` and the dashboard: what a source lacks is
reported as unavailable (never as zeros), and what it has gives the same numbers as numpy on the
engine arrays (the oracle: counts computed here from the fixture's own ids)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from moelens.cli import main

ew_spec = importlib.util.spec_from_file_location("engine_writers", Path(__file__).with_name("engine_writers.py"))
ew = importlib.util.module_from_spec(ew_spec)
ew_spec.loader.exec_module(ew)

E, K, L, MOE = 8, 2, 4, [1, 2, 3]


def _docs(n_docs: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n_docs):
        n = 12 + i % 5
        experts = np.stack([np.stack([rng.choice(E, K, replace=False, p=np.r_[0.3, np.full(E - 1, 0.1)])
                                      for _ in range(n)]) for _ in MOE])
        docs.append((rng.integers(0, 50, n), experts))
    return docs


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A database with a vLLM run (labelled), a Megatron run (no token ids) and a TensorRT-LLM stats run."""
    from moelens import sources

    folder = tmp_path_factory.mktemp("imported")
    db = folder / "runs.duckdb"
    docs = _docs()
    outputs = [ew.vllm_request_output(f"q{i}", ids, ex, MOE, L, prompt_len=4, last_token=0)
               for i, (ids, ex) in enumerate(docs)]
    labels = [{"request_id": f"q{i}", "language": ["en", "de", "fr"][i % 3]} for i in range(len(docs))]
    sources.write(sources.from_vllm(outputs, num_experts=E), db, run_id="vllm", documents=labels)
    traces = folder / "meg"
    traces.mkdir()
    records = []
    for step, (_, ex) in enumerate(docs):
        records += ew.megatron_records(0, step, {layer: ex[i] for i, layer in enumerate(MOE)}, routing_map=False)
    ew.megatron_trace_file(traces, 0, records)
    assert main(["import", "megatron", str(traces), "--out", str(db), "--num-experts", str(E), "--run-id", "megatron",
                 "--no-progress"]) == 0
    counts = np.zeros((L, E), np.int64)
    for _, ex in docs:
        for i, layer in enumerate(MOE):
            counts[layer] += np.bincount(ex[i].reshape(-1), minlength=E)
    ew.trtllm_statistic(folder / "trt", {0: {(0, layer): counts[layer] for layer in MOE}}, E, K)
    assert main(["import", "trtllm", str(folder / "trt"), "--out", str(db), "--run-id", "trtllm", "--no-progress"]) == 0
    return db, docs, counts


def _report(db, run, capsys) -> dict:
    assert main(["report", str(db), "--run", run, "--json", "--bootstrap", "20"]) == 0
    return json.loads(capsys.readouterr().out)


def test_report_of_imports_says_what_is_unavailable(imported, capsys):
    db, docs, counts = imported
    tokens = sum(len(ids) for ids, _ in docs)
    for run in ("vllm", "megatron"):
        data = _report(db, run, capsys)
        assert data["source"]["kind"] == run and data["source"]["weights"] is False
        assert "weights" in data["unavailable"] and "confidence" in data["unavailable"]
        shares = {r["layer"]: r["load"] for r in data["layers"]}
        for layer in MOE:
            assert shares[layer] == pytest.approx((counts[layer] / counts[layer].sum()).tolist())
        assert data["run"]["tokens"] == tokens
    assert data["vocabulary"] == [] and data["unavailable"]["vocabulary"] == "no token ids: megatron records none"
    vllm = _report(db, "vllm", capsys)
    assert vllm["vocabulary"] and "vocabulary" not in vllm["unavailable"]
    assert vllm["specialization_tests"]["language"]["tested"] > 0  # the documents file's labels are tested
    stats = _report(db, "trtllm", capsys)
    assert stats["run"]["mode"] == "stats" and stats["coactivation"] == []
    assert stats["unavailable"]["coactivation"] == "no co-activation counts: trtllm records none"
    assert {r["layer"]: r["tokens"] for r in stats["layers"]} == {layer: tokens for layer in MOE}
    assert main(["report", str(db), "--run", "megatron"]) == 0
    assert "unavailable: vocabulary: no token ids: megatron records none" in " ".join(capsys.readouterr().out.split())


def test_open_analyses_on_imports(imported):
    import moelens
    from moelens.errors import UnavailableError

    db, docs, counts = imported
    with moelens.open(db) as t:
        load = t.expert_load("megatron")
        got = load.filter(load["layer"] == 2).sort("expert")["count"].to_list()
        assert got == counts[2].tolist()
        assert t.specialization("language", run="vllm").height > 0
        assert t.coactivation("megatron").height > 0 and t.repeat_rates("megatron").height == len(MOE)
        assert t.vocabulary("vllm").height == len(MOE)
        with pytest.raises(UnavailableError, match="unavailable: no token ids: megatron records none"):
            t.vocabulary("megatron")
        assert t.routing("vllm").weights is None


def test_dashboard_of_imports_has_no_invented_weights(imported, tmp_path):
    from moelens.viz.site import read_data_file

    db, docs, _ = imported
    assert main(["export", str(db), "--site", str(tmp_path / "site")]) == 0
    index = read_data_file(tmp_path / "site/data/index.js")
    assert [s["run_id"] for s in index["skipped"]] == ["trtllm"]  # counts only: no token view
    by_run, documents = {}, {}
    for entry in index["runs"]:
        by_run[entry["run_id"]] = data = read_data_file(tmp_path / "site" / entry["file"])
        documents[entry["run_id"]] = [d for c in range(data["chunks"]) for d in read_data_file(
            tmp_path / "site" / "data" / f"run-{entry['index']}-docs-{c}.js")["documents"]]  # token view chunks
    for run in ("vllm", "megatron"):
        data = by_run[run]
        assert data["run"]["has_weights"] is False and "weights" in data["run"]["unavailable"]
        assert documents[run] and all(d["weights"] is None for d in documents[run])
        cards = [x for x in data["experts"] if x["count"]]
        assert cards and all(x["weight_hist"] is None and x["weight_mean"] is None for x in cards)
        assert all(c["weight"] is None for x in cards for c in x["contexts"])
    meg = by_run["megatron"]
    assert all(x["frequent_tokens"] == [] and x["top_tokens"] == [] for x in meg["experts"])
    assert set(documents["megatron"][0]["tokens"]) == {"\u27e8?\u27e9"}
    assert any(x["frequent_tokens"] for x in by_run["vllm"]["experts"])
