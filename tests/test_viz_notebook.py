"""moelens.open(db) returns frames and Altair charts; the charts hold the frames' numbers."""

from __future__ import annotations

import pytest

import moelens

pytest.importorskip("altair")


@pytest.fixture
def traced(tiny_model_dir, labelled_jsonl, tmp_path):
    out = tmp_path / "t.duckdb"
    moelens.trace(str(tiny_model_dir), str(labelled_jsonl), out=str(out), run_id="a", progress=False)
    moelens.trace(str(tiny_model_dir), str(labelled_jsonl), out=str(out), run_id="b", max_length=8, progress=False)
    return out


def _values(chart):
    spec = chart.to_dict()
    datasets = spec.get("datasets") or {}
    if datasets:
        return next(iter(datasets.values()))
    return spec["data"]["values"]


def test_chart_methods_plot_the_frames(traced):
    with moelens.open(traced) as t:
        load = t.expert_load("a")
        values = _values(t.load_chart("a"))
        E = t.store.require_run("a").num_experts
        assert len(values) == load["layer"].n_unique() * E
        by_cell = {(v["layer"], v["expert"]): v["count"] for v in values}
        for row in load.iter_rows(named=True):
            assert by_cell[(row["layer"], row["expert"])] == row["count"]
        spec = t.specialization("language", "a")
        assert len(_values(t.specialization_chart("language", "a"))) == spec.height
        assert {v["run"] for v in _values(t.balance_chart())} == {"a", "b"}
        cmp = t.compare("a", "b")
        assert len(_values(t.comparison_chart("a", "b"))) == 2 * cmp.height
        assert len(_values(t.load_shift_chart("a", "b"))) == t.load_shift("a", "b").height


def test_capture_load_chart(tiny_model_dir):
    import torch

    from moelens.models.loading import load_model

    loaded = load_model(str(tiny_model_dir))
    with moelens.capture(loaded.model) as cap, torch.no_grad():
        loaded.model(**loaded.tokenizer(["hello world"], return_tensors="pt"))
    values = _values(cap.load_chart())
    assert len(values) == len(cap.plan.moe_layers) * cap.plan.num_experts
    assert sum(v["count"] for v in values) == cap.load()["tokens"].sum()
