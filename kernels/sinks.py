"""Routing sinks that reduce on the device: compact per-token records, or run-wide aggregates.

Both receive the hooks' events (:mod:`moelens.hooks.events`) and never synchronise with the host
per layer. :class:`RecordSink` writes every router call into a :class:`RecordBuffer` (ids,
weights, entropy, margin, logsumexp) and copies the batch out once. :class:`StatsSink` keeps only
bounded aggregates in :class:`StatsAccumulator` tables, optionally split by per-token labels.

``slots`` maps the plan's site numbers to buffer layer slots (sites not in it are ignored);
``logits_transform`` adapts routers whose "logits" are something else (probabilities).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from moelens.errors import CaptureError
from moelens.hooks.events import RouterEvent, StepContext
from moelens.kernels.buffer import HostRecords, RecordBuffer
from moelens.kernels.stats import StatsAccumulator

__all__ = ["RecordSink", "StatsSink"]

Transform = Callable[[torch.Tensor], torch.Tensor]


def _logits(event: RouterEvent, width: int, transform: Transform | None) -> torch.Tensor | None:
    if event.logits is None:
        return None
    logits = event.logits.reshape(-1, event.logits.shape[-1])
    if logits.shape[-1] != width:
        raise CaptureError(f"router logits have {logits.shape[-1]} columns, the device buffer {width};"
                           " use --capture torch for this family.")
    return transform(logits) if transform is not None else logits


class RecordSink:
    """Routes mode on the device: one :class:`RecordBuffer` row block per router site and batch."""

    def __init__(self, slots: Mapping[int, int], *, k: int, num_experts: int, max_tokens: int, device: Any,
                 backend: str = "auto", logits_transform: Transform | None = None) -> None:
        self.slots = dict(slots)
        self.buffer = RecordBuffer(len(self.slots), max_tokens, k, num_experts, device=device, backend=backend)
        self.num_experts, self.transform = num_experts, logits_transform
        self.steps: list[StepContext] = []
        self._valid: torch.Tensor | None = None
        self._rows = 0

    @property
    def backend(self) -> str:
        return self.buffer.backend

    def begin_batch(self) -> None:
        self.buffer.reset()
        self.steps = []

    def on_step(self, ctx: StepContext) -> None:
        self.steps.append(ctx)
        self._valid, self._rows = ctx.valid, ctx.batch * ctx.seq

    def on_route(self, event: RouterEvent) -> None:
        slot = self.slots.get(event.site)
        if slot is None:
            return
        logits = _logits(event, self.num_experts, self.transform)
        if logits is None:
            raise CaptureError("the device record path needs router logits; use --capture torch for this family.")
        self.buffer.write(slot, logits, event.experts, event.weights, valid=self._valid)

    def finish_batch(self) -> HostRecords:
        """Start the batch's one asynchronous device-to-host copy; ``.wait()`` gives numpy arrays."""
        return self.buffer.to_host_async(num_tokens=self._rows)


class StatsSink:
    """Stats mode: bounded on-device aggregates, split by any number of per-token label kinds.

    One accumulator holds the run-wide tables (counts, co-activation, entropy) once; its label axis
    concatenates the label kinds - kind ``i`` owns rows ``offset_i .. offset_i + size_i``, the last
    of them for tokens without a value of that kind - so each kind adds only its label tables
    (``update(..., main=False)``), never a second co-activation table.
    """

    def __init__(self, slots: Mapping[int, int], *, num_experts: int, k: int, device: Any,
                 label_sizes: Mapping[str, int] | None = None, entropy_bins: int = 32, backend: str = "auto",
                 logits_transform: Transform | None = None) -> None:
        self.slots = dict(slots)
        self.k, self.num_experts, self.transform = k, num_experts, logits_transform
        self.label_sizes = dict(label_sizes or {})
        self.offsets, total = {}, 0
        for kind, size in self.label_sizes.items():
            self.offsets[kind], total = total, total + size + 1
        self.accumulator = StatsAccumulator(len(self.slots), num_experts, num_labels=total, entropy_bins=entropy_bins,
                                            device=device, backend=backend)
        self._labels: dict[str, torch.Tensor] = {}
        self._valid: torch.Tensor | None = None

    @property
    def backend(self) -> str:
        return self.accumulator.backend

    def set_labels(self, labels: Mapping[str, torch.Tensor]) -> None:
        """Per-row label ids (``[batch * seq]``, -1 for none) of the next forward, by label kind."""
        out = {}
        for kind, ids in labels.items():
            size, offset = self.label_sizes[kind], self.offsets[kind]
            out[kind] = torch.where((ids >= 0) & (ids < size), ids, size) + offset  # rows of this kind only
        self._labels = out

    def on_step(self, ctx: StepContext) -> None:
        self._valid = ctx.valid

    def on_route(self, event: RouterEvent) -> None:
        slot = self.slots.get(event.site)
        if slot is None:
            return
        logits = _logits(event, self.num_experts, self.transform)
        kinds = [self._labels[kind] for kind in self.label_sizes if kind in self._labels]
        first = kinds[0] if kinds else None
        acc = self.accumulator
        if logits is None:
            ids = event.experts
            entropy = torch.full((ids.shape[0],), float("nan"), device=ids.device)
            acc.update(slot, ids, entropy, first, self._valid)
        else:
            records = acc.observe(slot, logits, event.experts, event.weights, labels=first, valid=self._valid)
            ids, entropy = records.ids, records.entropy
        for labels in kinds[1:]:
            acc.update(slot, ids, entropy, labels, self._valid, main=False)

    def drain(self) -> dict[str, dict[str, Any]]:
        """Host copies of the tables (``to_host``) by label kind (``""`` without labels), then zero them.

        Each kind's entry holds the run-wide tables and its own label rows (``size + 1`` of them).
        """
        host = self.accumulator.to_host()
        self.accumulator.reset()
        if not self.label_sizes:
            return {"": host}
        main = {name: host[name] for name in ("expert_counts", "coactivation", "entropy_hist", "tokens",
                                               "entropy_bin_edges")}
        out = {}
        for kind, size in self.label_sizes.items():
            rows = slice(self.offsets[kind], self.offsets[kind] + size + 1)
            out[kind] = {**main, **{name: host[name][:, rows] for name in
                                    ("label_expert_counts", "label_entropy_hist", "label_tokens")}}
        return out
