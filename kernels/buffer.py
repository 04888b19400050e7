"""One batch's routing records for every MoE layer, kept on the device and copied out once.

This module owns :class:`RecordBuffer` (the preallocated device buffer that every layer's
:func:`route_records` call writes into) and :class:`HostRecords` (the handle of its one
asynchronous device-to-host copy per batch). Nothing here synchronises with the host except
:meth:`HostRecords.wait`.

Typical use from a capture hook::

    buf = RecordBuffer(num_layers=16, max_tokens=8192, k=8, num_experts=64, device="cuda")
    for batch in batches:
        buf.reset()                                   # sentinels in, counts zeroed
        model(**batch)                                # hooks call buf.write(slot, logits, ids, w, valid=mask)
        pending = buf.to_host_async(num_tokens=T)     # one copy on a side stream
        ...                                           # next batch may start at once
        arrays = pending.wait()                       # dict of numpy arrays
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from moelens.errors import ConfigError
from moelens.kernels.backend import choose_backend
from moelens.kernels.records_torch import FIELDS, RouteRecords, route_records_torch

__all__ = ["HostRecords", "RecordBuffer", "record_function"]

logger = logging.getLogger(__name__)


def record_function(backend: str) -> Callable[..., RouteRecords]:
    """``route_records`` for a resolved backend name (imports triton only for "triton")."""
    if backend == "triton":
        from moelens.kernels.records_triton import route_records

        return route_records
    return route_records_torch


@dataclass(frozen=True)
class HostRecords:
    """Host copies of a :class:`RecordBuffer`, possibly still in flight.

    Arrays (``L`` layers, ``N`` rows copied): ``ids [L, N, k]`` int16 (-1: no expert),
    ``weights [L, N, k]``, ``entropy``/``margin``/``lse [L, N]`` float32, ``counts [L, E]``.
    """

    tensors: dict[str, torch.Tensor]
    done: Any = None  # torch.cuda.Event on CUDA, None when the copy already happened

    def ready(self) -> bool:
        """True when :meth:`wait` will not block."""
        return self.done is None or bool(self.done.query())

    def wait(self) -> dict[str, np.ndarray]:
        """Block until the copy has landed; the arrays share memory with the host tensors."""
        if self.done is not None:
            self.done.synchronize()
        return {name: tensor.numpy() for name, tensor in self.tensors.items()}


class RecordBuffer:
    """Preallocated ``[num_layers, max_tokens, k]`` records plus per-layer counts ``[L, E]``.

    ``layer`` arguments are slots in ``[0, num_layers)``; mapping model layers to slots is the
    caller's. Rows never written keep the sentinels of :meth:`RouteRecords.empty` (id -1).
    ``backend`` is ``auto|torch|triton`` (see :func:`moelens.kernels.choose_backend`); the
    resolved name is :attr:`backend`.
    """

    def __init__(
        self,
        num_layers: int,
        max_tokens: int,
        k: int,
        num_experts: int,
        *,
        device: Any = "cpu",
        weight_dtype: torch.dtype = torch.float32,
        count_dtype: torch.dtype = torch.int64,
        backend: str = "auto",
    ) -> None:
        for name, value in (("num_layers", num_layers), ("max_tokens", max_tokens), ("k", k),
                            ("num_experts", num_experts)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a positive int.")
        if k > num_experts:
            raise ConfigError(f"k={k} exceeds num_experts={num_experts}.")
        if weight_dtype not in (torch.float32, torch.float16):
            raise ConfigError(f"weight_dtype={weight_dtype} must be torch.float32 or torch.float16.")
        if count_dtype not in (torch.int32, torch.int64):
            raise ConfigError(f"count_dtype={count_dtype} must be torch.int32 or torch.int64.")
        self.device = torch.device(device)
        self.backend = choose_backend(backend, self.device)
        logger.info("%s: kernel backend %s (requested %s, device %s)", type(self).__name__, self.backend, backend,
                    self.device)  # fmt: skip
        self.num_layers, self.max_tokens, self.k, self.num_experts = num_layers, max_tokens, k, num_experts
        self._record = record_function(self.backend)
        shape = (num_layers, max_tokens)
        self.records = RouteRecords(
            ids=torch.full((*shape, k), -1, dtype=torch.int16, device=self.device),
            weights=torch.zeros((*shape, k), dtype=weight_dtype, device=self.device),
            entropy=torch.full(shape, float("nan"), dtype=torch.float32, device=self.device),
            margin=torch.full(shape, float("nan"), dtype=torch.float32, device=self.device),
            lse=torch.full(shape, float("nan"), dtype=torch.float32, device=self.device),
        )
        self.counts = torch.zeros((num_layers, num_experts), dtype=count_dtype, device=self.device)
        self._side_stream = None
        self._copy_done = None

    def layer(self, layer: int) -> RouteRecords:
        """Views of one layer slot's rows."""
        self._check_layer(layer)
        r = self.records
        return RouteRecords(r.ids[layer], r.weights[layer], r.entropy[layer], r.margin[layer], r.lse[layer])

    def write(
        self,
        layer: int,
        logits: torch.Tensor,
        topk_ids: torch.Tensor | None = None,
        topk_weights: torch.Tensor | None = None,
        *,
        valid: torch.Tensor | None = None,
        row_offset: int = 0,
    ) -> None:
        """Record one router call of layer slot ``layer`` at rows ``[row_offset, row_offset+T)``.

        Arguments as in :func:`moelens.kernels.route_records_torch`; the layer's counts
        accumulate. No host synchronisation.
        """
        self._check_layer(layer)
        if logits.shape[-1] != self.num_experts:
            raise ConfigError(f"Logits have {logits.shape[-1]} experts, the buffer {self.num_experts}.")
        self._fence()
        self._record(
            logits, topk_ids, topk_weights, out=self.layer(layer), row_offset=row_offset,
            counts=self.counts[layer], valid=valid,
        )  # fmt: skip

    def reset(self) -> None:
        """Refill the sentinels and zero the counts before the next batch (device-side)."""
        self._fence()
        self.records.fill_()
        self.counts.zero_()

    def to_host_async(self, num_tokens: int | None = None) -> HostRecords:
        """Copy rows ``[0, num_tokens)`` of every layer (all rows by default) and the counts.

        On CUDA the copy runs on a side stream into pinned memory once the work queued so far
        on the current stream is done, and returns at once; later writes and resets wait for
        it on the device. On CPU it copies immediately.
        """
        rows = self.max_tokens if num_tokens is None else num_tokens
        if isinstance(rows, bool) or not isinstance(rows, int) or not 0 <= rows <= self.max_tokens:
            raise ConfigError(f"num_tokens={num_tokens!r} must be an int in [0, {self.max_tokens}].")
        sources = {name: getattr(self.records, name)[:, :rows] for name in FIELDS}
        sources["counts"] = self.counts
        if self.device.type != "cuda":
            return HostRecords({name: t.clone() for name, t in sources.items()})
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(device=self.device)
        queued = torch.cuda.Event()
        queued.record(torch.cuda.current_stream(self.device))
        host = {}
        with torch.cuda.stream(self._side_stream):
            self._side_stream.wait_event(queued)
            for name, tensor in sources.items():
                host[name] = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
                host[name].copy_(tensor, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self._side_stream)
        self._copy_done = done
        return HostRecords(host, done)

    def _fence(self) -> None:
        # make the current stream wait (on the device) for an outstanding copy of this buffer
        if self._copy_done is not None:
            torch.cuda.current_stream(self.device).wait_event(self._copy_done)
            self._copy_done = None

    def _check_layer(self, layer: int) -> None:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.num_layers:
            raise ConfigError(f"layer={layer!r} is not a slot in [0, {self.num_layers}).")
