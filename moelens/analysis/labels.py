"""Labels that routing can be split by: document columns, ``meta`` keys, position buckets, token ids.

A :class:`Label` maps every document (``kind="document"``) or every token (``kind="token"``) to
an integer code into ``values`` (``-1``: no value). Documents carry ``domain``, ``language`` and
``source`` columns and any scalar key of their ``meta`` JSON (``topic`` or ``meta.topic``);
``position`` buckets token positions as 0, 1, 2-3, 4-7, ... (log2-spaced); ``token_id`` uses
the token id itself. Unknown names raise :class:`LabelNotFoundError` listing the labels present.

Identifier-like columns - a value in at least :data:`ID_MIN_DOCUMENTS` documents and a distinct
value for at least :data:`ID_DISTINCT_FRACTION` of them (``id``, ``path``, ``url``) - say which
document a token came from, not what kind: they are never offered as labels
(:func:`available_labels`, :func:`default_labels`) but still resolve when asked for by name.
``domain`` and ``language`` are labels by declaration (the data format names them so) and are never
taken for identifiers, even when every document has its own value; ``source`` and meta keys can be.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from moelens.errors import ColumnNotFoundError

__all__ = ["Label", "LabelNotFoundError", "resolve_label", "available_labels", "identifier_columns",
           "default_labels", "position_bucket", "position_bucket_names", "DOCUMENT_COLUMNS", "TOKEN_LABELS",
           "ID_MIN_DOCUMENTS", "ID_DISTINCT_FRACTION"]

DOCUMENT_COLUMNS = ("domain", "language", "source")
TOKEN_LABELS = ("position", "token_id")
_SKIP_META = {"skipped"}
ID_MIN_DOCUMENTS = 10
ID_DISTINCT_FRACTION = 0.9
DECLARED_LABELS = ("domain", "language")  # never identifier-like


class LabelNotFoundError(ColumnNotFoundError):
    """The label is not a document column, a meta key, ``position`` or ``token_id``."""


@dataclass(frozen=True)
class Label:
    name: str
    kind: str  # "document" | "token"
    values: tuple[str, ...]
    codes: np.ndarray  # [D] per document (documents order) or [T] per token; -1 = no value


def position_bucket(pos: np.ndarray) -> np.ndarray:
    """Bucket of each position: 0 for position 0, else ``floor(log2(pos)) + 1`` (1, 2-3, 4-7, ...)."""
    p = np.asarray(pos, dtype=np.int64)
    _, exponent = np.frexp(np.maximum(p, 0).astype(np.float64))  # p = m * 2**e, m in [0.5, 1): exact
    out = np.where(p > 0, exponent, 0).astype(np.int32)
    return out


def position_bucket_names(n: int) -> tuple[str, ...]:
    names = []
    for b in range(n):
        lo, hi = (0, 0) if b == 0 else (2 ** (b - 1), 2 ** b - 1)
        names.append(str(lo) if lo == hi else f"{lo}-{hi}")
    return tuple(names)


def _meta_table(documents: Any) -> dict[str, list[Any]]:
    """``{key: [value per document]}`` for the scalar keys of the ``meta`` JSON column."""
    if "meta" not in documents.columns:
        return {}
    metas = documents["meta"].to_list()
    keys: dict[str, list[Any]] = {}
    for i, text in enumerate(metas):
        if not text:
            continue
        try:
            obj = json.loads(text) if isinstance(text, str) else text
        except (TypeError, ValueError):
            continue
        if not isinstance(obj, dict):
            continue
        for key, value in obj.items():
            if key in _SKIP_META or isinstance(value, (dict, list)) or value is None:
                continue
            keys.setdefault(key, [None] * len(metas))[i] = value
    return keys


def _codes(values: list[Any]) -> tuple[tuple[str, ...], np.ndarray]:
    """Codes by descending frequency (ties by name) of the non-null values."""
    text = [None if v is None else (str(v).lower() if isinstance(v, bool) else str(v)) for v in values]
    present = [t for t in text if t is not None]
    uniq, counts = np.unique(np.array(present, dtype=object), return_counts=True) if present else ([], [])
    order = sorted(range(len(uniq)), key=lambda i: (-counts[i], str(uniq[i])))
    names = tuple(str(uniq[i]) for i in order)
    lookup = {n: c for c, n in enumerate(names)}
    return names, np.array([-1 if t is None else lookup[t] for t in text], dtype=np.int32)


def _document_columns(docs: Any) -> dict[str, list[Any]]:
    """``{name: [value per document]}`` of the label columns and meta keys that hold a value somewhere."""
    out: dict[str, list[Any]] = {}
    for col in DOCUMENT_COLUMNS:
        if col in docs.columns and docs[col].null_count() < docs.height:
            out[col] = docs[col].to_list()
    for key, values in _meta_table(docs).items():
        if key not in out and key not in TOKEN_LABELS:
            out[key] = values
    return out


def _identifier_like(values: list[Any]) -> bool:
    present = [str(v) for v in values if v is not None]
    return len(present) >= ID_MIN_DOCUMENTS and len(set(present)) >= ID_DISTINCT_FRACTION * len(present)


def identifier_columns(run: Any) -> list[str]:
    """Document columns and meta keys holding (nearly) one distinct value per document."""
    return [name for name, values in _document_columns(run.documents).items()
            if name not in DECLARED_LABELS and _identifier_like(values)]


def available_labels(run: Any) -> dict[str, str]:
    """``{label: kind}`` of the labels present in the run (a document label needs one non-null value;
    identifier-like columns are left out). A stats-mode run offers the label kinds it aggregated."""
    label_counts = getattr(run, "labels", None)
    if isinstance(label_counts, dict):  # RunAggregates: counts were kept per label kind
        return {name: "document" for name in label_counts}
    out: dict[str, str] = {}
    for name, values in _document_columns(run.documents).items():
        if name in DECLARED_LABELS or not _identifier_like(values):
            out[name] = "document"
    for name in TOKEN_LABELS:
        out[name] = "token"
    return out


def default_labels(run: Any, max_values: int, asked: Any = None) -> list[str]:
    """The labels analyses split by when not told: ``asked`` if given, else every document label with
    2 to ``max_values`` values, and ``position`` (identifier-like columns never)."""
    if asked is not None:
        return list(asked)
    out = []
    for name, kind in available_labels(run).items():
        if kind == "token":
            if name == "position":
                out.append(name)
            continue
        label_counts = getattr(run, "labels", None)
        n = len(label_counts[name].values) if isinstance(label_counts, dict) else len(resolve_label(run, name).values)
        if 2 <= n <= max_values:
            out.append(name)
    return out


def resolve_label(routing: Any, name: str) -> Label:
    """The :class:`Label` called ``name`` (``meta.key`` also accepted for a meta key)."""
    docs = routing.documents
    if name == "position":
        b = position_bucket(routing.pos)
        n = int(b.max()) + 1 if len(b) else 1
        return Label(name, "token", position_bucket_names(n), b)
    if name == "token_id":
        ids, codes = np.unique(routing.token_id, return_inverse=True)
        counts = np.bincount(codes, minlength=len(ids))
        order = np.lexsort((ids, -counts))
        remap = np.empty(len(ids), np.int32)
        remap[order] = np.arange(len(ids), dtype=np.int32)
        return Label(name, "token", tuple(str(int(x)) for x in ids[order]), remap[codes])
    key = name[5:] if name.startswith("meta.") else name
    if key in DOCUMENT_COLUMNS and key in docs.columns and docs[key].null_count() < docs.height:
        values, codes = _codes(docs[key].to_list())
        return Label(name, "document", values, codes)
    meta = _meta_table(docs)
    if key in meta:
        values, codes = _codes(meta[key])
        return Label(key, "document", values, codes)
    ids = identifier_columns(routing)
    raise LabelNotFoundError(
        f"no label {name!r} in run {routing.run_id!r}; available labels: {', '.join(available_labels(routing))}"
        + (f" (identifier-like columns, usable by name: {', '.join(ids)})." if ids else "."))
