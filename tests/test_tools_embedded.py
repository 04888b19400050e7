"""The embedded model's build tooling in ``tools/embedded/`` (not shipped): pure parts on hand-worked
examples, and the shipped cards rendered from their template and figures."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from moelens.embedded import MODELS

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str):
    """``tools.embedded.<name>`` from this checkout (``tools`` is not installed, and putting the
    repository root on sys.path would also expose its top-level hooks/kernels/store folders)."""
    if "tools" not in sys.modules:
        spec = importlib.util.spec_from_file_location("tools", ROOT / "tools" / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / "tools")])
        module = importlib.util.module_from_spec(spec)
        sys.modules["tools"] = module
        spec.loader.exec_module(module)
    module = importlib.import_module(f"tools.embedded.{name}")
    assert Path(module.__file__).resolve().is_relative_to(ROOT / "tools"), module.__file__
    return module


@pytest.fixture(scope="module")
def card_json() -> dict:
    return json.loads((MODELS["moelens-mini"] / "moelens_card.json").read_text(encoding="utf-8"))


# -- corpus -------------------------------------------------------------------------------------

def test_split_long_cuts_at_lines_then_bytes_without_breaking_characters():
    corpus = _tool("corpus")
    assert corpus._split_long("aaaa\nbbbb\ncc", 10) == ["aaaa\nbbbb", "cc"]
    assert corpus._split_long("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    assert corpus._split_long("é" * 6, 5) == ["éé", "éé", "éé"]  # 2 bytes each: a 5-byte cut keeps 2


def test_pack_joins_pieces_of_one_group_up_to_the_byte_limit():
    corpus, S = _tool("corpus"), _tool("sources")

    def piece(text, group, source="django", domain="docs"):
        return S.Piece(text, domain, "en", source, "MIT", group, f"u-{text}", {"k": group})

    docs = corpus._pack([piece("one", "A"), piece("two", "A"), piece("three", "B")], 100)
    assert [(d["text"], d["meta"]["units"]) for d in docs] == [("one\n\ntwo", 2), ("three", 1)]
    # "one" + "\n\n" + "two" is 8 bytes: at a limit of 7 they stay apart
    assert [d["text"] for d in corpus._pack([piece("one", "A"), piece("two", "A")], 7)] == ["one", "two"]
    # UI strings join with one newline; UDHR articles are never joined
    assert corpus._pack([piece("a", "A", domain="ui"), piece("b", "A", domain="ui")], 100)[0]["text"] == "a\nb"
    assert len(corpus._pack([piece("a", "A", "udhr"), piece("b", "A", "udhr")], 100)) == 2


# -- train --------------------------------------------------------------------------------------

def test_learning_rate_schedule_by_hand():
    train = _tool("train")
    # linear warm-up over 10 steps, then cosine from the peak to 10 % of it at step 100
    assert train.lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert train.lr_at(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert train.lr_at(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert train.lr_at(55, 100, 1.0, 10) == pytest.approx(0.55)  # half way: 0.1 + 0.9 * 0.5
    assert train.lr_at(100, 100, 1.0, 10) == pytest.approx(0.1)


def test_batches_are_windows_of_the_stream_drawn_by_step():
    train = _tool("train")
    stream = np.arange(1000, dtype=np.uint16)
    a = train.batch(stream, 0, 7, 4, 16).numpy()
    assert a.shape == (4, 16)
    assert (np.diff(a, axis=1) == 1).all()  # each row is a contiguous slice
    assert np.array_equal(a, train.batch(stream, 0, 7, 4, 16).numpy())  # a resumed run sees the same batch
    assert not np.array_equal(a, train.batch(stream, 0, 8, 4, 16).numpy())


# -- measure and figures --------------------------------------------------------------------------

def test_losses_by_hand():
    measure = _tool("measure")
    docs = [{"language": "de", "domain": "ui"}, {"language": "en", "domain": "ui"}]
    ids = [[0, 1, 2], [0, 2]]  # <|endoftext|> then the document's tokens
    ce = [np.array([1.0, 3.0]), np.array([2.0])]
    logp = np.log([0.5, 0.25, 0.25])
    out = measure.losses(docs, ids, ce, logp)
    assert out["language"]["de"] == pytest.approx({"model": 2.0, "unigram": math.log(4), "tokens": 2})
    assert out["language"]["en"] == pytest.approx({"model": 2.0, "unigram": math.log(4), "tokens": 1})
    assert out["all"]["all"] == pytest.approx({"model": 2.0, "unigram": math.log(4), "tokens": 3})
    # add-one smoothing: counts 0 and 1 become 1 and 2
    assert measure.unigram_logprobs([0, 1]) == pytest.approx(np.log([1 / 3, 2 / 3]))


def test_exp_entropy_by_hand():
    figures = _tool("figures")
    assert figures._exp_entropy([1, 1, 1, 1]) == pytest.approx(4)
    assert figures._exp_entropy([5, 0, 0]) == pytest.approx(1)
    assert figures._exp_entropy([3, 1]) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))


def test_acceptance_by_hand():
    figures = _tool("figures")

    def row(value, share, lift, significant):
        return {"value": value, "layer": 0, "expert": 1, "share": share, "lift": lift, "significant": significant}

    checkpoints = {
        "moelens-mini": {"uniform_share": 0.125, "load": [{"effective_experts": 10.0}, {"effective_experts": 10.0}],
                         "specialization": {"language": [row("ar", 0.30, 2.0, True), row("en", 0.50, 1.1, False)]}},
        "moelens-mini-collapsed": {"load": [
            {"effective_experts": 4.0, "effective_experts_logit_rank": 4.0, "collapsed": True},
            {"effective_experts": 6.0, "effective_experts_logit_rank": 5.0, "collapsed": False}]}}
    acc = figures.acceptance(checkpoints)
    assert acc["specialization_pass"] and acc["specialized_pairs"] == 1  # en: twice uniform, not significant
    assert acc["best_language_expert"]["value"] == "en"
    assert (acc["collapse_layers_halved"], acc["collapse_layers_halved_logit_rank"]) == (1, 2)
    assert not acc["collapse_pass"] and acc["collapsed_layers_flagged"] == 1


# -- card -----------------------------------------------------------------------------------------

def test_loss_and_corpus_tables_by_hand():
    card = _tool("card")
    ck = {"loss": {"language": {"de": {"model": 2.0, "unigram": 4.0, "tokens": 1000}},
                   "all": {"all": {"model": 3.0, "unigram": 4.0, "tokens": 1500}}}}
    assert card.loss_table(ck, "language") == (
        "| language | tokens | model (nats/token) | unigram baseline | ratio |\n|---|---|---|---|---|\n"
        "| de | 1,000 | 2.000 | 4.000 | 0.50 |\n| **all** | 1,500 | 3.000 | 4.000 | 0.75 |")
    assert card.corpus_table({"de": {"ui": [2, 1500]}, "en": {"docs": [1, 10], "ui": [3, 20]}}) == (
        "| language | docs | ui | total |\n|---|---|---|---|\n| de | – | 2 / 1,500 | 2 / 1,500 |\n"
        "| en | 1 / 10 | 3 / 20 | 4 / 30 |\n| **total** | 1 / 10 | 5 / 1,520 | 6 / 1,530 |")


def test_shipped_cards_are_their_template_rendered_from_the_card_json(card_json):
    card = _tool("card")
    for name, text in card.render(card_json).items():
        assert (MODELS[name] / "README.md").read_text(encoding="utf-8") == text, name
    assert card.main(["--check"]) == 0


def test_card_architecture_and_parameters_match_the_checkpoint(card_json):
    from safetensors import safe_open

    arch, p = card_json["architecture"], card_json["parameters"]
    h, E, k = arch["hidden_size"], arch["num_experts"], arch["num_experts_per_tok"]
    experts = arch["num_hidden_layers"] * E * 3 * h * arch["moe_intermediate_size"]  # gate, up, down per expert
    assert p["experts"] == experts
    assert p["embedding"] == arch["vocab_size"] * h  # tied with the output layer
    assert p["active"] == p["total"] - experts + experts * k // E
    folder = MODELS["moelens-mini"]
    with safe_open(str(folder / "model.safetensors"), framework="np") as f:
        assert p["total"] == sum(int(np.prod(f.get_slice(key).get_shape())) for key in f.keys())
    assert p["bytes"] == (folder / "model.safetensors").stat().st_size
    for name, record in card_json["training"].items():
        assert record == json.loads((MODELS[name] / "training.json").read_text())
