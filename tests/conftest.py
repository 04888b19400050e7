"""Shared fixtures: a tiny tokenizer and a tiny saved MoE model folder, built offline in seconds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    # Tiny models run fastest single-threaded, and the suite must not fight itself for 2 cores.
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """A test parametrized by a family the installed transformers lacks (the table also holds the
    families of newer releases) is skipped, saying so; under the newest tested release none is."""
    import transformers

    from moelens.models.tiny import TINY_FAMILIES, family_available

    missing = {f for f in TINY_FAMILIES if not family_available(f)}
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        family = params.get("family")
        needs = set(getattr(item.get_closest_marker("families"), "args", ()) or ())
        lacking = ({family} | needs) & missing if isinstance(family, str) else needs & missing
        if lacking:
            item.add_marker(pytest.mark.skip(reason=f"{', '.join(sorted(lacking))} not in transformers"
                                                    f" {transformers.__version__}"))

SAMPLE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "def double(x):\n    return 2 * x\n",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "敏捷的棕色狐狸跳过了懒狗。",
    "Article 1. All human beings are born free and equal in dignity and rights.",
]


def build_tokenizer(vocab_size: int = 320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SAMPLE_TEXTS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>")


def save_tiny_model(folder: Path, family: str = "qwen3_moe", *, seed: int = 0, **config) -> Path:
    """Save a tiny random ``family`` model with a matching tokenizer (vocab 320) into ``folder``."""
    from moelens.models.tiny import build_tiny_model

    tokenizer = build_tokenizer()
    model = build_tiny_model(family, seed=seed, vocab_size=len(tokenizer), **config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen3-moe")


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


@pytest.fixture
def write_jsonl():
    """``write_jsonl(path, rows) -> path``."""
    return _write_jsonl


@pytest.fixture
def labelled_jsonl(tmp_path) -> Path:
    langs = ["en", "de", "fr", "python", "ru", "zh", "en"]
    domains = ["prose", "prose", "prose", "code", "prose", "prose", "legal"]
    rows = []
    for i in range(21):
        j = i % len(SAMPLE_TEXTS)
        rows.append({"text": SAMPLE_TEXTS[j] * (1 + i % 3), "domain": domains[j], "language": langs[j],
                     "licence": "CC0", "n": i})
    rows[5]["text"] = "   \n "  # whitespace-only: skipped and counted
    return _write_jsonl(tmp_path / "docs.jsonl", rows)
