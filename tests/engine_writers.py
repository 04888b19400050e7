"""Fixture writers: routing written exactly as each engine writes it, following the engine's source.

Every writer names the engine file and function it follows. They take moelens-shaped routing
(per document: token ids and ``experts[L_moe, n, k]`` logical ids) and produce the engine's own
objects or files, including the awkward parts (dense-layer fill, the unrouted last token,
base64 int32, physical ids of redundant experts, the hard-coded 8 slots, fused shared experts,
per-rank files). The tests import them with the engines' formats as the oracle.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np


def engine_rows(experts: np.ndarray, moe_layers: list[int], num_hidden_layers: int, fill: int) -> np.ndarray:
    """``[n, num_hidden_layers, k]`` int32 as the capture buffers hold it: the buffer row of a dense
    layer is never written and keeps the buffer's fill (0: vLLM
    ``routed_experts_capturer.py`` ``RoutedExpertsCapturer.init_buffer`` zero-fills the shared
    buffer; -1 in builds that fill the device buffer with -1)."""
    L, n, k = experts.shape
    out = np.full((n, num_hidden_layers, k), fill, dtype=np.int32)
    for i, layer in enumerate(moe_layers):
        out[:, layer, :] = experts[i]
    return out


# --- vLLM ------------------------------------------------------------------------------------------


def vllm_request_output(request_id: str, token_ids: np.ndarray, experts: np.ndarray, moe_layers: list[int],
                        num_hidden_layers: int, *, prompt_len: int, last_token: int, fill: int = 0) -> Any:
    """A ``RequestOutput`` as ``vllm/outputs.py`` defines it: ``prompt_token_ids`` and one
    ``CompletionOutput`` whose ``routed_experts`` has one row per token but the last
    (``vllm/v1/core/sched/scheduler.py`` ``Scheduler._get_routed_experts``:
    ``num_tokens = request.num_tokens - 1``). ``token_ids``/``experts`` cover the routed tokens;
    ``last_token`` is the final sampled token, which never went through the model."""
    token_ids = [int(x) for x in token_ids]
    completion = SimpleNamespace(index=0, text="", token_ids=token_ids[prompt_len:] + [int(last_token)],
                                 cumulative_logprob=None, logprobs=None, finish_reason="length", stop_reason=None,
                                 routed_experts=engine_rows(experts, moe_layers, num_hidden_layers, fill))
    return SimpleNamespace(request_id=request_id, prompt=None, prompt_token_ids=token_ids[:prompt_len],
                           outputs=[completion], finished=True)


# --- SGLang responses ---------------------------------------------------------------------------------


def sglang_response(rid: str, prompt_ids: list[int], output_ids: list[int], rows: np.ndarray, *,
                    start_len: int = 0) -> dict[str, Any]:
    """A ``/generate`` response: ``meta_info["routed_experts"]`` is
    ``pybase64.b64encode(tensor.numpy().tobytes())`` of the int32 rows
    (``tokenizer_manager.py``, the meta_info assembly), covering
    ``[routed_experts_start_len, seqlen - 1)`` (``io_struct.py`` ``GenerateReqInput``)."""
    payload = base64.b64encode(np.ascontiguousarray(rows, dtype="<i4").tobytes()).decode("utf-8")
    meta = {"id": rid, "finish_reason": {"type": "length"}, "prompt_tokens": len(prompt_ids),
            "completion_tokens": len(output_ids), "cached_tokens": 0, "routed_experts": payload}
    if start_len:
        meta["routed_experts_start_len"] = start_len
    return {"text": "", "output_ids": list(output_ids), "meta_info": meta}


# --- SGLang expert-distribution recorder ------------------------------------------------------------


def physical_ids(logical: np.ndarray, p2l: np.ndarray, layer: int) -> np.ndarray:
    """Logical ids -> physical ids of replicas (``topk_ids_logical_to_physical``; replicas taken
    round-robin by token, as a dispatch over several replicas does); ``-1`` stays ``-1``."""
    out = np.full(logical.shape, -1, dtype=np.int64)
    for e in np.unique(logical[logical >= 0]):
        replicas = np.flatnonzero(p2l[layer] == e)
        where = np.argwhere(logical == e)
        out[tuple(where.T)] = replicas[where[:, 0] % len(replicas)]
    return out


def sglang_per_token_record(pass_id: int, rank: int, segments: list[tuple[np.ndarray, np.ndarray]], p2l: np.ndarray,
                            moe_layers: list[int], *, mode: int, fused_shared: int = 0, num_experts: int = 0) -> dict:
    """One record of ``expert_distribution.py`` ``_DetailSinglePassGatherer.collect`` +
    ``_DetailAccumulator.append``: ``topk_ids_of_layer`` is ``[num_layers, tokens, 8]`` int32
    (``_TOP_K_NUM = 8``), ``-1`` where nothing was written (``reset``), physical ids; with shared
    fusion the fused id ``num_experts + j`` follows the routed slots (``topk.py``,
    ``torch.cat([topk_ids, arange(N, N + num_fused_shared_experts)])``)."""
    import torch

    num_layers, P = p2l.shape
    ids = np.concatenate([t for t, _ in segments]) if segments else np.empty(0, np.int64)
    n = len(ids)
    topk = np.full((num_layers, n, 8), -1, dtype=np.int32)
    start = 0
    for tokens, experts in segments:  # experts [L_moe, len, k] logical
        m = len(tokens)
        for i, layer in enumerate(moe_layers):
            phys = physical_ids(experts[i], p2l, layer)
            k = phys.shape[1]
            topk[layer, start:start + m, :k] = phys
            for j in range(fused_shared):
                topk[layer, start:start + m, k + j] = num_experts + j
        start += m
    count = np.zeros((num_layers, P), dtype=np.int32)  # _convert_per_token_to_global_physical_count
    for layer in range(num_layers):
        valid = topk[layer][(topk[layer] >= 0) & (topk[layer] < P)]
        np.add.at(count[layer], valid, 1)
    positions = np.concatenate([np.arange(len(t)) for t, _ in segments]) if segments else np.empty(0, np.int64)
    return dict(forward_pass_id=pass_id, rank=rank, gatherer_key="primary",
                input_ids=[int(x) for x in ids], positions=[int(x) for x in positions],
                extend_seq_lens=None if mode == 2 else [len(t) for t, _ in segments], forward_mode=mode,
                topk_ids_of_layer=torch.from_numpy(topk), misc_objects=[],
                global_physical_count=torch.from_numpy(count))


def sglang_detail_dump(folder: Path, rank: int, records: list[dict], p2l: np.ndarray, stamp: float) -> Path:
    """``_DetailAccumulator.dump`` + ``_dump_to_file``: ``torch.save(dict(records=...,
    last_physical_to_logical_map=...), f"expert_distribution_recorder_{time}_{rank}.pt")``."""
    import torch

    path = folder / f"expert_distribution_recorder_{stamp}_{rank}.pt"
    torch.save(dict(records=records, last_physical_to_logical_map=torch.from_numpy(p2l.astype(np.int64))), path)
    return path


def sglang_per_pass_record(pass_id: int, rank: int, physical_count: np.ndarray) -> dict:
    """A ``per_pass`` record (``_SelectExpertsSinglePassGatherer.collect``: only the counts)."""
    import torch

    return dict(forward_pass_id=pass_id, rank=rank, gatherer_key="primary",
                global_physical_count=torch.from_numpy(physical_count.astype(np.int32)))


def sglang_stat_dump(folder: Path, logical_count: np.ndarray, stamp: float) -> Path:
    """``_StatAccumulator.dump``: rank 0 writes ``expert_distribution_recorder_{time}.pt`` =
    ``dict(rank, logical_count [buffer_steps, layers, experts], average_utilization_rate_over_window)``."""
    import torch

    path = folder / f"expert_distribution_recorder_{stamp}.pt"
    torch.save(dict(rank=0, logical_count=torch.from_numpy(logical_count.astype(np.int32)),
                    average_utilization_rate_over_window=None), path)
    return path


# --- Megatron-Core ------------------------------------------------------------------------------------


def megatron_records(rank: int, step: int, per_layer: dict[int, np.ndarray], *, routing_map: bool) -> list[dict]:
    """``router_trace.py`` ``RouterTracer._make_index_record`` + ``_flush_records_to_disk``, one per
    layer in forward order; with a boolean routing map the ids come from ``routing_map.nonzero()``
    (``_record``), i.e. ascending per token."""
    out = []
    for layer in sorted(per_layer):
        ids = per_layer[layer]
        if routing_map:
            ids = np.sort(ids, axis=1)
        out.append({"step": step, "stage": "pre_dispatch", "block": "decoder", "layer": layer, "rank": rank,
                    "num_tokens": int(ids.shape[0]), "topk": int(ids.shape[1]), "top_indices": ids.tolist()})
    return out


def megatron_trace_file(folder: Path, rank: int, records: list[dict]) -> Path:
    path = folder / f"router_trace_rank{rank}.jsonl"
    with open(path, "a") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    return path


# --- TensorRT-LLM -------------------------------------------------------------------------------------


def trtllm_statistic(folder: Path, per_rank: dict[int, dict[tuple[int, int], np.ndarray]], num_experts: int,
                     k: int) -> Path:
    """``expert_statistic.py`` ``ExpertStatistic._set_iter`` at ``stop``: rank 0 writes
    ``meta_info.json`` ``{"num_experts", "num_experts_per_token"}`` and every rank
    ``rank{rank}.safetensors`` with int64 ``bincount`` tensors keyed ``f"{iter}_{layer}"``."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta_info.json").write_text(json.dumps({"num_experts": num_experts, "num_experts_per_token": k}))
    for rank, stats in per_rank.items():
        save_file({f"{i}_{layer}": np.ascontiguousarray(v, dtype=np.int64) for (i, layer), v in stats.items()},
                  str(folder / f"rank{rank}.safetensors"))
    return folder


def trtllm_eplb_config(path: Path, assignments: dict[int, list[int]], num_slots: int) -> Path:
    """``generate_eplb_config.py`` ``save_eplb_config``: YAML with inline (flow) lists."""
    import yaml

    def inline(dumper, data):
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(list, inline)
    config = {"num_slots": num_slots, "initial_global_assignments": {int(k): [int(x) for x in v]
                                                                     for k, v in assignments.items()},
              "layer_updates_per_iter": 0}
    path.write_text(yaml.dump(config, Dumper=Dumper, width=float("inf")))
    return path
