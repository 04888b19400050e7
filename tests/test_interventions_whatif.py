"""Prune and merge what-ifs: candidates by hand, the curve against measure() of interventions the test
builds itself, and the command line on the embedded model."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402

from moelens.cli import main  # noqa: E402
from moelens.data import DocumentSet  # noqa: E402
from moelens.interventions.effects import Experiment, measure  # noqa: E402
from moelens.interventions.whatif import (curve_experiments, curve_rows, greedy_pairs, least_used,  # noqa: E402
                                          weight_similarity)
from moelens.models.discover import plan_model  # noqa: E402
from moelens.models.tiny import build_tiny_model  # noqa: E402


def test_candidates_by_hand():
    sim = np.array([[1.0, 0.2, 0.9, 0.1],
                    [0.2, 1.0, 0.3, 0.8],
                    [0.9, 0.3, 1.0, 0.95],
                    [0.1, 0.8, 0.95, 1.0]])
    # 2-3 (0.95) first; then 0-2 and 1-3 are blocked; 0-1 (0.2) is what is left
    assert greedy_pairs(sim, 2) == [(2, 3), (0, 1)]
    assert greedy_pairs(sim, 1) == [(2, 3)]
    assert least_used(np.array([5.0, 1.0, 9.0, 1.0, 3.0]), 3) == [1, 3, 4]


def test_weight_similarity_is_the_cosine_of_the_flattened_experts():
    model = build_tiny_model("qwen3_moe")
    layer = min(plan_model(model).moe_layers)
    plan = plan_model(model)
    site = next(s for s in plan.sites if s.layer == layer)
    experts = model.get_submodule(plan.experts_paths[site.path])
    with torch.no_grad():
        experts.gate_up_proj[5] = 2.0 * experts.gate_up_proj[1]  # a scaled copy: cosine 1
        experts.down_proj[5] = 2.0 * experts.down_proj[1]
    sim = weight_similarity(model, layer)
    a = torch.cat([experts.gate_up_proj[0].reshape(-1), experts.down_proj[0].reshape(-1)]).detach()
    b = torch.cat([experts.gate_up_proj[3].reshape(-1), experts.down_proj[3].reshape(-1)]).detach()
    assert sim[0, 3] == pytest.approx(float(a @ b / (a.norm() * b.norm())), abs=1e-6)
    assert sim[1, 5] == pytest.approx(1.0, abs=1e-6) and greedy_pairs(sim, 1) == [(1, 5)]


def test_the_curve_equals_measured_interventions_built_by_the_test():
    model = build_tiny_model("qwen3_moe")
    layer = min(plan_model(model).moe_layers)
    rng = np.random.default_rng(4)
    docs = DocumentSet(pa.table({"input_ids": [rng.integers(2, 250, size=10).tolist() for _ in range(4)]}),
                       name="d", text_column=None, ids_column="input_ids")
    usage = np.array([40.0, 5.0, 30.0, 1.0, 22.0, 9.0, 17.0, 3.0])
    sim = weight_similarity(model, layer)
    exps = curve_experiments(layer, [2], sim, usage, draws=2, seed=1)
    rows = measure(model, docs, exps, labels=[], n_boot=20, progress=False)
    curve = curve_rows(rows, exps)
    assert curve["method"].to_list() == ["merge", "prune", "least-used", "random"]
    pairs = greedy_pairs(sim, 2)
    by_hand = [Experiment({"prune": {layer: [3, 7]}}),  # least used: usage 1 and 3
               Experiment({"prune": {layer: sorted(a if usage[a] < usage[b] else b for a, b in pairs)}}),
               Experiment({"merge": {layer: pairs}, "usage": {layer: {e: usage[e] for p in pairs for e in p}}})]
    mine = measure(model, docs, by_hand, labels=[], n_boot=20, progress=False)
    got = {r["method"]: r for r in curve.iter_rows(named=True)}
    for i, method in enumerate(["least-used", "prune", "merge"]):
        assert got[method]["d_loss"] == pytest.approx(mine.filter(pl.col("intervention_id") == i)["d_loss"][0])
    assert got["least-used"]["experts"] == [3, 7]
    draws = [e for e in exps if e.label == "whatif:random:2"]
    again = curve_experiments(layer, [2], sim, usage, draws=2, seed=1, methods=["random"])
    assert [d.experts for d in draws] == [d.experts for d in again] and len(draws) == 2  # seeded


def test_intervene_command_on_the_embedded_model(tmp_path, capsys):
    from moelens.embedded import eval_split_path

    out = tmp_path / "runs.duckdb"
    args = ["intervene", "moelens-mini", str(eval_split_path()), "--out", str(out), "--max-docs", "6",
            "--bootstrap", "20", "--no-progress"]
    assert main([*args, "--ablate", "2:3", "--ablate", "1:0,5", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["interventions"]
    overall = [r for r in first if r["label_kind"] == "all"]
    assert [r["description"] for r in overall] == ["ablate L2:E3", "ablate L1:E0,E5"]
    assert all(r["verdict"] in ("effect", "no effect beyond noise") for r in first)
    # the same from Python, on the same documents
    again = measure("moelens-mini", str(eval_split_path()), [{"ablate": {2: [3]}}], max_docs=6, n_boot=20,
                    progress=False)
    row = again.filter(pl.col("label_kind") == "all").row(0, named=True)
    assert row["d_loss"] == pytest.approx(overall[0]["d_loss"]) and row["kl"] == pytest.approx(overall[0]["kl"])
    # resumed: nothing is measured twice
    assert main([*args, "--ablate", "2:3", "--ablate", "1:0,5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["interventions"] == first
    assert main([*args, "--ablate", "9:0"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: layer 9 has no router")
