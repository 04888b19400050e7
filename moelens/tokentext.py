"""The stored text of a token, honest about byte-level pieces of a character; and how to show it.

Byte-level tokenizers (GPT-2-style BPE, SentencePiece with byte fallback) split a character that
takes several UTF-8 bytes over several tokens, and the tokenizer reports the whole character as
the offsets of each of them. moelens stores, for every token, exactly the bytes it holds:

* whole characters as themselves;
* the bytes of a character the token holds only part of as ``<0xE7><0x8E>`` - the notation of
  SentencePiece's byte-fallback tokens (``PARTIAL_BYTE``), uppercase hex, one ``<0x..>`` per byte.

So ``玩`` (``e7 8e a9``) cut after two bytes is stored as ``<0xE7><0x8E>`` and ``<0xA9>``, never
``玩`` and ``''``. Every stored text is non-empty, and the stored texts of a document decode back
to its text (:func:`decode`). A ``<0x..>`` run counts as bytes only where a partial character can
be: at the start of a token (continuation bytes) or at its end (the start of a character); a
literal ``<0xE7>`` typed in a document elsewhere stays text.

:func:`token_texts` computes the stored texts from a tokenizer's offsets and pieces (called by the
tracer); :func:`parts` and :func:`describe` split stored texts into text and byte fragments and
find, across neighbouring tokens, the whole character each fragment belongs to (the dashboard
shows the bytes and the character on hover). Pure Python: no tokenizer, no torch.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = ["PARTIAL_BYTE", "UNKNOWN_PIECE", "token_texts", "parts", "decode", "describe", "Fragment",
           "piece_bytes", "byte_level_alphabet"]

PARTIAL_BYTE = "<0x{:02X}>"
UNKNOWN_PIECE = "\ufffd"  # a token inside a character whose bytes the tokenizer does not reveal
_RUN = re.compile(r"(?:<0x[0-9A-F]{2}>)+")
_BYTE = re.compile(r"<0x([0-9A-F]{2})>")
_SPM_SPACE = "\u2581"


@functools.lru_cache(maxsize=1)
def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: printable character -> the byte it stands for."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def piece_bytes(piece: str) -> list[bytes]:
    """The bytes a tokenizer piece may stand for, most specific reading first (may be empty)."""
    out = []
    if _BYTE.fullmatch(piece) or _RUN.fullmatch(piece):
        out.append(bytes(int(h, 16) for h in _BYTE.findall(piece)))
    alphabet = byte_level_alphabet()
    if piece and all(c in alphabet for c in piece):
        out.append(bytes(alphabet[c] for c in piece))
    out.append(piece.replace(_SPM_SPACE, " ").encode("utf-8"))
    return out


def _is_cont(b: int) -> bool:
    return 0x80 <= b <= 0xBF


def _char_len(lead: int) -> int:
    return 1 if lead < 0x80 else 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4 if lead >> 3 == 0b11110 else 0


def _render(data: bytes, lo: int, hi: int) -> str:
    """Bytes ``data[lo:hi]`` of valid UTF-8 ``data``: whole characters as text, cut ones as ``<0x..>``."""
    out = []
    i = lo
    while i < hi:
        if _is_cont(data[i]):  # the tail of a character that started before lo
            j = i
            while j < hi and _is_cont(data[j]):
                j += 1
            out.append("".join(PARTIAL_BYTE.format(b) for b in data[i:j]))
            i = j
            continue
        n = max(_char_len(data[i]), 1)
        if i + n <= hi:
            out.append(data[i:i + n].decode("utf-8"))
        else:  # the head of a character that ends after hi
            out.append("".join(PARTIAL_BYTE.format(b) for b in data[i:hi]))
        i += n
    return "".join(out)


def _split(span: str, pieces: Sequence[str], gap: str) -> list[str] | None:
    """Split the text ``span`` (shared by several tokens) at the byte lengths of ``pieces``."""
    readings = [piece_bytes(p) for p in pieces]
    for text in (span, gap + span) if gap else (span,):
        data = text.encode("utf-8")
        for k in range(max(len(r) for r in readings)):
            lengths = [len(r[min(k, len(r) - 1)]) for r in readings]
            if sum(lengths) == len(data) and all(lengths):
                cuts = [0]
                for n in lengths:
                    cuts.append(cuts[-1] + n)
                return [_render(data, a, b) for a, b in zip(cuts, cuts[1:])]
    return None


def token_texts(text: str, offsets: Sequence[tuple[int, int]], pieces: Sequence[str]) -> list[str]:
    """The stored text of each token of ``text`` (see the module docstring); never empty.

    ``offsets``: each token's ``(start, end)`` characters in ``text`` (a fast tokenizer's
    ``offset_mapping``); ``pieces``: its token strings (``convert_ids_to_tokens``), which say how
    many bytes of a shared character each token holds. Tokens with an empty span (special tokens)
    keep their piece. Tokens that share a character form a cluster whose text is cut at the pieces'
    byte lengths; where the pieces do not add up to the cluster's bytes (a tokenizer that reveals no
    bytes), the first token keeps the text and the others are marked :data:`UNKNOWN_PIECE`.
    """
    n = len(offsets)
    out: list[str] = [""] * n
    end = 0
    i = 0
    while i < n:
        a, b = (int(x) for x in offsets[i])
        if b <= a:
            out[i] = pieces[i] or UNKNOWN_PIECE
            i += 1
            continue
        j, cluster_end = i + 1, b
        while j < n and offsets[j][1] > offsets[j][0] and offsets[j][0] < cluster_end:
            cluster_end = max(cluster_end, int(offsets[j][1]))
            j += 1
        start = max(a, end)
        if j == i + 1:
            out[i] = text[start:b] if b > start else (pieces[i] or UNKNOWN_PIECE)
        else:
            split = _split(text[start:cluster_end], pieces[i:j], text[end:start] if end < start else "")
            if split is None or not all(split):
                split = [text[start:cluster_end]] + [UNKNOWN_PIECE] * (j - i - 1)
            out[i:j] = split
        end = max(end, cluster_end)
        i = j
    return out


def parts(token: str) -> list[str | bytes]:
    """``token`` split into text (``str``) and partial-character bytes (``bytes``), in order.

    A ``<0x..>`` run is bytes only at the start of the token (continuation bytes, possibly followed
    by the start of the next character when the run is the whole token) or at its end (the start of
    a character, with fewer continuation bytes than the character needs); anywhere else it is text.
    """
    out: list[str | bytes] = []
    pos = 0
    for m in _RUN.finditer(token):
        data = bytes(int(h, 16) for h in _BYTE.findall(m.group()))
        at_start, at_end = m.start() == 0, m.end() == len(token)
        head = 0
        while head < len(data) and _is_cont(data[head]):
            head += 1
        tail = data[head:]
        ok_tail = not tail or (_char_len(tail[0]) > len(tail) >= 1 and all(_is_cont(x) for x in tail[1:]))
        if (at_start and head and (not tail or (at_end and ok_tail))) or (at_end and not head and ok_tail and tail):
            if m.start() > pos:
                out.append(token[pos:m.start()])
            if head:
                out.append(data[:head])
            if tail:
                out.append(tail)
            pos = m.end()
    if pos < len(token):
        out.append(token[pos:])
    return out


def decode(tokens: Iterable[str]) -> str:
    """The text the stored texts of consecutive tokens spell (partial characters joined)."""
    buf = bytearray()
    for token in tokens:
        for p in parts(token):
            buf += p if isinstance(p, bytes) else p.encode("utf-8")
    return buf.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Fragment:
    """Bytes of one character held by one token: ``data`` is bytes ``first``..``first+len-1`` (from 0)
    of the ``size``-byte character ``char`` (``None`` where the neighbours do not complete it)."""

    data: bytes
    first: int
    size: int
    char: str | None

    @property
    def hex(self) -> str:
        return " ".join(f"{b:02x}" for b in self.data)


def describe(tokens: Sequence[str]) -> list[list[str | Fragment] | None]:
    """Per token: ``None`` when it holds only whole characters, else its parts with every byte
    fragment resolved against its neighbours (:class:`Fragment`). ``tokens``: consecutive stored
    texts (one document, or a window of one)."""
    split = [parts(t) for t in tokens]
    out: list[list[str | Fragment] | None] = [None if all(isinstance(p, str) for p in s) else list(s) for s in split]
    # walk the byte fragments in order, grouping those that make up one character
    group: list[tuple[int, int]] = []  # (token index, part index)
    need = 0

    def close(complete: bool) -> None:
        data = b"".join(split[t][k] for t, k in group)  # type: ignore[misc]
        char = data.decode("utf-8", errors="strict") if complete else None
        size = _char_len(data[0]) if data and not _is_cont(data[0]) else len(data)
        at = 0
        for t, k in group:
            piece = split[t][k]
            out[t][k] = Fragment(piece, at, max(size, len(data)), char)  # type: ignore[index, arg-type]
            at += len(piece)

    for t, s in enumerate(split):
        for k, p in enumerate(s):
            if isinstance(p, str):
                if group:
                    close(False)
                    group, need = [], 0
                continue
            if _is_cont(p[0]) and group:
                group.append((t, k))
            else:
                if group:
                    close(False)
                group, need = [(t, k)], (_char_len(p[0]) if not _is_cont(p[0]) else 0)
            have = sum(len(split[u][v]) for u, v in group)  # type: ignore[arg-type]
            if need and have >= need:
                try:
                    close(have == need)
                except UnicodeDecodeError:
                    close(False)
                group, need = [], 0
    if group:
        close(False)
    return out
