"""Megatron-Core ``RouterTracer`` JSONL (one file per rank) into a run.

Read in Megatron-LM's ``megatron/core/transformer/moe/router_trace.py``:

* ``RouterTracer.__init__``: one file per rank, ``router_trace_rank{rank}.jsonl``;
  ``_flush_records_to_disk`` writes one JSON object per line.
* ``RouterTracer._make_index_record``: ``{"step", "stage": "pre_dispatch", "block", "layer",
  "rank", "num_tokens", "topk", "top_indices": [[...] x topk] x num_tokens}``, plus ``mtp_idx``
  for multi-token-prediction layers and ``hs_*`` / ``logit_*`` offsets into optional bf16 sidecars.
* ``_parse_router_module_name``: ``layer`` is ``N`` of ``decoder.layers.N`` - the index in the
  rank's own module list, so under pipeline parallelism it restarts at 0 on every stage;
  ``block`` is ``decoder`` or ``mtp``.
* ``RouterTracer._record``: when the router returns a boolean routing map the ids come from
  ``routing_map.nonzero()``, i.e. sorted ascending per token, not in score order (the slot order
  is lost); ``record_indices`` (the in-pipeline recorder) keeps the router's order. In training
  a step holds every micro-batch's forward, so a layer appears once per micro-batch; in
  inference a step is one forward pass. Rows are the router's flattened ``[seq, batch]`` tokens.

Each (rank, step, micro-batch) pass becomes a document, or one document per sequence with
``micro_batch_size`` > 1 (row ``r`` is sequence ``r % B``, position ``r // B``). Megatron
records no token ids. MTP records are left out (they route the next-token predictions).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from moelens.errors import ConfigError, EngineFormatError
from moelens.sources.base import Doc, ImportedRun, ImportOptions, ImportSpec, logical_ids
from moelens.sources.ranks import check_ranks, choose_ranks, equal_arrays, expand_paths, rank_of

__all__ = ["read_megatron"]

_RANK_RE = r"router_trace_rank(\d+)\.jsonl$"


def _read_file(path: Path) -> tuple[int | None, list[dict[str, Any]], int]:
    """``(rank, decoder records, mtp records skipped)`` of one trace file."""
    records, mtp, ranks = [], 0, set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as error:
                raise EngineFormatError(f"{path}:{n}: not JSON ({error.msg}); the trace may be truncated.") from None
            missing = [k for k in ("step", "layer", "rank", "num_tokens", "topk", "top_indices") if k not in rec]
            if missing:
                raise EngineFormatError(f"{path}:{n}: not a RouterTracer record (no {missing[0]}).")
            ranks.add(int(rec["rank"]))
            if rec.get("block", "decoder") == "mtp" or "mtp_idx" in rec:
                mtp += 1
                continue
            rec["_line"] = n
            records.append(rec)
    if len(ranks) > 1:
        raise EngineFormatError(f"{path}: records of ranks {sorted(ranks)} in one file.")
    rank = ranks.pop() if ranks else rank_of(path, _RANK_RE)
    named = rank_of(path, _RANK_RE)
    if named is not None and rank is not None and named != rank:
        raise EngineFormatError(f"{path}: named rank {named} but its records say rank {rank}.")
    return rank, records, mtp


def _passes(path: Path, records: list[dict[str, Any]], E: int, options: ImportOptions):
    """``[(step, micro, {layer: ids[L=1, n, k]})]`` of one rank, checked for consistent layers."""
    by_step: dict[int, list[dict[str, Any]]] = {}
    for rec in records:
        by_step.setdefault(int(rec["step"]), []).append(rec)
    out, layer_set = [], None
    for step in sorted(by_step):
        seen: dict[int, int] = {}
        passes: list[dict[int, np.ndarray]] = []
        for rec in by_step[step]:
            layer = int(rec["layer"])
            p = seen.get(layer, 0)
            seen[layer] = p + 1
            what = f"{path.name}:{rec['_line']} (step {step}, layer {layer})"
            idx = np.asarray(rec["top_indices"])
            if idx.dtype == object or (idx.size and idx.ndim != 2):
                raise EngineFormatError(f"{what}: top_indices rows differ in length.")
            idx = idx.reshape(len(rec["top_indices"]), -1) if idx.size else np.empty((0, int(rec["topk"])), np.int64)
            if idx.shape != (int(rec["num_tokens"]), int(rec["topk"])):
                raise EngineFormatError(f"{what}: top_indices is {list(idx.shape)} but num_tokens={rec['num_tokens']}, "
                                        f"topk={rec['topk']}.")
            if len(passes) <= p:
                passes.append({})
            passes[p][layer] = logical_ids(idx[:, None, :], what=what, num_experts=E, options=options)
        counts = set(seen.values())
        if len(counts) > 1:
            few = min(seen, key=seen.get)
            many = max(seen, key=seen.get)
            raise EngineFormatError(f"{path.name} step {step}: layer {many} appears {seen[many]} times but layer {few} "
                                    f"{seen[few]} times; mixed layer counts (a truncated or merged trace).")
        for p, layers in enumerate(passes):
            sizes = {a.shape[1] for a in layers.values()}
            if len(sizes) > 1:
                raise EngineFormatError(f"{path.name} step {step} micro-batch {p}: layers routed different numbers "
                                        f"of tokens ({sorted(sizes)}).")
            if layer_set is None:
                layer_set = set(layers)
            elif set(layers) != layer_set:
                raise EngineFormatError(f"{path.name} step {step}: layers {sorted(layers)} but earlier steps had "
                                        f"{sorted(layer_set)}; mixed layer counts.")
            out.append((step, p, layers))
    return out


def read_megatron(paths: list[str | os.PathLike], options: ImportOptions) -> ImportedRun:
    if options.num_experts is None:
        raise ConfigError("RouterTracer records do not hold the number of experts; pass --num-experts E "
                          "(--num-experts of the Megatron run).")
    E = options.num_experts
    files = expand_paths(paths, "router_trace_rank*.jsonl", "Megatron RouterTracer")
    per_rank: dict[int, tuple[Path, list]] = {}
    mtp = 0
    for f in files:
        rank, records, skipped = _read_file(f)
        mtp += skipped
        if rank is None:
            raise EngineFormatError(f"{f}: no records and no rank in the file name.")
        if rank in per_rank:
            raise EngineFormatError(f"two trace files of rank {rank}: {per_rank[rank][0].name} and {f.name}.")
        per_rank[rank] = (f, _passes(f, records, E, options))
    ranks = check_ranks({r: 1 for r in per_rank}, options.world_size, "Megatron RouterTracer")

    def flat(r: int) -> list[np.ndarray]:
        return [a for _, _, layers in per_rank[r][1] for _, a in sorted(layers.items())]
    kept, rank_mode = choose_ranks(ranks, options.ranks, lambda a, b: equal_arrays(flat(a), flat(b)))
    ks = {a.shape[2] for r in kept for _, _, layers in per_rank[r][1] for a in layers.values()}
    if not ks:
        raise EngineFormatError("the traces hold no decoder router records.")
    if len(ks) > 1:
        raise EngineFormatError(f"the traces record different top-k values ({sorted(ks)}).")
    k = ks.pop()
    if options.top_k is not None and options.top_k != k:
        raise EngineFormatError(f"the traces record top-{k} but --top-k is {options.top_k}.")
    layers = sorted({layer for r in kept for _, _, ls in per_rank[r][1] for layer in ls})
    if options.moe_layers is not None:
        unknown = sorted(set(options.moe_layers) - set(layers))
        if unknown:
            raise ConfigError(f"--moe-layers names layer {unknown[0]}, which the traces never record.")
        layers = list(options.moe_layers)
    index = {layer: i for i, layer in enumerate(layers)}
    B = options.micro_batch_size
    docs = []
    for r in kept:
        for step, micro, by_layer in per_rank[r][1]:
            n = next(iter(by_layer.values())).shape[1]
            if n % B:
                raise EngineFormatError(f"rank {r} step {step}: {n} tokens are not a multiple of "
                                        f"--micro-batch-size {B}.")
            full = np.full((len(layers), n, k), -1, np.int16)
            for layer, a in by_layer.items():
                if layer in index:
                    full[index[layer]] = a[0]
            for b in range(B):
                docs.append(Doc(len(docs), np.ascontiguousarray(full[:, b::B]), None,
                                {"rank": r, "engine": {"step": step, "micro_batch": micro, "sequence": b}}))
    spec = ImportSpec(kind="megatron", num_experts=E, top_k=k, layers=tuple(layers), num_layers=max(layers) + 1,
                   dataset=",".join(f.name for f in files), model=options.model, token_ids=False,
                   engine={"format": "RouterTracer JSONL", "ranks": ranks, "rank_mode": rank_mode,
                           "mtp_records_skipped": mtp, "slot_order": "as recorded (ascending expert id when the "
                           "router returned a routing map)", "layer_index": "module index within the rank's stage",
                           "options": options.described(), "files": [str(f) for f in files]})
    return ImportedRun(spec, docs)
