"""SGLang routed experts: ``/generate`` responses (``meta_info.routed_experts``) into a run.

What SGLang returns (``--enable-return-routed-experts``, request ``return_routed_experts``;
read in SGLang's source):

* ``python/sglang/srt/managers/tokenizer_manager.py`` (the ``meta_info`` assembly):
  ``meta_info["routed_experts"] = pybase64.b64encode(tensor.numpy().tobytes())`` - the int32
  ids, C order, flat: the shape ``[rows, num_hidden_layers, num_experts_per_tok]`` is not sent.
* ``python/sglang/srt/layers/moe/routed_experts_capturer.py`` ``RoutedExpertsHostCache`` /
  ``get_routed_experts``: the host buffer is ``[tokens, num_hidden_layers, num_experts_per_tok]``
  and a request's rows are its first ``seqlen - 1`` tokens (the last generated token never went
  through the model); fused shared-expert slots are cut off (``[:, :, :num_experts_per_tok]``);
  a dense layer keeps the buffer's fill.
* ``python/sglang/srt/managers/io_struct.py`` ``GenerateReqInput.routed_experts_start_len``:
  "the response covers ``[routed_experts_start_len, seqlen - 1)``", for multi-turn use where
  each turn asks only for the rows after those it already has.
* ``python/sglang/srt/layers/moe/topk.py`` ``select_experts``: the capture happens after
  ``topk_ids_logical_to_physical``, so with redundant experts (``--ep-num-redundant-experts``)
  the ids are physical; map them with ``--physical-to-logical``.

Input records: a response dict (``{"output_ids", "meta_info": {...}}``), or
``{"request": <the /generate body>, "response": <its response>, "conversation": <key>}``; the
request's ``input_ids`` give the prompt tokens, consecutive records with the same
``conversation`` are the turns of one document.
"""

from __future__ import annotations

import binascii
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from moelens.errors import ConfigError, DataNotFoundError, EngineFormatError
from moelens.sources.arrays import Request, assemble
from moelens.sources.base import ImportedRun, ImportOptions

__all__ = ["from_responses", "read_sglang", "decode_routed_experts"]


def _b64decode(payload: str) -> bytes:
    """pybase64 (SIMD; SGLang itself encodes with it) when installed, else the standard library's
    lenient decoder - a truncated or corrupted payload then fails the size checks instead."""
    try:
        import pybase64
    except ImportError:
        return binascii.a2b_base64(payload)
    return pybase64.b64decode(payload, validate=True)


def decode_routed_experts(payload: str, rows: int, top_k: int, what: str) -> np.ndarray:
    """``meta_info.routed_experts`` (base64 of int32) as ``[rows, layers, top_k]``."""
    try:
        raw = _b64decode(payload)
    except (binascii.Error, ValueError, TypeError):
        raise EngineFormatError(f"{what}: routed_experts is not valid base64 (truncated or corrupted).") from None
    if len(raw) % 4:
        raise EngineFormatError(f"{what}: routed_experts has {len(raw)} bytes, not a whole number of int32 ids "
                                "(truncated).")
    flat = np.frombuffer(raw, dtype="<i4")
    per_row = flat.size // rows if rows else 0
    if rows == 0:
        if flat.size:
            raise EngineFormatError(f"{what}: {flat.size} ids for 0 rows.")
        return flat.reshape(0, 0, top_k)
    if flat.size % rows or per_row % top_k:
        raise EngineFormatError(f"{what}: {flat.size} ids do not fill {rows} rows of layers x top_k={top_k} "
                                "(truncated, or the wrong --top-k).")
    return flat.reshape(rows, per_row // top_k, top_k)


def _turn(record: Any, index: int, top_k: int) -> dict[str, Any]:
    """One response (and its request) as rows, tokens and the interval the rows cover."""
    if not isinstance(record, dict):
        raise EngineFormatError(f"record {index}: expected a response dict, got {type(record).__name__}.")
    request = record.get("request") or {}
    response = record.get("response", record)
    meta = response.get("meta_info") if isinstance(response, dict) else None
    if not isinstance(meta, dict):
        raise EngineFormatError(f"record {index}: no meta_info (is it an SGLang /generate response?).")
    rid = meta.get("id", request.get("rid", index))
    what = f"SGLang response {rid!r}"
    payload = meta.get("routed_experts")
    if payload is None:
        raise EngineFormatError(f"{what}: no meta_info.routed_experts; start SGLang with "
                                "--enable-return-routed-experts and send return_routed_experts=true.")
    prompt = request.get("input_ids")
    out_ids = response.get("output_ids")
    n_prompt = meta.get("prompt_tokens", len(prompt) if prompt is not None else None)
    n_out = meta.get("completion_tokens", len(out_ids) if out_ids is not None else None)
    if n_prompt is None or n_out is None:
        raise EngineFormatError(f"{what}: meta_info lacks prompt_tokens/completion_tokens.")
    if prompt is not None and len(prompt) != n_prompt:
        raise EngineFormatError(f"{what}: the request has {len(prompt)} input_ids, meta_info.prompt_tokens={n_prompt}.")
    start = int(meta.get("routed_experts_start_len", request.get("routed_experts_start_len", 0)) or 0)
    end = int(n_prompt) + int(n_out) - 1
    if not 0 <= start <= max(end, 0):
        raise EngineFormatError(f"{what}: routed_experts_start_len={start} outside [0, {end}].")
    routes = decode_routed_experts(payload, end - start, top_k, what)
    tokens = np.full(int(n_prompt) + int(n_out), -1, dtype=np.int64)
    if prompt is not None:
        tokens[:n_prompt] = prompt
    if out_ids is not None:
        if len(out_ids) != n_out:
            raise EngineFormatError(f"{what}: {len(out_ids)} output_ids, meta_info.completion_tokens={n_out}.")
        tokens[n_prompt:] = out_ids
    return {"rid": str(rid), "what": what, "routes": routes, "start": start, "tokens": tokens,
            "conversation": record.get("conversation"), "prompt_tokens": int(n_prompt)}


def _documents(records: Iterable[Any], top_k: int) -> list[Request]:
    order: list[Any] = []
    turns: dict[Any, list[dict[str, Any]]] = {}
    for i, record in enumerate(records):
        t = _turn(record, i, top_k)
        key = ("conversation", t["conversation"]) if t["conversation"] is not None else ("record", i)
        if key not in turns:
            order.append(key)
            turns[key] = []
        turns[key].append(t)
    requests = []
    for key in order:
        parts = turns[key]
        rows: list[np.ndarray] = []
        have = 0
        previous = None
        for n, t in enumerate(parts):
            if t["start"] > have:
                earlier = "no earlier turn" if n == 0 else f"the earlier turns give {have} rows"
                raise EngineFormatError(
                    f"{t['what']}: routed_experts_start_len={t['start']} but {earlier}; give every turn of the "
                    "conversation, in order, with the same \"conversation\" key.")
            if previous is not None:  # rows before start_len were computed on the previous turn's tokens
                m = min(t["start"], len(previous))
                a, b = t["tokens"][:m], previous[:m]
                known = (a >= 0) & (b >= 0)
                if (a[known] != b[known]).any():
                    at = int(np.flatnonzero(known & (a != b))[0])
                    raise EngineFormatError(f"{t['what']}: input_ids differ from the previous turn at position {at}; "
                                            "the kept routing rows would belong to other tokens.")
            kept, cut = [], t["start"]
            for r in rows:  # keep the first `start` rows, then append this turn's
                if cut <= 0:
                    break
                kept.append(r[:cut])
                cut -= len(r)
            rows = kept + [t["routes"]]
            have = sum(len(r) for r in rows)
            previous = t["tokens"]
        last = parts[-1]
        routes = np.concatenate(rows) if len(rows) > 1 else rows[0]
        tokens = last["tokens"][:-1]
        if len(routes) != len(tokens):
            raise EngineFormatError(f"{last['what']}: {len(routes)} routing rows for {len(tokens)} routed tokens.")
        engine = {"rid": last["rid"], "turns": len(parts), "prompt_tokens": parts[0]["prompt_tokens"],
                  "unrouted_last_token": int(last["tokens"][-1]) if len(last["tokens"]) else None}
        if key[0] == "conversation":
            engine["conversation"] = str(key[1])
        requests.append(Request(routes, tokens, {"engine": engine}, last["what"]))
    return requests


def from_responses(responses: Iterable[Any], options: ImportOptions | None = None, *, dataset: str = "sglang",
                   **option_values: Any) -> ImportedRun:
    """An :class:`ImportedRun` from SGLang ``/generate`` responses (or request/response records).

    ``num_experts`` and ``top_k`` are required: the payload is flat int32 ids::

        run = from_responses(responses, num_experts=64, top_k=8)
    """
    options = options or ImportOptions(**option_values)
    if options.top_k is None:
        raise ConfigError("SGLang sends routed experts as flat int32 ids; pass --top-k K (num_experts_per_tok) "
                          "to recover the [tokens, layers, k] shape.")
    return assemble("sglang", _documents(responses, options.top_k + options.fused_shared_experts), options,
                    dataset=dataset, engine={"format": "meta_info.routed_experts"})


def read_sglang(paths: list[str | os.PathLike], options: ImportOptions) -> ImportedRun:
    """An :class:`ImportedRun` from JSONL files of SGLang responses (one record per line)."""
    records: list[Any] = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise DataNotFoundError(f"no SGLang responses file at {p}.")
        with open(p, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise EngineFormatError(f"{p}:{n}: not JSON ({error.msg}); the file may be truncated.") from None
    run = from_responses(records, options, dataset=",".join(Path(p).name for p in paths))
    run.spec.engine["files"] = [str(p) for p in paths]
    return run
