"""The serving report end to end: a planted two-domain run through ``moelens.open(db).serving`` and
``moelens serving``, the fit/evaluate split, the JSON view, and runs without gate weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moelens.analysis import from_arrays
from moelens.analysis.serving import ServingOptions, serving_report, serving_view
from moelens.cli import main
from moelens.errors import ConfigError
from moelens.store import Store
from moelens.store.arrays import save_routing

E, K = 16, 2


def _planted(seed: int = 0):
    """40 documents of 60 tokens: code documents route to experts 0-7 only, prose to 8-15 only."""
    rng = np.random.default_rng(seed)
    docs = np.repeat(np.arange(40), 60)
    domain = ["code" if d % 2 == 0 else "prose" for d in range(40)]
    offset = np.where(docs % 2 == 0, 0, 8)
    experts = np.stack([np.argsort(rng.random((len(docs), 8)), axis=1)[:, :K] + offset[:, None]
                        for _ in range(3)]).astype(np.int16)
    weights = np.sort(rng.random((3, len(docs), K)), axis=2)[:, :, ::-1].astype(np.float32)
    documents = [{"doc_id": d, "domain": domain[d], "language": "en"} for d in range(40)]
    return from_arrays(experts, num_experts=E, doc_id=docs, documents=documents, weights=weights)


@pytest.fixture()
def db(tmp_path):
    path = tmp_path / "runs.duckdb"
    save_routing(_planted(), path, run_id="planted")
    return path


def test_fit_on_one_domain_and_serve_the_other(db):
    import moelens

    with moelens.open(db) as t:
        rep = t.serving("planted", ep=(4,), replicas=(0,), fit_on="domain=code", eval_on="domain=prose",
                        sections=("placement",))
    rows = {r["placement"]: r for r in rep.placement.to_dicts()}
    assert rows["eplb"]["fit_on"] == "domain=code" and rows["eplb"]["eval_tokens"] == 20 * 60
    # fitted on code (experts 0-7 carry the load, 8-15 are cold), EPLB spreads 0-7 and stacks the cold
    # ones together: on prose traffic (8-15 only) that placement is worse than the plan fitted on prose
    assert rows["eplb"]["vllm_balancedness"] < rows["eplb_oracle"]["vllm_balancedness"]
    # contiguous: GPUs 0-1 hold 0-7 (idle on prose), GPUs 2-3 hold 8-15: mean / max = 0.5 at best
    assert rows["contiguous"]["vllm_balancedness"] <= 0.5 + 1e-9


def test_report_sections_and_view(db):
    import moelens

    with moelens.open(db) as t:
        rep = t.serving("planted", ep=(4, 8), cache_sizes=(2, 4, 8), batch_sizes=(1, 4), capacity_tokens=(120,),
                        expert_bytes=1000)
    assert set(rep.frames) >= {"placement", "placement_layers", "capacity", "capacity_labels", "cache",
                               "cache_summary", "prefetch", "coverage"}
    cache = rep.cache_summary.to_dicts()
    by = {(r["policy"], r["cache_size"]): r["hit_rate"] for r in cache}
    for c in (2, 4, 8):
        assert by[("belady", c)] >= by[("lru", c)] and by[("belady", c)] >= by[("lfu", c)]
    # bytes per token = misses x 1000 / tokens, summed over the 3 layers
    lru2 = rep.cache.filter((rep.cache["policy"] == "lru") & (rep.cache["cache_size"] == 2)).to_dicts()
    assert rep.cache_summary.filter((rep.cache_summary["policy"] == "lru")
                                    & (rep.cache_summary["cache_size"] == 2))["bytes_per_token"][0] == pytest.approx(
        sum((r["requests"] - r["hits"]) * 1000 / r["tokens"] for r in lru2))
    labels = rep.capacity_labels
    assert set(labels["policy"].unique()) == {"position", "score"}
    assert {"domain", "position", "batch_position"} <= set(labels["label"].unique())
    view = serving_view(rep)
    json.dumps(view, allow_nan=False)
    assert {r["policy"] for r in view["cache"]} == {"lru", "lfu", "belady"}
    assert [r["batch"] for r in view["coverage"]] == [1, 4]
    assert view["coverage"][0]["distinct"] == pytest.approx(2.0)  # one token: its k experts


def test_runs_without_gate_weights_say_unavailable(db):
    store = Store(db)
    store.set_status("planted", "complete", source={"kind": "vllm", "weights": False, "token_text": False,
                                                    "token_ids": True, "per_token": True, "engine": {}})
    store.close()
    import moelens

    with moelens.open(db) as t:
        rep = t.serving("planted", ep=(4,), sections=("capacity",), capacity_tokens=(120,))
    assert "capacity by score: unavailable: the run has no gate weights" in rep.notes
    assert set(rep.capacity_labels["policy"].unique()) == {"position"}


def test_without_weights_in_memory_too():
    r = _planted()
    r.weights = None
    rep = serving_report(r, ServingOptions(ep=(4,), sections=("capacity",), capacity_tokens=(120,)))
    assert any("no gate weights" in n for n in rep.notes)


def test_cli_json_and_errors(db, capsys):
    assert main(["serving", str(db), "--ep", "4", "--cache", "2,4", "--batch", "1,2", "--cf-tokens", "120",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["run_id"] == "planted" and data["placement"] and data["cache_summary"]
    assert main(["serving", str(db), "--fit-on", "domain=poetry"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "poetry" in err and "\n" not in err
    assert main(["serving", str(db), "--ep", "4", "--cache", "2", "--batch", "1", "--cf-tokens", "120"]) == 0
    out = capsys.readouterr().out
    assert "Expert-parallel balance" in out and "Belady" in out


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="sections"):
        ServingOptions(sections=("cache", "nope"))
    with pytest.raises(ConfigError, match="capacity factors"):
        ServingOptions(capacity_factors=(0,))


def test_uncompiled_kernels_give_the_same_report(monkeypatch):
    """Without numba the same kernels run as Python (and LRU uses the array-only path): same numbers."""
    from moelens.analysis.serving import _kernels
    from moelens.analysis.serving import report as report_module

    r = _planted(1)
    opts = ServingOptions(ep=(4,), cache_sizes=(2, 4, 8), batch_sizes=(1, 4), capacity_tokens=(120,), workers=1)
    compiled = serving_report(r, opts)
    monkeypatch.setattr(_kernels, "_COMPILED", {})
    monkeypatch.setattr(_kernels, "compiled", lambda: False)
    monkeypatch.setattr(report_module, "compiled", lambda: False)
    python = serving_report(r, opts)
    for name in ("capacity", "capacity_labels", "cache", "prefetch", "coverage", "placement"):
        assert compiled.frames[name].equals(python.frames[name]), name


def test_serving_layers_import_no_torch(tmp_path):
    import subprocess
    import sys

    code = """
import sys
import numpy as np
from moelens.analysis import from_arrays
from moelens.analysis.serving import serving_report, ServingOptions
import moelens.cli.serving, moelens.viz.serving_charts
e = np.argsort(np.random.default_rng(0).random((2, 300, 8)), axis=2)[:, :, :2].astype(np.int16)
serving_report(from_arrays(e, num_experts=8, doc_id=np.repeat(np.arange(10), 30)), ServingOptions(ep=(2,)))
print("BAD", sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "moelens.hooks",
                                                                              "moelens.kernels", "transformers"))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "BAD []"


def test_charts_are_offline_vega_lite(db):
    import moelens
    from moelens.viz import serving_charts

    with moelens.open(db) as t:
        rep = t.serving("planted", ep=(4,), cache_sizes=(2, 4), batch_sizes=(1, 4), capacity_tokens=(120,))
        chart = t.serving_chart("cache", runs="planted", ep=(4,), cache_sizes=(2, 4), batch_sizes=(1, 4),
                                capacity_tokens=(120,))
    spec = chart.to_dict()
    assert {r["policy"] for r in spec["datasets"][next(iter(spec["datasets"]))]} == {"lru", "lfu", "belady"}
    for name in ("balance", "drops", "cache", "coverage", "prefetch"):
        getattr(serving_charts, f"{name}_chart")([rep, rep]).to_dict()
    # the specs need no Altair: the dashboard can embed them with its own rows
    spec = serving_charts.cache_spec(serving_charts.view_rows(rep, "cache"))
    assert spec["data"]["values"] and "http" not in str(spec["data"])


@pytest.mark.slow
def test_stats_mode_run_gives_the_same_placement_from_its_counts(tmp_path):
    """A --mode stats run keeps only counts: its placement (from them, also per label) must equal the
    one computed from the per-token routes of the same documents; the other sections say unavailable."""
    import polars as pl

    import moelens
    from moelens.embedded import eval_split_path

    data = tmp_path / "sample.jsonl"
    pl.read_ndjson(eval_split_path()).gather_every(16).write_ndjson(data)
    db = str(tmp_path / "runs.duckdb")
    moelens.trace("moelens-mini", str(data), out=db, run_id="routes", progress=False)
    moelens.trace("moelens-mini", str(data), out=db, run_id="stats", mode="stats", progress=False)
    with moelens.open(db) as t:
        kw = dict(ep=(4, 8), fit_on="domain=code", eval_on="domain!=code")
        a = t.serving("routes", sections=("placement",), **kw).placement
        stats = t.serving("stats", **kw)
    b = stats.placement
    cols = ["ep", "redundant", "placement", "vllm_balancedness", "sglang_balancedness", "trtllm_imbalance"]
    assert a.select(cols).equals(b.select(cols))
    assert any("stats-mode run" in n for n in stats.notes)


def test_a_stored_weightless_run_through_the_cli(tmp_path, capsys):
    """An engine import stores no gate weights (weight NULL): the score policy says unavailable, the rest runs."""
    from moelens.store import TraceWriter, WriteBatch

    db = tmp_path / "w.duckdb"
    plan = {"family": None, "num_layers": 1, "moe_layers": [0], "num_experts": 4, "top_k": 2, "num_shared_experts": 0,
            "scoring": None, "sites": [{"site": 0, "path": "x", "layer": 0, "tag": "mlp", "primary": True,
                                        "num_experts": 4, "top_k": 2}]}
    with Store(db) as store:
        run = store.create_run(run_id="engine", model="m", dataset="d", dtype=None, revision=None, plan_meta=plan,
                               config={}, logits_width=None, weights=False)
        writer = TraceWriter(store, run, table_k=2)
        experts = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [0, 1], [2, 3]], np.int16)
        writer.submit(WriteBatch(
            documents=[{"doc_id": 0, "n_tokens": 3}, {"doc_id": 1, "n_tokens": 3}], token_doc=np.array([0, 0, 0, 1, 1, 1]),
            token_pos=np.array([0, 1, 2, 0, 1, 2], np.int32), token_id=np.arange(6, dtype=np.int32),
            route_doc=np.array([0, 0, 0, 1, 1, 1], np.int32), route_pos=np.array([0, 1, 2, 0, 1, 2], np.int32),
            route_site=np.zeros(6, np.int16), experts=experts, weights=np.zeros((6, 2), np.float32)))
        writer.close()
        store.set_status("engine", "complete")
    assert main(["serving", str(db), "--ep", "2", "--cf", "1.0", "--cf-tokens", "3", "--cache", "1,2",
                 "--batch", "1,2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "capacity by score: unavailable: the run has no gate weights" in data["notes"]
    assert {r["policy"] for r in data["capacity_labels"]} == {"position"}
    # expert 0 is asked by 3 of the first 3 tokens with capacity ceil(1.0 * 3 * 2 / 4) = 2: one drop there;
    # the second batch (tokens 3-5: experts 1,2 / 0,1 / 2,3) fits
    assert [r["dropped"] for r in data["capacity"]] == [1]
    assert data["placement"] and data["cache_summary"]
