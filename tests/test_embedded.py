"""The embedded default: three checkpoints that load offline, the shipped eval split, the card."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from moelens.embedded import MODELS, eval_split_path, resolve

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

NAMES = ("moelens-mini", "moelens-mini-early", "moelens-mini-collapsed")
PERMISSIVE = {"MIT", "ISC", "BSD-2-Clause", "BSD-3-Clause", "0BSD", "CC0-1.0", "PSF-2.0", "Unlicense"}
FIELDS = ("text", "domain", "language", "source", "licence")
CARD = MODELS["moelens-mini"] / "moelens_card.json"


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    with eval_split_path().open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads(CARD.read_text())


def test_registry_names_and_alias():
    for name in NAMES:
        assert resolve(name) == MODELS[name]
        assert (resolve(name) / "config.json").is_file()
    assert resolve("embedded") == MODELS["moelens-mini"]
    assert resolve("no-such-model") is None
    assert eval_split_path().is_file()


def test_registry_import_is_torch_free():
    code = "import sys, moelens.embedded; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_meets_spec(name):
    from safetensors import safe_open
    from transformers import AutoConfig

    folder = resolve(name)
    config = AutoConfig.from_pretrained(folder)
    assert config.num_experts >= 8 and config.num_experts_per_tok >= 2
    moe_layers = [i for i in range(config.num_hidden_layers)
                  if i not in config.mlp_only_layers and (i + 1) % config.decoder_sparse_step == 0]
    assert len(moe_layers) >= 4
    files = sorted(folder.glob("*.safetensors"))
    assert files
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            dtypes = {str(f.get_slice(k).get_dtype()) for k in f.keys()}
        assert dtypes <= {"F16", "BF16"}, dtypes
    for extra in ("tokenizer.json", "tokenizer_config.json", "README.md"):
        assert (folder / extra).is_file()


def test_total_weight_size():
    total = sum(p.stat().st_size for name in NAMES for p in resolve(name).glob("*.safetensors"))
    assert total <= 25.5e6, total


def test_tokenizer_round_trips_multilingual():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve("moelens-mini"))
    sample = ("All human beings are born free. Alle Menschen sind frei. Все люди рождаются "
              "свободными. 人人生而自由。すべての人間は生まれながらにして自由である。"
              "يولد جميع الناس أحراراً. def f(x):\n    return x  # ok")
    ids = tok(sample, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == sample
    assert max(ids) < len(tok) and tok.eos_token and tok.pad_token


def _script(text: str) -> str:
    letters = [unicodedata.name(ch, "").split(" ")[0] for ch in text if ch.isalpha()]
    return max(set(letters), key=letters.count) if letters else ""


def test_eval_split_is_labelled_permissive_and_diverse(rows):
    assert 300 <= len(rows) <= 600
    for row in rows:
        for field in FIELDS:
            assert isinstance(row[field], str) and row[field], (field, row.get("source"))
        assert row["licence"] in PERMISSIVE, row["licence"]
        if row["language"] == "code":
            assert row["meta"]["programming_language"] in {"python", "c", "javascript"}
    natural = {r["language"] for r in rows} - {"code"}
    assert len(natural) >= 6
    scripts = {}
    for r in rows:
        if r["language"] != "code" and r["source"] == "udhr":
            scripts.setdefault(r["language"], _script(r["text"]))
    non_latin = {lang for lang, s in scripts.items() if s not in ("LATIN", "")}
    assert len(non_latin) >= 2, scripts
    assert len({r["domain"] for r in rows}) >= 5


def _doc_losses(model, tok, texts):
    import torch

    eos = tok.convert_tokens_to_ids(tok.eos_token)
    out = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([[eos] + tok(text, add_special_tokens=False)["input_ids"][:511]])
            logits = model(input_ids=ids).logits[0, :-1]
            ce = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
            out.append((float(ce), ids.shape[1] - 1, ids[0, 1:].tolist()))
    return out


def test_forward_beats_unigram_and_matches_card(rows, card):
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve("moelens-mini")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    counts = np.asarray(json.loads((folder / "unigram.json").read_text())["counts"], float) + 1
    logp = np.log(counts / counts.sum())
    by_lang: dict[str, list[dict]] = {}
    for r in rows:
        by_lang.setdefault(r["language"], []).append(r)
    picked = [r for lang in sorted(by_lang) for r in by_lang[lang][:3]]
    res = _doc_losses(model, tok, [r["text"] for r in picked])
    model_ce = sum(c for c, _, _ in res) / sum(n for _, n, _ in res)
    uni_ce = sum(float(-logp[ids].sum()) for _, _, ids in res) / sum(n for _, n, _ in res)
    assert math.isfinite(model_ce) and model_ce < uni_ce
    # the card's per-language figures for the same split: recompute one language exactly
    lang = "zh"
    docs = [r for r in rows if r["language"] == lang]
    res = _doc_losses(model, tok, [r["text"] for r in docs])
    n = sum(k for _, k, _ in res)
    stated = card["checkpoints"]["moelens-mini"]["loss"]["language"][lang]
    assert sum(c for c, _, _ in res) / n == pytest.approx(stated["model"], abs=2e-3)
    assert sum(float(-logp[ids].sum()) for _, _, ids in res) / n == pytest.approx(
        stated["unigram"], abs=1e-6)
    for kind in ("language", "domain"):
        for label, figs in card["checkpoints"]["moelens-mini"]["loss"][kind].items():
            assert figs["model"] < figs["unigram"], (kind, label)


def test_card_acceptance_figures(card):
    acc = card["acceptance"]
    assert acc["specialization_pass"] and acc["collapse_pass"]
    bal = card["checkpoints"]["moelens-mini"]
    col = card["checkpoints"]["moelens-mini-collapsed"]
    u = bal["uniform_share"]
    assert u == bal["top_k"] / bal["num_experts"]
    best = acc["best_language_expert"]
    assert best["share"] >= 2 * u and best["significant"] and best["ci_low"] > 1
    assert best["share"] == max(r["share"] for r in bal["specialization"]["language"])
    halved = [c["effective_experts"] <= b["effective_experts"] / 2
              for b, c in zip(bal["load"], col["load"])]
    assert sum(halved) > len(halved) / 2 and sum(halved) == acc["collapse_layers_halved"]
    for ck in card["checkpoints"].values():
        for layer in ck["load"]:
            assert sum(layer["load"]) == pytest.approx(1, abs=1e-4)
            assert 1 <= layer["effective_experts"] <= ck["num_experts"] + 1e-9
            # dead: load below a tenth of the uniform load 1/E
            assert len(layer["dead_experts"]) == sum(x < 0.1 / ck["num_experts"] - 1e-6 for x in layer["load"])
        for rows in ck["specialization"].values():
            for r in rows:
                assert r["lift"] == pytest.approx(r["share"] / r["overall_share"], rel=1e-9)


def test_card_routing_matches_a_recount(rows, card):
    """The collapsed model's figures in the card, recounted from transformers' router logits.

    Documents run one at a time, as the tokenizer encodes them (what ``moelens.trace`` records).
    Its router is saturated, so the second slot is often a tie among zero-probability experts:
    the recount must select exactly as the router does."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve("moelens-mini-collapsed")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    k, E, L = model.config.num_experts_per_tok, model.config.num_experts, model.config.num_hidden_layers
    counts, zh, by_logit = np.zeros((L, E)), np.zeros((L, E)), np.zeros((L, E))
    gaps, zero = [[] for _ in range(L)], np.zeros(L)
    n = n_zh = 0
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([tok(r["text"])["input_ids"]])
            out = model(input_ids=ids, output_router_logits=True)
            for layer, logits in enumerate(out.router_logits):
                # as the router does it: softmax in float32, then top-k (ties included)
                probs = torch.softmax(logits, dim=-1, dtype=torch.float)
                top = probs.topk(k, dim=-1)
                c = np.bincount(top.indices.ravel().numpy(), minlength=E)
                counts[layer] += c
                if r["language"] == "zh":
                    zh[layer] += c
                zero[layer] += int((top.values[:, -1] == 0).sum())
                ranked = logits.float().sort(dim=-1, descending=True)
                gaps[layer].append((ranked.values[:, 0] - ranked.values[:, 1]).numpy())
                by_logit[layer] += np.bincount(ranked.indices[:, :k].ravel().numpy(), minlength=E)
            n += ids.shape[1]
            n_zh += ids.shape[1] if r["language"] == "zh" else 0
    col = card["checkpoints"]["moelens-mini-collapsed"]
    for layer, stated in enumerate(col["load"]):
        assert stated["tokens"] == n
        load = counts[layer] / counts[layer].sum()
        assert stated["load"] == pytest.approx(load.tolist(), abs=5e-4)
        p = load[load > 0]
        assert stated["effective_experts"] == pytest.approx(math.exp(-(p * np.log(p)).sum()), abs=0.01)
        assert stated["dead_experts"] == np.flatnonzero(load < 0.1 / E).tolist()
        assert stated["median_logit_gap"] == pytest.approx(float(np.median(np.concatenate(gaps[layer]))), rel=1e-3)
        assert stated["last_slot_zero_weight"] == pytest.approx(zero[layer] / n, abs=1e-3)
        q = by_logit[layer] / by_logit[layer].sum()
        q = q[q > 0]
        assert stated["effective_experts_logit_rank"] == pytest.approx(math.exp(-(q * np.log(q)).sum()), abs=0.01)
    stated = [r for r in col["specialization"]["language"] if r["value"] == "zh"]
    assert len(stated) == L
    for r in stated:
        assert r["tokens"] == n_zh
        assert zh[r["layer"], r["expert"]] / n_zh == pytest.approx(r["share"], abs=5e-4)
        assert zh[r["layer"]].argmax() == r["expert"]
