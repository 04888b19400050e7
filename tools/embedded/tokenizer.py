"""Byte-level BPE tokenizer of the embedded model, trained on the training corpus.

``train_tokenizer`` learns the merges with the ``tokenizers`` library from ``train.jsonl`` (sorted
input, no randomness) and ``save_tokenizer`` writes ``tokenizer.json`` + ``tokenizer_config.json``
into a model folder so that ``transformers.AutoTokenizer.from_pretrained(folder)`` loads it offline.
Byte-level BPE covers every byte, so there is no unknown token; ``<|endoftext|>`` separates
documents (bos = eos) and ``<|pad|>`` pads batches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

EOS = "<|endoftext|>"
PAD = "<|pad|>"
VOCAB_SIZE = 6144


def _texts(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]


def train_tokenizer(train_jsonl: Path, vocab_size: int = VOCAB_SIZE):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_texts(train_jsonl), trainer=trainer)
    return tok


def save_tokenizer(tok, folder: Path, model_max_length: int = 512) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD,
        model_max_length=model_max_length, clean_up_tokenization_spaces=False)
    fast.save_pretrained(str(folder))
