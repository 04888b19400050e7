"""vLLM routed experts: ``RequestOutput`` objects (or moelens's JSONL dump of them) into a run.

What vLLM returns (``enable_return_routed_experts=True``; read in vLLM's source):

* ``vllm/outputs.py`` ``CompletionOutput.routed_experts``: ``np.ndarray | None``, shape
  ``[seq_len, layer_num, topk]``; ``RequestOutput`` carries ``request_id``, ``prompt_token_ids``
  and ``outputs`` (one ``CompletionOutput`` per sample, each with its own ``token_ids``).
* ``vllm/v1/core/sched/scheduler.py`` ``Scheduler._get_routed_experts``: the rows are the KV
  slots of ``request.num_tokens - 1`` tokens, i.e. the prompt and every generated token but the
  last, which never went through the model.
* ``vllm/model_executor/layers/fused_moe/routed_experts_capturer.py``
  ``RoutedExpertsCapturer.init_buffer`` / ``capture``: the buffer is
  ``[tokens, hf_config.num_hidden_layers, num_experts_per_tok]`` int32, indexed by the decoder
  layer id; a dense layer is never written, so it keeps the fill (zeros in the shared-memory
  buffer of this version; ``-1`` in newer ones); MTP layers (``layer_id >= num_hidden_layers``)
  are skipped.

moelens's JSONL dump (:func:`dump_request_outputs` writes it): one JSON object per line,
``{"request_id", "prompt_token_ids", "outputs": [{"index", "token_ids", "routed_experts"}],
"meta"?}`` where ``routed_experts`` is either nested lists ``[tokens][layers][k]`` or
``{"dtype", "shape", "data"}`` with ``data`` the base64 of the C-order little-endian array.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from moelens.errors import DataNotFoundError, EngineFormatError
from moelens.sources.arrays import Request, assemble
from moelens.sources.base import ImportedRun, ImportOptions

__all__ = ["from_request_outputs", "read_vllm", "dump_request_outputs", "encode_array", "decode_array"]


def _get(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def encode_array(array: Any) -> dict[str, Any]:
    """``{"dtype", "shape", "data"}``: an integer array as base64 of its C-order little-endian bytes."""
    a = np.ascontiguousarray(np.asarray(array))
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return {"dtype": a.dtype.name, "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(value: Any, what: str) -> np.ndarray:
    """The inverse of :func:`encode_array`; nested lists are accepted too."""
    if isinstance(value, dict):
        try:
            dtype = np.dtype(value["dtype"]).newbyteorder("<")
            shape = tuple(int(x) for x in value["shape"])
            raw = base64.b64decode(value["data"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error) as error:
            raise EngineFormatError(f"{what}: cannot decode the encoded array ({error}).") from None
        want = int(np.prod(shape)) * dtype.itemsize
        if len(raw) != want:
            raise EngineFormatError(f"{what}: {len(raw)} bytes for shape {list(shape)} of {dtype.name} "
                                    f"({want} expected); the data is truncated.")
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    try:
        out = np.asarray(value)
    except ValueError:
        raise EngineFormatError(f"{what}: routed_experts rows differ in length (a ragged array).") from None
    if out.dtype == object:
        raise EngineFormatError(f"{what}: routed_experts rows differ in length (a ragged array).")
    if out.size == 0:
        return out.reshape(0, 0, 0) if out.ndim < 3 else out
    return out


def _requests(outputs: Iterable[Any], where: str) -> list[Request]:
    requests = []
    for i, out in enumerate(outputs):
        rid = _get(out, "request_id", i)
        prompt = _get(out, "prompt_token_ids")
        samples = _get(out, "outputs")
        if samples is None:
            raise EngineFormatError(f"{where} request {rid!r}: no `outputs` (is it a vLLM RequestOutput?).")
        for sample in samples:
            index = _get(sample, "index", 0)
            what = f"{where} request {rid!r} sample {index}"
            routes = _get(sample, "routed_experts")
            if routes is None:
                raise EngineFormatError(f"{what}: routed_experts is None; start vLLM with "
                                        "enable_return_routed_experts=True and read finished outputs.")
            routes = decode_array(routes, what)
            out_ids = list(_get(sample, "token_ids") or [])
            rows = int(routes.shape[0]) if routes.ndim else 0
            if prompt is not None:
                want = len(prompt) + len(out_ids) - 1
                if rows != want:
                    raise EngineFormatError(
                        f"{what}: routed_experts has {rows} rows for {len(prompt)} prompt + {len(out_ids)} output "
                        f"tokens; vLLM returns one row per token but the last ({want}).")
                ids = np.asarray(list(prompt) + out_ids[:-1] if out_ids else list(prompt)[:-1], dtype=np.int64)
                n_prompt = len(prompt)
            else:  # prompt given as embeddings: only the generated ids are known
                n_prompt = rows - len(out_ids) + 1
                if n_prompt < 0:
                    raise EngineFormatError(f"{what}: {rows} routed_experts rows for {len(out_ids)} output tokens.")
                ids = np.concatenate([np.full(n_prompt, -1), np.asarray(out_ids[:-1], dtype=np.int64)])
            engine = {"request_id": str(rid), "sample": int(index), "prompt_tokens": int(n_prompt)}
            if out_ids:
                engine["unrouted_last_token"] = int(out_ids[-1])
            meta = {"engine": engine}  # a nested dict: bookkeeping, never a label
            extra = _get(out, "meta")
            if isinstance(extra, dict):
                meta.update(extra)
            requests.append(Request(routes, ids, meta, what))
    return requests


def from_request_outputs(outputs: Iterable[Any], options: ImportOptions | None = None, *,
                         dataset: str = "vllm", **option_values: Any) -> ImportedRun:
    """An :class:`ImportedRun` from vLLM ``RequestOutput`` objects (or dicts with the same fields).

    One document per ``CompletionOutput``; ``num_experts`` is required (vLLM does not record it)::

        run = from_request_outputs(llm.generate(prompts, params), num_experts=64)
        moelens.sources.write(run, "runs.duckdb")
    """
    options = options or ImportOptions(**option_values)
    return assemble("vllm", _requests(outputs, "vLLM"), options, dataset=dataset,
                    engine={"format": "RequestOutput.routed_experts"})


def read_vllm(paths: list[str | os.PathLike], options: ImportOptions) -> ImportedRun:
    """An :class:`ImportedRun` from moelens's JSONL dump(s) of vLLM outputs (see the module docstring)."""
    records: list[Any] = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise DataNotFoundError(f"no vLLM dump at {p}.")
        with open(p, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as error:
                    raise EngineFormatError(f"{p}:{n}: not JSON ({error.msg}); the file may be truncated.") from None
                if not isinstance(obj, dict):
                    raise EngineFormatError(f"{p}:{n}: expected one JSON object per line.")
                obj.setdefault("request_id", f"{p.name}:{n}")
                records.append(obj)
    return assemble("vllm", _requests(records, "vLLM dump"), options,
                    dataset=",".join(Path(p).name for p in paths),
                    engine={"format": "moelens vLLM JSONL", "files": [str(p) for p in paths]})


def dump_request_outputs(outputs: Iterable[Any], path: str | os.PathLike, *, append: bool = False) -> int:
    """Write vLLM ``RequestOutput`` objects as moelens's JSONL dump; returns the lines written.

    Run it where vLLM runs (``LLM.generate`` results, or the final output of each streamed
    request); import the file anywhere with ``moelens import vllm FILE --num-experts E``.
    """
    written = 0
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for out in outputs:
            samples = []
            for sample in _get(out, "outputs") or []:
                routes = _get(sample, "routed_experts")
                samples.append({"index": int(_get(sample, "index", 0)),
                                "token_ids": [int(x) for x in (_get(sample, "token_ids") or [])],
                                "routed_experts": None if routes is None else encode_array(routes)})
            prompt = _get(out, "prompt_token_ids")
            f.write(json.dumps({"request_id": str(_get(out, "request_id", written)),
                                "prompt_token_ids": None if prompt is None else [int(x) for x in prompt],
                                "outputs": samples}) + "\n")
            written += 1
    return written
