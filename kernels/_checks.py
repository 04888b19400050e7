"""Argument checks shared by each kernel and its torch reference, so both fail alike.

Everything here reads only shapes, dtypes and devices (host metadata): no check ever touches
tensor values, so validation never synchronises with the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from moelens.errors import ConfigError

LOGIT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
INDEX_DTYPES = (torch.int64, torch.int32, torch.int16)
COUNT_DTYPES = (torch.int32, torch.int64)
MAX_EXPERTS = 32767  # ids are stored as int16


@dataclass(frozen=True)
class RecordCall:
    """The resolved sizes of one ``route_records`` call."""

    rows: int
    experts: int
    k: int
    out: Any  # RouteRecords | None


def check_logits(logits: Any) -> tuple[int, int]:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ConfigError("Router logits must be a 2-D tensor [tokens, experts].")
    if logits.dtype not in LOGIT_DTYPES:
        raise ConfigError(
            f"Router logits have dtype {logits.dtype}.", hint="Pass float32, bfloat16 or float16."
        )
    if not 1 <= logits.shape[1] <= MAX_EXPERTS:
        raise ConfigError(f"Router logits have {logits.shape[1]} experts; records hold 1 to {MAX_EXPERTS}.")
    return logits.shape[0], logits.shape[1]


def check_k(k: Any, experts: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= experts:
        raise ConfigError(f"k={k!r} is not a number of experts in [1, {experts}].")
    return k


def _same_device(name: str, tensor: torch.Tensor, logits: torch.Tensor) -> None:
    if tensor.device != logits.device:
        raise ConfigError(f"{name} is on {tensor.device} but the logits are on {logits.device}.")


def check_valid(valid: Any, rows: int, logits: torch.Tensor) -> None:
    if valid is None:
        return
    if not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool or valid.shape != (rows,):
        raise ConfigError(f"valid must be a bool tensor of shape [{rows}].")
    _same_device("valid", valid, logits)


def check_record_call(
    logits, topk_ids, topk_weights, k, out, row_offset, counts, valid, weight_dtype
) -> RecordCall:
    rows, experts = check_logits(logits)
    if (topk_ids is None) != (topk_weights is None):
        raise ConfigError("Pass topk_ids and topk_weights together, or neither to recompute them.")
    if topk_ids is not None:
        if topk_ids.dim() != 2 or topk_ids.shape[0] != rows or topk_ids.dtype not in INDEX_DTYPES:
            raise ConfigError(f"topk_ids must be an integer tensor [{rows}, k].")
        if topk_weights.shape != topk_ids.shape or not topk_weights.is_floating_point():
            raise ConfigError(f"topk_weights must be a float tensor of shape {tuple(topk_ids.shape)}.")
        _same_device("topk_ids", topk_ids, logits)
        _same_device("topk_weights", topk_weights, logits)
        if k is not None and k != topk_ids.shape[1]:
            raise ConfigError(f"k={k} disagrees with topk_ids, which has {topk_ids.shape[1]} slots.")
        k = topk_ids.shape[1]
        if k < 1:
            raise ConfigError("topk_ids has no slot.")
    if out is not None:
        if k is not None and k != out.k:
            raise ConfigError(f"The record buffer has {out.k} slots per token but k={k}.")
        k = out.k
        _same_device("The record buffer", out.ids, logits)
        if out.ids.dtype != torch.int16 or out.weights.dtype not in (torch.float32, torch.float16):
            raise ConfigError("The record buffer needs int16 ids and float32 or float16 weights.")
        if isinstance(row_offset, bool) or not isinstance(row_offset, int) or row_offset < 0:
            raise ConfigError(f"row_offset={row_offset!r} must be a non-negative int.")
        if row_offset + rows > out.num_rows:
            raise ConfigError(
                f"{rows} rows at row_offset={row_offset} overflow a buffer of {out.num_rows} rows.",
                hint="Allocate the buffer for the largest batch (max_tokens).",
            )
    else:
        if row_offset != 0:
            raise ConfigError("row_offset needs an out buffer.")
        if weight_dtype not in (torch.float32, torch.float16):
            raise ConfigError(f"weight_dtype={weight_dtype} must be torch.float32 or torch.float16.")
    if k is None:
        raise ConfigError("Pass k (or topk_ids, or an out buffer) to say how many experts to record.")
    if topk_ids is None:
        check_k(k, experts)
    if counts is not None:
        if counts.shape != (experts,) or counts.dtype not in COUNT_DTYPES:
            raise ConfigError(f"counts must be an int32 or int64 tensor of shape [{experts}].")
        _same_device("counts", counts, logits)
    check_valid(valid, rows, logits)
    return RecordCall(rows=rows, experts=experts, k=k, out=out)
