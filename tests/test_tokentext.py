"""Stored token text (moelens.tokentext): every token visible, byte-level pieces of a character honest.

Oracles: UTF-8 encodings worked out by hand (玩 = U+73A9 = e7 8e a9, 😀 = U+1F600 = f0 9f 98 80);
the shipped evaluation split's own text (the stored texts of a document decode back to it); and
the bytes each piece stands for according to transformers' own GPT-2 ``bytes_to_unicode`` table.
"""

from __future__ import annotations

import json

import pytest

from moelens.tokentext import UNKNOWN_PIECE, Fragment, byte_level_alphabet, decode, describe, parts, token_texts

B2U = {b: c for c, b in byte_level_alphabet().items()}


def byte_level(data: bytes) -> str:
    """A GPT-2 byte-level piece for ``data`` (the alphabet is checked against transformers below)."""
    return "".join(B2U[b] for b in data)


def test_byte_level_alphabet_is_gpt2s():
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    assert {b: c for b, c in bytes_to_unicode().items()} == B2U


def test_a_character_cut_in_two_is_stored_as_its_bytes():
    # 玩 = e7 8e a9 cut after two bytes; both tokens report the whole character as their offsets
    assert token_texts("玩", [(0, 1), (0, 1)], [byte_level(b"\xe7\x8e"), byte_level(b"\xa9")]) == \
        ["<0xE7><0x8E>", "<0xA9>"]


def test_a_four_byte_character_in_four_tokens_and_a_token_across_two_characters():
    smile = "\U0001F600"  # f0 9f 98 80
    assert token_texts(f"a{smile}b", [(0, 1), (1, 2), (1, 2), (1, 2), (1, 2), (2, 3)],
                       ["a", *(byte_level(bytes([x])) for x in b"\xf0\x9f\x98\x80"), "b"]) == \
        ["a", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>", "b"]
    # 玩笑 = e7 8e a9 | e7 ac 91, tokens [e7 8e] [a9 e7] [ac 91 + "!"]
    texts = token_texts("玩笑!", [(0, 1), (0, 2), (1, 3)],
                        [byte_level(b"\xe7\x8e"), byte_level(b"\xa9\xe7"), byte_level(b"\xac\x91!")])
    assert texts == ["<0xE7><0x8E>", "<0xA9><0xE7>", "<0xAC><0x91>!"]
    assert decode(texts) == "玩笑!"


def test_sentencepiece_byte_fallback_pieces_and_a_prefix_space():
    assert token_texts("▁x 玩", [(0, 1), (1, 2), (3, 4), (3, 4), (3, 4)],
                       ["▁", "x", "<0xE7>", "<0x8E>", "<0xA9>"])[2:] == ["<0xE7>", "<0x8E>", "<0xA9>"]
    # a byte-level piece that carries the space before the character (offsets trimmed to the character)
    texts = token_texts(" 玩", [(1, 2), (1, 2)], [byte_level(b" \xe7"), byte_level(b"\x8e\xa9")])
    assert texts == [" <0xE7>", "<0x8E><0xA9>"]


def test_special_tokens_keep_their_piece_and_unknown_pieces_are_marked():
    assert token_texts("hi", [(0, 0), (0, 2)], ["<s>", "hi"]) == ["<s>", "hi"]
    # pieces that reveal no bytes (they do not add up to the character's 3 bytes)
    assert token_texts("玩", [(0, 1), (0, 1)], ["a", "b"]) == ["玩", UNKNOWN_PIECE]


def test_parts_reads_byte_runs_only_where_a_partial_character_can_be():
    assert parts("<0xE7><0x8E>") == [b"\xe7\x8e"]
    assert parts("<0xA9>笑") == [b"\xa9", "笑"]
    assert parts("x<0xE7>") == ["x", b"\xe7"]
    assert parts("<0xA9><0xE7>") == [b"\xa9", b"\xe7"]
    # literal text: ASCII bytes, a run in the middle, a complete character, a run too long to be a head
    for literal in ("<0x41>", "a<0xE7>b", "<0xE7><0x8E><0xA9>", "x<0xE7><0x8E><0xA9><0xAA>"):
        assert parts(literal) == [literal]


def test_describe_finds_the_whole_character_of_each_fragment():
    d = describe(["<0xE7><0x8E>", "<0xA9><0xE7>", "<0xAC><0x91>!", "ok", "<0xA9>"])
    assert d[0] == [Fragment(b"\xe7\x8e", 0, 3, "玩")]
    assert d[1] == [Fragment(b"\xa9", 2, 3, "玩"), Fragment(b"\xe7", 0, 3, "笑")]
    assert d[2] == [Fragment(b"\xac\x91", 1, 3, "笑"), "!"]
    assert d[3] is None
    assert d[4] == [Fragment(b"\xa9", 0, 1, None)]  # an orphan continuation byte: no character
    assert d[0][0].hex == "e7 8e"


@pytest.fixture(scope="module")
def eval_documents():
    from transformers import AutoTokenizer

    from moelens.embedded import eval_split_path, resolve

    tok = AutoTokenizer.from_pretrained(str(resolve("moelens-mini")))
    rows = [json.loads(line) for line in open(eval_split_path(), encoding="utf-8")]
    return tok, [r for r in rows if r["language"] in ("zh", "ja")]


def test_no_empty_token_text_on_the_shipped_chinese_and_japanese_documents(eval_documents):
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from moelens.pipeline.transformers_source import token_texts as _token_texts

    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    tok, docs = eval_documents
    assert {d["language"] for d in docs} == {"zh", "ja"} and len(docs) >= 40
    tokens = fragments = 0
    for doc in docs:
        enc = tok(doc["text"], return_offsets_mapping=True)
        pieces = tok.convert_ids_to_tokens(enc["input_ids"])
        texts = _token_texts(doc["text"], enc["offset_mapping"], pieces)
        assert all(texts), doc["id"]
        assert decode(texts) == doc["text"], doc["id"]
        for text, piece in zip(texts, pieces):  # each token holds exactly the bytes of its piece
            held = b"".join(p if isinstance(p, bytes) else p.encode("utf-8") for p in parts(text))
            assert held == bytes(byte_of[c] for c in piece)
        tokens += len(texts)
        fragments += sum(isinstance(p, bytes) for t in texts for p in parts(t))
    assert fragments > tokens // 20  # the split characters that used to be stored as ''
