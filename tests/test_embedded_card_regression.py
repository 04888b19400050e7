"""The shipped model card is a regression test of moelens: re-measure the checkpoints, compare.

``tools/embedded/measure.py`` wrote ``moelens_card.json`` from ``moelens.trace`` and ``moelens.open``.
Here the three shipped checkpoints are traced again over the shipped evaluation split, with the
trace settings the card records, and the figures are read back through ``moelens.open`` by code of
this test (not the tool's). A change in moelens that alters what the card says fails here: fix
moelens, or re-measure and re-render the card (``tools/embedded/README.md``) and say why.

Tolerances. On one machine the trace is deterministic and the figures agree exactly; the margins
absorb float differences between CPUs and BLAS builds, which can move a few of the 82,298 tokens'
routing decisions (the collapsed router's second slot is a tie among zero-probability experts):

* load: each expert's load ±1e-3, max/mean ±0.01, effective experts ±0.02; dead experts and the
  collapse verdict exactly (the utilization nearest the 0.1 threshold is 12 tokens away from it);
* router diagnostics: median top-1 − top-2 logit ±0.05 relative 1e-3, share of zero-weight last
  slots ±2e-3, effective experts with slots ranked by logit ±0.02;
* specialization, for the card's (layer, value, expert): count ±0.2 % (at least 3), share ±1e-3,
  lift ±1 %, interval bounds ±3 % (seeded bootstrap over the same documents); the verdict exactly
  unless q lies within a factor 10 of alpha; the card's expert within 1e-3 of the largest share
  at its (layer, value); significant cells per label ±2;
* router saturation and top-1 agreement (early vs final) ±2e-3; the acceptance checks exactly.
"""

from __future__ import annotations

import json
import math

import polars as pl
import pytest

import moelens
from moelens.embedded import MODELS, eval_split_path

pytestmark = pytest.mark.slow

CARD = json.loads((MODELS["moelens-mini"] / "moelens_card.json").read_text(encoding="utf-8"))
SHIPPED = ("moelens-mini", "moelens-mini-early", "moelens-mini-collapsed")


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("card") / "card.duckdb"
    settings = CARD["measured_with"]["trace"]
    for name in SHIPPED:
        moelens.trace(name, str(eval_split_path()), out=str(path), run_id=name, progress=False, **settings)
    with moelens.open(path) as t:
        yield t


def test_card_was_measured_on_the_shipped_split():
    import hashlib

    data = eval_split_path().read_bytes()
    assert CARD["eval"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert CARD["eval"]["docs"] == data.count(b"\n")
    assert CARD["measured_with"]["trace"]["logits"] is True


@pytest.mark.parametrize("name", SHIPPED)
def test_load_figures(db, name):
    card = CARD["checkpoints"][name]
    summary = db.load(name).sort("layer")
    experts = db.expert_load(name).sort("layer", "expert")
    assert summary["layer"].to_list() == [r["layer"] for r in card["load"]]
    for row, stated in zip(summary.iter_rows(named=True), card["load"]):
        assert row["tokens"] == stated["tokens"] == CARD["eval"]["tokens"]
        load = experts.filter(pl.col("layer") == row["layer"])["share"].to_list()
        assert load == pytest.approx(stated["load"], abs=1e-3)
        assert row["max_over_mean"] == pytest.approx(stated["max_over_mean"], abs=0.01)
        assert row["effective_experts"] == pytest.approx(stated["effective_experts"], abs=0.02)
        assert list(row["dead_experts"]) == stated["dead_experts"]
        assert row["collapsed"] == stated["collapsed"]


@pytest.mark.parametrize("name", SHIPPED)
def test_router_diagnostics(db, name):
    import numpy as np

    k = CARD["checkpoints"][name]["top_k"]
    logits = db.sql("SELECT layer, logits FROM router_logits WHERE run_id = $run ORDER BY layer, doc_id, pos",
                    {"run": name})
    weights = db.sql("SELECT layer, weight FROM routes WHERE run_id = $run AND rank = $last",
                     {"run": name, "last": k - 1})
    for stated in CARD["checkpoints"][name]["load"]:
        x = np.stack(logits.filter(pl.col("layer") == stated["layer"])["logits"].to_numpy())
        top = np.sort(x, axis=1)[:, ::-1]
        gap = float(np.median(top[:, 0] - top[:, 1]))
        assert gap == pytest.approx(stated["median_logit_gap"], abs=0.05, rel=1e-3)
        w = weights.filter(pl.col("layer") == stated["layer"])["weight"].to_numpy()
        assert float((w == 0).mean()) == pytest.approx(stated["last_slot_zero_weight"], abs=2e-3)
        by_logit = np.argsort(-x, axis=1, kind="stable")[:, :k]
        p = np.bincount(by_logit.ravel(), minlength=x.shape[1]) / by_logit.size
        p = p[p > 0]
        assert math.exp(-(p * np.log(p)).sum()) == pytest.approx(stated["effective_experts_logit_rank"], abs=0.02)


@pytest.mark.parametrize("label", ["language", "domain"])
@pytest.mark.parametrize("name", SHIPPED)
def test_specialization(db, name, label):
    card = CARD["checkpoints"][name]
    alpha = CARD["measured_with"]["specialization"]["alpha"]
    frame = db.specialization(label, name)
    assert abs(int(frame["significant"].sum()) - card["cells"][label]["significant"]) <= 2
    assert frame.height == card["cells"][label]["cells"]
    assert len(card["specialization"][label]) == frame.select("layer", "value").unique().height
    for stated in card["specialization"][label]:
        cell = frame.filter((pl.col("layer") == stated["layer"]) & (pl.col("value") == stated["value"]))
        row = cell.filter(pl.col("expert") == stated["expert"]).row(0, named=True)
        where = (name, label, stated["value"], stated["layer"], stated["expert"])
        assert abs(row["count"] - stated["count"]) <= max(3, 0.002 * stated["count"]), where
        assert row["tokens"] == stated["tokens"] and row["docs"] == stated["docs"], where
        assert row["share"] == pytest.approx(stated["share"], abs=1e-3), where
        assert float(cell["share"].max()) <= stated["share"] + 1e-3, where
        assert row["lift"] == pytest.approx(stated["lift"], rel=0.01), where
        if stated["ci_low"] is not None:
            assert row["ci_low"] == pytest.approx(stated["ci_low"], rel=0.03), where
            assert row["ci_high"] == pytest.approx(stated["ci_high"], rel=0.03), where
        q = stated["q_value"]
        if q is None or not alpha / 10 <= q <= alpha * 10:
            assert row["significant"] == stated["significant"], where


def test_router_saturation_early_vs_final(db):
    stated = CARD["router_saturation"]
    frame = db.compare(*stated["runs"], labels=[]).sort("layer")
    assert frame["layer"].to_list() == stated["layers"]
    assert frame["saturation"].to_list() == pytest.approx(stated["saturation"], abs=2e-3)
    assert frame["top1_agreement"].to_list() == pytest.approx(stated["top1_agreement"], abs=2e-3)


def test_acceptance_checks_still_hold(db):
    u = CARD["checkpoints"]["moelens-mini"]["uniform_share"]
    spec = db.specialization("language", "moelens-mini")
    passing = spec.filter((pl.col("share") >= 2 * u) & pl.col("significant"))
    assert passing.height > 0 and CARD["acceptance"]["specialization_pass"]
    best = spec.sort("share", descending=True).row(0, named=True)
    stated = CARD["acceptance"]["best_language_expert"]
    assert (best["value"], best["layer"], best["expert"]) == (stated["value"], stated["layer"], stated["expert"])
    balanced = db.load("moelens-mini").sort("layer")["effective_experts"].to_numpy()
    collapsed = db.load("moelens-mini-collapsed").sort("layer")
    halved = int((collapsed["effective_experts"].to_numpy() <= balanced / 2).sum())
    assert halved == CARD["acceptance"]["collapse_layers_halved"]
    assert int(collapsed["collapsed"].sum()) == CARD["acceptance"]["collapsed_layers_flagged"]
