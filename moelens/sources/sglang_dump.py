"""SGLang expert-distribution recorder dumps (``.pt``) in ``stat``, ``per_pass`` and ``per_token`` modes.

Read in SGLang's ``python/sglang/srt/eplb/expert_distribution.py``:

* ``_StatAccumulator.dump``: rank 0 alone writes ``expert_distribution_recorder_{time}.pt`` =
  ``{"rank", "logical_count": int32 [buffer_steps, num_layers, num_logical_experts],
  "average_utilization_rate_over_window"}`` - physical counts already mapped to logical experts
  (``_convert_global_physical_count_to_logical_count``) and all-reduced over ranks; the circular
  buffer's unused steps are zeros.
* ``_DetailAccumulator.dump`` (``per_pass`` and ``per_token``): every rank writes
  ``expert_distribution_recorder_{time}_{rank}.pt`` = ``{"records": [...],
  "last_physical_to_logical_map": [num_layers, num_physical_experts]}``; a record holds
  ``forward_pass_id``, ``rank``, ``gatherer_key`` and ``global_physical_count``
  (``[num_layers, num_physical_experts]``, this rank's tokens, physical ids).
* ``_DetailSinglePassGatherer`` (``per_token``) adds ``input_ids``, ``positions``,
  ``extend_seq_lens`` (None in decode), ``forward_mode`` and ``topk_ids_of_layer`` =
  ``[num_layers, tokens, 8]`` int32: the top-k width is hard-coded to 8 ("DeepSeek V3 has this
  value"), unused slots and dense layers stay ``-1`` (``reset``), ids are **physical** (recorded
  after ``topk_ids_logical_to_physical``), a fused shared expert takes a slot ("TODO assert shared
  experts fusion is disabled, o/w data is wrong"), and there are no request ids, so each
  sequence segment of a pass becomes a document.
* ``num_layers`` is the model's decoder layer count (``ModelConfigForExpertLocation``); dense
  layers record nothing. ``ForwardMode`` (``model_executor/forward_batch_info.py``):
  1 extend, 2 decode, 3 mixed, 4 idle, 5 target_verify, 6 draft_extend.

``stat`` and ``per_pass`` dumps hold counts only and become stats-mode runs; ``per_token``
dumps become per-token runs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from moelens.errors import ConfigError, EngineFormatError
from moelens.sources.base import Doc, ImportedRun, ImportOptions, ImportSpec, logical_ids
from moelens.sources.ranks import check_ranks, choose_ranks, equal_arrays, expand_paths

__all__ = ["read_sglang_dump", "load_dump"]

FORWARD_MODES = {1: "extend", 2: "decode", 3: "mixed", 4: "idle", 5: "target_verify", 6: "draft_extend"}
_NAME = re.compile(r"expert_distribution_recorder_([0-9.]+?)(?:_(\d+))?\.pt$")


def load_dump(path: Path) -> dict[str, Any]:
    """One dump file (``torch.load`` with ``weights_only``: no code runs from the file)."""
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a bad file
        raise EngineFormatError(f"{path}: not a readable torch.save file ({type(error).__name__}); "
                                "truncated or not an SGLang dump.") from None
    if not isinstance(data, dict) or not ({"logical_count"} <= data.keys() or {"records"} <= data.keys()):
        raise EngineFormatError(f"{path}: not an SGLang expert-distribution dump (no logical_count or records).")
    return data


def _np(value: Any) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def read_sglang_dump(paths: list[str | os.PathLike], options: ImportOptions) -> ImportedRun:
    files = expand_paths(paths, "expert_distribution_recorder_*.pt", "SGLang expert-distribution")
    dumps = [(f, load_dump(f)) for f in files]
    modes = {("stat" if "logical_count" in d else "per_token" if d["records"] and "topk_ids_of_layer" in d["records"][0]
              else "per_pass") for _, d in dumps}
    if len(modes) > 1:
        raise EngineFormatError(f"the dumps mix recorder modes ({', '.join(sorted(modes))}); import each mode apart.")
    mode = modes.pop()
    dataset = ",".join(f.name for f in files)
    if mode == "stat":
        return _stat(dumps, options, dataset)
    return _detail(dumps, options, dataset, mode)


def _stat(dumps: list[tuple[Path, dict]], options: ImportOptions, dataset: str) -> ImportedRun:
    counts, docs = None, []
    for i, (f, d) in enumerate(dumps):
        c = _np(d["logical_count"])
        if c.ndim == 2:
            c = c[None]
        if c.ndim != 3 or not np.issubdtype(c.dtype, np.integer):
            raise EngineFormatError(f"{f}: logical_count must be an integer [steps, layers, experts] tensor, "
                                    f"got shape {list(c.shape)}.")
        c = c.astype(np.int64).sum(0)
        if counts is not None and c.shape != counts.shape:
            raise EngineFormatError(f"{f}: logical_count has {c.shape[0]} layers x {c.shape[1]} experts, the first "
                                    f"dump {counts.shape[0]} x {counts.shape[1]}.")
        if (c < 0).any():
            raise EngineFormatError(f"{f}: negative counts.")
        counts = c if counts is None else counts + c
        docs.append((f, c, {"mode": "stat", "rank": int(d.get("rank", 0)),
                            "average_utilization_rate_over_window": d.get("average_utilization_rate_over_window")}))
    return _counts_run(counts, docs, options, dataset, {"format": "expert_distribution_recorder stat"})


def _counts_run(counts: np.ndarray, docs: list[tuple[Path, np.ndarray, dict]], options: ImportOptions,
                dataset: str, engine: dict[str, Any], kind: str = "sglang-dump") -> ImportedRun:
    """A counts-only run from ``counts[num_layers, E]`` (dense layers all zero)."""
    num_layers, E = counts.shape
    if options.num_experts is not None and options.num_experts != E:
        raise EngineFormatError(f"the dump counts {E} experts per layer but --num-experts is {options.num_experts}.")
    if options.top_k is None:
        raise ConfigError("a counts-only dump records routed slots, not tokens; pass --top-k K (num_experts_per_tok).")
    k = options.top_k
    layers = (np.array(options.moe_layers, dtype=np.int64) if options.moe_layers is not None
              else np.flatnonzero(counts.sum(1) > 0))
    if not len(layers):
        raise EngineFormatError("every layer of the dump counts zero routed tokens; nothing to import.")
    if layers.max() >= num_layers:
        raise ConfigError(f"--moe-layers names layer {int(layers.max())} but the dump has {num_layers} layers.")
    rows = []
    for i, (f, c, meta) in enumerate(docs):
        rows.append({"doc_id": i, "domain": None, "language": None, "source": f.name,
                     "n_tokens": int(c[layers].sum(1).max() // k) if len(layers) else 0, "meta": meta})
    spec = ImportSpec(kind=kind, num_experts=E, top_k=k, layers=tuple(int(x) for x in layers), num_layers=num_layers,
                   dataset=dataset, model=options.model, token_ids=False, per_token=False,
                   engine={**engine, "options": options.described()})
    sel = counts[layers]
    return ImportedRun(spec, counts=sel, layer_tokens=sel.sum(1) // k, count_documents=rows)


def _p2l(dumps: list[tuple[Path, dict]], options: ImportOptions) -> np.ndarray:
    if options.physical_to_logical is not None:
        return options.physical_to_logical
    maps = [(f, _np(d["last_physical_to_logical_map"]).astype(np.int64)) for f, d in dumps]
    first = maps[0][1]
    for f, m in maps[1:]:
        if m.shape != first.shape or not np.array_equal(m, first):
            raise EngineFormatError(f"{f}: its last_physical_to_logical_map differs from {maps[0][0].name}'s; the "
                                    "placement changed between dumps (EPLB rebalanced) - import them apart.")
    return first


def _by_rank(dumps: list[tuple[Path, dict]], options: ImportOptions) -> dict[int, list[tuple[Path, dict]]]:
    by_rank: dict[int, list[tuple[float, Path, dict]]] = {}
    for f, d in dumps:
        m = _NAME.search(f.name)
        records = d["records"]
        rank = records[0]["rank"] if records else (int(m.group(2)) if m and m.group(2) else None)
        if rank is None:
            raise EngineFormatError(f"{f}: cannot tell the rank (no records and no _<rank> in the file name).")
        for r in records:
            if r.get("rank") != rank:
                raise EngineFormatError(f"{f}: records of rank {r.get('rank')} and {rank} in one file.")
        stamp = float(m.group(1)) if m else 0.0
        by_rank.setdefault(int(rank), []).append((stamp, f, d))
    check_ranks({r: len(v) for r, v in by_rank.items()}, options.world_size, "SGLang expert-distribution dump")
    return {r: [(f, d) for _, f, d in sorted(v, key=lambda x: (x[0], x[1].name))] for r, v in sorted(by_rank.items())}


def _detail(dumps: list[tuple[Path, dict]], options: ImportOptions, dataset: str, mode: str) -> ImportedRun:
    p2l = _p2l(dumps, options)
    E = options.num_experts if options.num_experts is not None else int(p2l.max()) + 1
    if p2l.min() < 0 or p2l.max() >= E:
        raise EngineFormatError(f"the physical-to-logical map names expert {int(p2l.max())} (or a negative one), "
                                f"outside [0, num_experts={E}).")
    by_rank = _by_rank(dumps, options)
    ranks = sorted(by_rank)
    key = "topk_ids_of_layer" if mode == "per_token" else "global_physical_count"

    def signature(r: int) -> list[np.ndarray]:
        return [_np(rec[key]) for _, d in by_rank[r] for rec in d["records"]]
    kept, rank_mode = choose_ranks(ranks, options.ranks, lambda a, b: equal_arrays(signature(a), signature(b)))
    engine = {"format": f"expert_distribution_recorder {mode}", "ranks": ranks, "rank_mode": rank_mode,
              "physical_experts": int(p2l.shape[1])}
    if mode == "per_pass":
        return _per_pass(by_rank, kept, p2l, E, options, dataset, engine)
    return _per_token(by_rank, kept, p2l, E, options, dataset, engine)


def _per_pass(by_rank: dict, kept: list[int], p2l: np.ndarray, E: int, options: ImportOptions, dataset: str,
              engine: dict) -> ImportedRun:
    L, P = p2l.shape
    total = np.zeros((L, E), np.int64)
    docs = []
    for r in kept:
        for f, d in by_rank[r]:
            counts = np.zeros((L, E), np.int64)
            for rec in d["records"]:
                c = _np(rec["global_physical_count"]).astype(np.int64)
                if c.shape != (L, P):
                    raise EngineFormatError(f"{f}: pass {rec.get('forward_pass_id')} counts {list(c.shape)}, the map "
                                            f"is {L} layers x {P} physical experts.")
                if (c < 0).any():
                    raise EngineFormatError(f"{f}: pass {rec.get('forward_pass_id')} has negative counts.")
                np.add.at(counts, (np.arange(L)[:, None], p2l), c)
            total += counts
            docs.append((f, counts, {"mode": "per_pass", "rank": r, "passes": len(d["records"])}))
    return _counts_run(total, docs, options, dataset, engine)


def _per_token(by_rank: dict, kept: list[int], p2l: np.ndarray, E: int, options: ImportOptions, dataset: str,
               engine: dict) -> ImportedRun:
    records = [(r, f, rec) for r in kept for f, d in by_rank[r] for rec in d["records"]]
    F = options.fused_shared_experts
    width = 0  # slots actually filled: top-k (+ fused shared experts) of the hard-coded 8
    for _, _, rec in records:
        t = _np(rec["topk_ids_of_layer"])
        if t.ndim != 3:
            raise EngineFormatError(f"pass {rec.get('forward_pass_id')}: topk_ids_of_layer must be "
                                    f"[layers, tokens, slots], got {list(t.shape)}.")
        used = np.flatnonzero((t >= 0).any(axis=(0, 1)))
        width = max(width, int(used[-1]) + 1 if len(used) else 0)
    if options.top_k is not None:
        want = options.top_k + F
        if width > want:
            raise EngineFormatError(f"the dump fills {width} slots per token but --top-k {options.top_k}"
                                    f"{f' + {F} fused' if F else ''} allows {want}.")
        width = want
    if width <= F:
        raise EngineFormatError("the per_token dump records no routed expert ids.")
    trivial = p2l.shape[1] == E and bool((p2l == np.arange(E)).all())  # no redundant experts: ids are logical
    mapped = options.replace(physical_to_logical=None if trivial else p2l)
    raw_docs: list[tuple[np.ndarray, np.ndarray, dict]] = []
    routed = None  # [num_layers] bool: the layer recorded an expert (SGLang leaves dense layers at -1)
    for r, f, rec in records:
        ids = np.asarray(rec["input_ids"], dtype=np.int64)
        n = len(ids)
        t = _np(rec["topk_ids_of_layer"])
        pass_id = rec.get("forward_pass_id")
        what = f"{f.name} pass {pass_id}"
        if t.shape[1] != n:
            raise EngineFormatError(f"{what}: topk_ids_of_layer has {t.shape[1]} tokens, input_ids {n}.")
        if t.shape[0] != p2l.shape[0]:
            raise EngineFormatError(f"{what}: {t.shape[0]} layers, the physical-to-logical map {p2l.shape[0]}.")
        tw = t[:, :, :width]
        fast = not (F or mapped.physical_to_logical is not None or mapped.sentinels) and tw.size
        layer_max = tw.max(axis=(1, 2)) if fast else None
        if fast and int(layer_max.max()) < E and int(tw.min()) >= -1:
            experts = tw  # logical ids already: a view, converted to int16 while written
        else:
            experts = logical_ids(tw, what=what, num_experts=E, options=options.replace(physical_to_logical=p2l),
                                  layer_axis=0)
            layer_max = experts.max(axis=(1, 2)) if experts.size else np.full(experts.shape[0], -1)
        routed = layer_max >= 0 if routed is None else routed | (layer_max >= 0)
        lens = rec.get("extend_seq_lens")
        lens = [1] * n if lens is None else [int(x) for x in lens]
        if sum(lens) != n:
            raise EngineFormatError(f"{what}: extend_seq_lens sum to {sum(lens)} but the pass has {n} tokens.")
        positions = rec.get("positions")
        phase = FORWARD_MODES.get(int(rec.get("forward_mode", 0) or 0), f"mode_{rec.get('forward_mode')}")
        start = 0
        for s, length in enumerate(lens):
            if length == 0:
                continue
            offset = positions[start] if positions is not None and start < len(positions) else None
            meta = {"rank": r, "phase": phase,  # labels; the rest is bookkeeping
                    "engine": {"forward_pass_id": pass_id, "segment": s,
                               "position_offset": int(offset) if isinstance(offset, (int, np.integer)) else None}}
            raw_docs.append((experts[:, start:start + length], ids[start:start + length], meta))
            start += length
    if not raw_docs:
        raise EngineFormatError("the per_token dump holds no tokens.")
    num_layers = p2l.shape[0]
    k = width - F
    if options.moe_layers is not None:
        layers = np.array(options.moe_layers, dtype=np.int64)
    else:
        layers = np.flatnonzero(routed)
        if not len(layers):
            raise EngineFormatError("no layer of the per_token dump records an expert id.")
    span = (slice(int(layers[0]), int(layers[-1]) + 1) if len(layers) and len(layers) == layers[-1] - layers[0] + 1
            else layers)
    docs = [Doc(i, e[span], ids, meta) for i, (e, ids, meta) in enumerate(raw_docs)]
    spec = ImportSpec(kind="sglang-dump", num_experts=E, top_k=k, layers=tuple(int(x) for x in layers),
                   num_layers=num_layers, dataset=dataset, model=options.model, token_ids=True,
                   engine={**engine, "options": options.described(),
                           "slots_recorded": width})
    return ImportedRun(spec, docs)


def load_physical_to_logical(path: str | os.PathLike) -> np.ndarray:
    """A ``[layers, physical]`` physical-to-logical map from a file: an SGLang dump (its
    ``last_physical_to_logical_map``), an ``--init-expert-location`` file (``.pt`` or ``.json`` with
    ``physical_to_logical_map``), or a ``.npy`` array."""
    p = Path(path)
    if not p.is_file():
        from moelens.errors import DataNotFoundError

        raise DataNotFoundError(f"no physical-to-logical map at {p}.")
    if p.suffix == ".npy":
        value: Any = np.load(p, allow_pickle=False)
    elif p.suffix == ".json":
        import json

        try:
            value = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise EngineFormatError(f"{p}: not JSON ({error.msg}).") from None
    else:
        import torch

        try:
            value = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001
            raise EngineFormatError(f"{p}: not a readable torch.save file ({type(error).__name__}).") from None
    if isinstance(value, dict):
        value = value.get("physical_to_logical_map", value.get("last_physical_to_logical_map"))
        if value is None:
            raise EngineFormatError(f"{p}: no physical_to_logical_map in the file.")
    m = _np(value)
    if m.ndim != 2 or not np.issubdtype(m.dtype, np.integer):
        raise EngineFormatError(f"{p}: the map must be an integer [layers, physical experts] array, got {list(m.shape)}.")
    return m.astype(np.int64)
