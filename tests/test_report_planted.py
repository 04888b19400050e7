"""End to end on a tiny Mixtral whose routing is planted by construction.

The model's attention output projections and experts are zeroed, so every layer's router sees
RMSNorm(embedding) = 4 * one-hot(group of the token). Token groups: id 1 = BOS, ids 2-21 English,
22-41 French, 42-61 German. Router weights then decide, exactly:

* layer 0 - en -> {0, 1}, fr -> {2, 3}, de -> {4, 5}, BOS -> {6, 7} (language and first-token experts);
* layer 1 - en -> {0, 1}, fr -> {2, 3}, de -> {4, 5}, BOS -> {0, 2}: experts 6 and 7 never used (dead);
* layer 2 - every token -> {0, 1}: collapsed (exp(H) = 2 of 8, 6 of 8 dead).

Documents carry their language and a ``coin`` label assigned at random (balanced within each
language), which must show no specialization. A second run with layer 0's en and fr rows swapped
is the comparison partner.
"""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

import moelens
from moelens.cli import main

LANGS = {"en": (1, range(2, 22)), "fr": (2, range(22, 42)), "de": (3, range(42, 62))}
ROUTES = {  # layer -> group (0 = BOS, 1 = en, 2 = fr, 3 = de) -> (first, second) expert
    0: {0: (6, 7), 1: (0, 1), 2: (2, 3), 3: (4, 5)},
    1: {0: (0, 2), 1: (0, 1), 2: (2, 3), 3: (4, 5)},
    2: {0: (0, 1), 1: (0, 1), 2: (0, 1), 3: (0, 1)},
}


def _planted_model(folder, routes):
    import torch
    import transformers

    cfg = transformers.MixtralConfig(vocab_size=64, hidden_size=16, intermediate_size=8, num_hidden_layers=3,
                                     num_attention_heads=2, num_key_value_heads=2, num_local_experts=8,
                                     num_experts_per_tok=2, max_position_embeddings=128, rms_norm_eps=1e-12)
    torch.manual_seed(0)
    model = transformers.MixtralForCausalLM(cfg).eval()
    with torch.no_grad():
        emb = torch.zeros(64, 16)
        emb[1, 0] = 1.0
        for group, ids in LANGS.values():
            emb[list(ids), group] = 1.0
        model.model.embed_tokens.weight.copy_(emb)
        for index, layer in enumerate(model.model.layers):
            layer.self_attn.o_proj.weight.zero_()
            for p in layer.mlp.experts.parameters():
                p.zero_()
            gate = torch.zeros(8, 16)
            for group, (a, b) in routes[index].items():
                gate[a, group], gate[b, group] = 2.0, 1.0  # logits 8 and 4 after the norm's factor 4
            layer.mlp.gate.weight.copy_(gate)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(0)
    rows = []
    for lang, (_, ids) in LANGS.items():
        coins = rng.permutation(["heads"] * 5 + ["tails"] * 5)
        for i in range(10):
            body = rng.choice(list(ids), size=int(rng.integers(10, 21))).tolist()
            rows.append({"input_ids": [1] + body, "language": lang, "coin": str(coins[i])})
    order = rng.permutation(len(rows))
    data = root / "docs.jsonl"
    data.write_text("".join(json.dumps(rows[i]) + "\n" for i in order), encoding="utf-8")
    swapped = {**ROUTES, 0: {**ROUTES[0], 1: ROUTES[0][2], 2: ROUTES[0][1]}}
    db = root / "runs.duckdb"
    moelens.trace(str(_planted_model(root / "model", ROUTES)), str(data), out=str(db), run_id="a", progress=False,
                  logits=True)
    moelens.trace(str(_planted_model(root / "model_b", swapped)), str(data), out=str(db), run_id="b", progress=False)
    return db, [rows[i] for i in order]


def _cli_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_report_recovers_the_planted_routing(planted, capsys):
    db, rows = planted
    report = _cli_json(capsys, ["report", str(db), "--run", "a", "--json"])
    layers = {x["layer"]: x for x in report["layers"]}
    assert sorted(layers) == [0, 1, 2]
    tokens = sum(len(r["input_ids"]) for r in rows)
    assert all(x["tokens"] == tokens for x in layers.values())
    assert all(abs(sum(x["load"]) - 1) < 1e-9 for x in layers.values())

    # dead experts and the collapsed layer, with the reasons
    assert layers[0]["dead_experts"] == [] and not layers[0]["collapsed"]
    assert layers[1]["dead_experts"] == [6, 7] and not layers[1]["collapsed"]
    assert layers[2]["dead_experts"] == [2, 3, 4, 5, 6, 7] and layers[2]["collapsed"]
    assert layers[2]["effective_experts"] == pytest.approx(2.0)
    assert "effective experts 2.0 of 8" in layers[2]["collapse_reason"]
    assert "6 of 8 experts dead" in layers[2]["collapse_reason"]
    assert layers[2]["max_over_mean"] == pytest.approx(4.0)  # half of all routes on each of 2 of 8 experts

    # language: the planted experts and only them, with intervals above 1
    spec = report["specialization"]["language"]
    for lang, (group, _) in LANGS.items():
        for layer in (0, 1):
            found = [r for r in spec if r["layer"] == layer and r["value"] == lang]
            planted_pair = set(ROUTES[layer][group])
            assert {r["expert"] for r in found} == planted_pair, (lang, layer)
            n = sum(len(r["input_ids"]) for r in rows if r["language"] == lang)
            for r in found:  # share from the planted table: n - 10 body tokens and 10 BOS tokens
                expected = ((n - 10) * (r["expert"] in planted_pair) + 10 * (r["expert"] in ROUTES[layer][0])) / n
                assert r["share"] == pytest.approx(expected) and r["ci_low"] > 1.0 and r["q_value"] < 1e-3
    assert not [r for r in spec if r["layer"] == 2]  # the collapsed layer routes every language alike
    # the first token: experts 6 and 7 at layer 0 take every position-0 token
    first = [r for r in report["position"]["first_token"] if r["layer"] == 0][:2]
    assert {r["expert"] for r in first} == {6, 7} and all(r["share"] == 1.0 and r["significant"] for r in first)
    pos0 = {r["expert"] for r in report["specialization"]["position"] if r["layer"] == 0 and r["value"] == "0"}
    assert pos0 == {6, 7}
    # the random label: tested, never significant
    assert report["specialization_tests"]["coin"]["tested"] > 0
    assert report["specialization"]["coin"] == []
    nmi = {r["layer"]: r["nmi"] for r in report["nmi"]["language"]}
    assert nmi[0] > 0.5 and nmi[2] == pytest.approx(0.0, abs=1e-9)


def test_report_confidence_matches_the_planted_logits(planted, capsys):
    db, _ = planted
    report = _cli_json(capsys, ["report", str(db), "--run", "a", "--json", "--labels", "language"])
    conf = {r["layer"]: r for r in report["confidence"]}
    # layer 2: every token has logits (8, 4, 0 x 6): p1 = e^8 / Z, p2 = e^4 / Z with Z = e^8 + e^4 + 6
    Z = math.exp(8) + math.exp(4) + 6
    p1, p2 = math.exp(8) / Z, math.exp(4) / Z
    assert conf[2]["margin_mean"] == pytest.approx(p1 - p2, abs=1e-4)
    assert conf[2]["z_loss"] == pytest.approx(math.log(Z) ** 2, abs=1e-3)
    # Switch aux loss: f = (1/2, 1/2, 0 ...), P = (p1, p2, ...) -> 8 * (p1 + p2) / 2
    assert conf[2]["aux_loss"] == pytest.approx(4 * (p1 + p2), abs=1e-4)
    entropy = -(p1 * math.log(p1) + p2 * math.log(p2) + 6 * (1 / Z) * math.log(1 / Z))
    assert conf[2]["entropy_norm"] == pytest.approx(entropy / math.log(8), abs=1e-4)


def test_compare_finds_the_swapped_layer(planted, capsys):
    db, rows = planted
    data = _cli_json(capsys, ["compare", str(db), "a", "b", "--json"])
    sat = {r["layer"]: r["saturation"] for r in data["layers"]}
    # layer 0: en and fr tokens got disjoint pairs; BOS and German tokens kept theirs
    en_fr = sum(len(r["input_ids"]) - 1 for r in rows if r["language"] in ("en", "fr"))
    total = sum(len(r["input_ids"]) for r in rows)
    assert sat[0] == pytest.approx(1 - en_fr / total) and sat[1] == 1.0 and sat[2] == 1.0
    assert data["tokens"] == total and data["token_mismatches"] == 0
    spec_tv = {r["layer"]: r["specialization_tv"]["language"] for r in data["layers"]}
    # en and fr body tokens moved to the other pair (TV = their share of the language), BOS and de did not
    moved = [sum(len(r["input_ids"]) - 1 for r in rows if r["language"] == lang) /
             sum(len(r["input_ids"]) for r in rows if r["language"] == lang) for lang in ("en", "fr")]
    assert spec_tv[1] == 0.0 and spec_tv[0] == pytest.approx(sum(moved) / 3)
    assert data["load_shift"][0]["layer"] == 0  # only layer 0's load could move


def test_facade_answers_the_same_questions(planted):
    db, rows = planted
    with moelens.open(db) as trace:
        runs = trace.runs()
        assert runs["run_id"].to_list() == ["a", "b"] and runs["num_experts"].to_list() == [8, 8]
        load = trace.load("a")
        assert load["dead_experts"].to_list()[1] == [6, 7] and load["collapsed"].to_list() == [False, False, True]
        sig = trace.specialization("language", run="a", significant=True)
        assert set(sig.filter((pl.col("layer") == 0) & (pl.col("value") == "de"))["expert"]) == {4, 5}
        assert trace.labels("a") == {"language": "document", "coin": "document", "position": "token",
                                     "token_id": "token"}
        routes = trace.sql("SELECT count(*) AS n FROM routes WHERE run_id = 'a'")["n"].item()
        assert routes == trace.routing("a").num_tokens * 3 * 2
        t = trace.transitions(0, run="a")
        assert set(zip(t["from_expert"], t["to_expert"])) == {(6, 0), (0, 0), (2, 2), (4, 4)}
        cmp = trace.compare("a", "b")
        assert cmp.filter(pl.col("layer") == 2)["saturation"].item() == 1.0
        report = trace.report("a")
        assert report.data["layers"][2]["collapsed"] and report.frames["load"].height == 3
        top = trace.top_tokens("a", layers=[0], experts=[4])  # German body tokens go to experts 4 and 5
        ids, counts = np.unique([i for r in rows for i in r["input_ids"] if 42 <= i < 62], return_counts=True)
        frequent = set(ids[counts >= 10].tolist())  # the vocabulary's min_count
        assert set(top["token_id"]) == frequent if len(frequent) <= 10 else set(top["token_id"]) < frequent
        assert (top["share"] == 1.0).all() and top.height == min(10, len(frequent))
        assert top["token"].null_count() == top.height  # input_ids data: no token text
        frames = [trace.expert_load("a"), trace.confidence("a"), trace.nmi("language", "a"), trace.vocabulary("a"),
                  trace.position("a"), trace.first_token("a"), trace.coactivation("a"), trace.repeat_rates("a"),
                  trace.reuse_distance("a"), trace.crosslayer("a"), trace.load_shift("a", "b"),
                  trace.specialization_shift("a", "b", "language"), trace.repeat_rates("a", by="language")]
        assert all(isinstance(f, pl.DataFrame) and f.height > 0 for f in frames)
        first = trace.first_token("a", layers=[0], top=2)
        assert set(first["expert"]) == {6, 7} and (first["share"] == 1.0).all()
        conf = trace.confidence("a", layers=[2])
        assert conf["margin_mean"].item() > 0.9  # every token's router is sure of expert 0
