"""TensorRT-LLM expert statistics (``EXPERT_STATISTIC_PATH``) into a counts-only run.

Read in TensorRT-LLM's source:

* ``tensorrt_llm/_torch/expert_statistic.py`` ``ExpertStatistic``: enabled by
  ``EXPERT_STATISTIC_ITER_RANGE=start-stop``; for every iteration in range and every MoE layer
  it adds ``torch.bincount(token_selected_experts.flatten(), minlength=expert_count)`` under the
  key ``f"{iter}_{layer}"``; at iteration ``stop`` every rank writes ``rank{rank}.safetensors``
  and rank 0 ``meta_info.json`` = ``{"num_experts", "num_experts_per_token"}``.
* The call sites (``tensorrt_llm/_torch/modules/fused_moe/*``, ``maybe_add_info(self.num_slots,
  token_selected_slots)``): "If load balancer is disabled, the statistics are collected from
  expert IDs. If load balancer is enabled, the statistics are collected from expert slot IDs" -
  then ``num_experts`` in ``meta_info.json`` is the number of slots, and the EPLB config that
  placed experts on slots maps them back (``--placement``). ``layer`` is the decoder layer index.
* ``examples/wide_ep/ep_load_balancer/utils.py`` ``load_expert_statistic``: sums each key over
  the rank files (skipping ``*_raw.safetensors``) and checks that the iterations are contiguous
  and every (iteration, layer) is present; ``generate_eplb_config.py`` writes the YAML
  ``{num_slots, initial_global_assignments: {layer: [expert of each slot]}, layer_updates_per_iter}``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from moelens.errors import ConfigError, DataNotFoundError, EngineFormatError
from moelens.sources.base import ImportedRun, ImportOptions
from moelens.sources.ranks import check_ranks, choose_ranks, rank_of
from moelens.sources.sglang_dump import _counts_run

__all__ = ["read_trtllm", "read_eplb_config"]


def read_eplb_config(path: str | os.PathLike) -> dict[int, np.ndarray]:
    """``{layer: expert id of each slot}`` from a TensorRT-LLM EPLB config (YAML or JSON)."""
    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(f"no EPLB config at {p}.")
    text = p.read_text(encoding="utf-8")
    try:
        import yaml

        data = yaml.safe_load(text)
    except ImportError:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise ConfigError(f"reading {p} needs PyYAML (pip install pyyaml).") from None
    except Exception as error:  # noqa: BLE001 - yaml's error types
        raise EngineFormatError(f"{p}: not YAML ({type(error).__name__}).") from None
    assign = data.get("initial_global_assignments") if isinstance(data, dict) else None
    if not isinstance(assign, dict) or not assign:
        raise EngineFormatError(f"{p}: no initial_global_assignments (a static TensorRT-LLM EPLB config has them).")
    out = {int(layer): np.asarray(slots, dtype=np.int64) for layer, slots in assign.items()}
    sizes = {len(v) for v in out.values()}
    if len(sizes) > 1 or (data.get("num_slots") is not None and sizes != {int(data["num_slots"])}):
        raise EngineFormatError(f"{p}: layers assign {sorted(sizes)} slots, num_slots is {data.get('num_slots')}.")
    return out


def _load(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as error:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise EngineFormatError(f"{path}: not a readable safetensors file ({type(error).__name__}); truncated?") from None


def read_trtllm(paths: list[str | os.PathLike], options: ImportOptions) -> ImportedRun:
    files: list[Path] = []
    meta_path = None
    for path in paths:
        p = Path(path)
        if p.is_dir():
            files += sorted(f for f in p.glob("rank*.safetensors") if not f.name.endswith("_raw.safetensors"))
            meta_path = meta_path or (p / "meta_info.json")
        elif p.is_file() and p.name == "meta_info.json":
            meta_path = p
        elif p.is_file():
            files.append(p)
            meta_path = meta_path or (p.parent / "meta_info.json")
        else:
            raise DataNotFoundError(f"no TensorRT-LLM expert statistic file or directory at {p}.")
    if not files:
        raise DataNotFoundError("no rank*.safetensors expert statistic files given.")
    if meta_path is None or not meta_path.is_file():
        raise DataNotFoundError(f"no meta_info.json next to {files[0]} (rank 0 writes it).")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        slots, k = int(meta["num_experts"]), int(meta["num_experts_per_token"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise EngineFormatError(f"{meta_path}: expected {{\"num_experts\", \"num_experts_per_token\"}}.") from None
    by_rank: dict[int, dict[tuple[int, int], np.ndarray]] = {}
    for f in files:
        r = rank_of(f, r"^rank(\d+)\.safetensors$")
        if r is None:
            raise EngineFormatError(f"{f}: not named rank<N>.safetensors.")
        stats = {}
        for key, value in _load(f).items():
            try:
                it, layer = (int(x) for x in key.split("_"))
            except ValueError:
                raise EngineFormatError(f"{f}: key {key!r} is not <iteration>_<layer>.") from None
            v = np.asarray(value)
            if v.shape != (slots,) or not np.issubdtype(v.dtype, np.integer) or (v < 0).any():
                raise EngineFormatError(f"{f}: {key} holds {list(v.shape)} {v.dtype}; expected {slots} non-negative "
                                        "integer counts (meta_info num_experts).")
            stats[(it, layer)] = v.astype(np.int64)
        by_rank[r] = stats
    ranks = check_ranks({r: 1 for r in by_rank}, options.world_size, "TensorRT-LLM expert statistic")
    keys = set(by_rank[ranks[0]])
    for r in ranks[1:]:
        if set(by_rank[r]) != keys:
            missing = sorted(keys ^ set(by_rank[r]))[0]
            raise EngineFormatError(f"rank {r} and rank {ranks[0]} record different (iteration, layer) keys, "
                                    f"e.g. {missing[0]}_{missing[1]}.")
    iters = sorted({i for i, _ in keys})
    layers = sorted({layer for _, layer in keys})
    if not keys or iters[-1] + 1 - iters[0] != len(iters) or len(keys) != len(iters) * len(layers):
        raise EngineFormatError("the statistic does not hold every layer of every iteration in one contiguous range "
                                "(a truncated dump?).")

    def same(a: int, b: int) -> bool:
        return all(np.array_equal(by_rank[a][key], by_rank[b][key]) for key in keys)
    kept, rank_mode = choose_ranks(ranks, options.ranks, same)
    placement = read_eplb_config(options.placement) if options.placement else None
    if placement is not None:
        E = options.num_experts if options.num_experts is not None else int(max(a.max() for a in placement.values())) + 1
        for layer in layers:
            if layer not in placement:
                raise EngineFormatError(f"the EPLB config has no assignment for layer {layer}.")
            if len(placement[layer]) != slots:
                raise EngineFormatError(f"the EPLB config has {len(placement[layer])} slots per layer, the "
                                        f"statistic {slots}.")
            if placement[layer].min() < 0 or placement[layer].max() >= E:
                raise EngineFormatError(f"the EPLB config assigns expert {int(placement[layer].max())} "
                                        f">= num_experts={E}.")
    else:
        E = slots
        if options.num_experts is not None and options.num_experts != slots:
            raise EngineFormatError(f"the statistic counts {slots} expert slots but the model has "
                                    f"{options.num_experts} experts: the load balancer was on; pass --placement "
                                    "with its EPLB config to map slots to experts.")
    num_layers = layers[-1] + 1
    total = np.zeros((num_layers, E), np.int64)
    docs = []
    for r in kept:
        c = np.zeros((num_layers, E), np.int64)
        for (it, layer), v in by_rank[r].items():
            c[layer] += np.bincount(placement[layer], weights=v, minlength=E).astype(np.int64) if placement else v
        total += c
        docs.append((files[[rank_of(f, r"^rank(\d+)") for f in files].index(r)], c,
                     {"rank": r, "iterations": [iters[0], iters[-1] + 1]}))
    engine: dict[str, Any] = {"format": "EXPERT_STATISTIC safetensors", "ranks": ranks, "rank_mode": rank_mode,
                              "slots": slots, "iterations": [iters[0], iters[-1] + 1],
                              "counted": "expert slots mapped by the EPLB config" if placement else "expert ids"}
    opts = options.replace(top_k=k, moe_layers=tuple(layers) if options.moe_layers is None else options.moe_layers)
    if options.top_k is not None and options.top_k != k:
        raise EngineFormatError(f"meta_info says {k} experts per token but --top-k is {options.top_k}.")
    return _counts_run(total, docs, opts.replace(num_experts=E), ",".join(f.name for f in files), engine, kind="trtllm")
