"""Collectors: receive the hooks' events during one forward and hand the batch over on the host.

Every collector is a :class:`~moelens.hooks.events.RoutingSink` with the same two calls around a
forward: ``begin_batch(windows, shape)`` and ``finish_batch(flush=...)``, which returns
:class:`~moelens.pipeline.types.RouteRows` (routes mode) or
:class:`~moelens.pipeline.types.AggregateRows` (stats mode). Three implementations:

* :class:`HostCollector` (torch path): keeps the event tensors and copies each kind (ids,
  weights, logits) to the host in one transfer per batch, not one synchronising copy per layer;
* :class:`DeviceCollector` (kernels path): :class:`~moelens.kernels.sinks.RecordSink` writes
  compact records into a device buffer during the forward, copied out once;
* :class:`StatsCollector` (stats mode): :class:`~moelens.kernels.sinks.StatsSink` keeps bounded
  on-device aggregates split by the documents' labels; they leave the device only on a flush.

Rows are checked against the step that produced them and padding is dropped.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
import torch

from moelens.errors import CaptureError
from moelens.hooks.events import RouterEvent, StepContext
from moelens.models.discover import ModelPlan
from moelens.pipeline.types import AggregateRows, HostRoute, HostStep, RouteRows

__all__ = ["Collector", "HostCollector", "DeviceCollector", "StatsCollector", "logits_transform", "host_step"]


class Collector(Protocol):
    def on_step(self, ctx: StepContext) -> None: ...

    def on_route(self, event: RouterEvent) -> None: ...

    def begin_batch(self, windows: Sequence[Any], shape: tuple[int, int]) -> None: ...

    def finish_batch(self, *, flush: bool = True) -> RouteRows | AggregateRows: ...


def _to_host(tensors: list[torch.Tensor], dtype: torch.dtype) -> list[np.ndarray]:
    """One device-to-host copy per device for a list of tensors with the same trailing shape
    (a model spread over devices by a device map has routers on each)."""
    if not tensors:
        return []
    out: list[np.ndarray | None] = [None] * len(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    for idx in by_device.values():
        sizes = [tensors[i].shape[0] for i in idx]
        flat = torch.cat([tensors[i].to(dtype) for i in idx]).cpu().numpy()
        for i, part in zip(idx, np.split(flat, np.cumsum(sizes)[:-1])):
            out[i] = part
    return out  # type: ignore[return-value]


def host_step(ctx: StepContext) -> HostStep:
    return HostStep(ctx.step, ctx.stack, ctx.batch, ctx.seq, ctx.past, ctx.valid.cpu().numpy(),
                    ctx.positions.cpu().numpy().astype(np.int64),
                    None if ctx.input_ids is None else ctx.input_ids.reshape(-1).cpu().numpy().astype(np.int64))


def logits_transform(plan: ModelPlan):
    """What turns a router's logits output into logits (None: it already holds logits)."""
    if plan.family.logits == "probs":  # the router returns softmax probabilities
        return lambda probs: probs.float().clamp_min(torch.finfo(torch.float32).tiny).log()
    return None


class HostCollector:
    """Routes mode, torch path: buffers one batch of events and copies them to the host at the end."""

    def __init__(self, plan: ModelPlan, *, logits: bool = False) -> None:
        self.plan = plan
        self.keep_logits = logits
        self._steps: list[StepContext] = []
        self._events: list[RouterEvent] = []

    def on_step(self, ctx: StepContext) -> None:
        self._steps.append(ctx)

    def on_route(self, event: RouterEvent) -> None:
        self._events.append(event)

    def begin_batch(self, windows: Sequence[Any] = (), shape: tuple[int, int] = (0, 0)) -> None:
        self._steps, self._events = [], []

    def pending(self) -> bool:
        """Whether anything was recorded since the last :meth:`finish_batch`."""
        return bool(self._events or self._steps)

    def finish_batch(self, *, flush: bool = True) -> RouteRows:
        steps, events = self._steps, self._events
        self._steps, self._events = [], []
        host_steps = {ctx.step: host_step(ctx) for ctx in steps}
        experts: dict[int, np.ndarray] = {}
        weights: dict[int, np.ndarray] = {}
        by_k: dict[int, list[int]] = {}
        for i, ev in enumerate(events):
            by_k.setdefault(ev.experts.shape[1], []).append(i)
        for idx in by_k.values():
            for i, e in zip(idx, _to_host([events[i].experts for i in idx], torch.int16)):
                experts[i] = e
            for i, w in zip(idx, _to_host([events[i].weights for i in idx], torch.float32)):
                weights[i] = w
        logits: dict[int, np.ndarray] = {}
        if self.keep_logits:
            by_width: dict[int, list[int]] = {}
            for i, ev in enumerate(events):
                if ev.logits is not None:
                    by_width.setdefault(ev.logits.shape[-1], []).append(i)
            for idx in by_width.values():
                flat = [events[i].logits.reshape(-1, events[i].logits.shape[-1]) for i in idx]
                for i, lg in zip(idx, _to_host(flat, torch.float32)):
                    logits[i] = lg
        routes = []
        for i, ev in enumerate(events):
            step = host_steps.get(ev.step)
            n = experts[i].shape[0]
            if step is None:
                rows, keep = np.arange(n), slice(None)
            else:
                if n != step.batch * step.seq:
                    site = self.plan.sites[ev.site]
                    raise CaptureError(
                        f"router {site.path} saw {n} rows for a batch of {step.batch}x{step.seq} tokens;"
                        " moelens captures text-only inputs where every router sees every token.")
                rows = keep = np.flatnonzero(step.valid)
            routes.append(HostRoute(ev.site, ev.step, rows, experts[i][keep], weights[i][keep],
                                    logits[i][keep] if i in logits else None))
        return RouteRows(list(host_steps.values()), routes)


class DeviceCollector:
    """Routes mode, kernels path: records reduced on the device, one host copy per batch.

    Args:
        sites: the plan's site numbers to record (each gets a buffer slot).
        max_tokens: rows per batch (``batch_size * max_length``).
        backend: ``torch`` or ``triton`` record kernels (see :func:`moelens.kernels.choose_backend`).
    """

    def __init__(self, plan: ModelPlan, sites: Sequence[int], *, max_tokens: int, device: str, backend: str) -> None:
        from moelens.kernels.sinks import RecordSink

        self.plan = plan
        self.slots = {site: slot for slot, site in enumerate(sorted(sites))}
        chosen = [plan.sites[s] for s in self.slots]
        self.k = max(s.top_k for s in chosen)
        self.sink = RecordSink(self.slots, k=self.k, num_experts=max(s.num_experts for s in chosen),
                               max_tokens=max_tokens, device=device, backend=backend,
                               logits_transform=logits_transform(plan))
        self.backend = self.sink.backend
        self._seen: list[int] = []

    def begin_batch(self, windows: Sequence[Any] = (), shape: tuple[int, int] = (0, 0)) -> None:
        self.sink.begin_batch()
        self._seen = []

    def on_step(self, ctx: StepContext) -> None:
        self.sink.on_step(ctx)

    def on_route(self, event: RouterEvent) -> None:
        if event.site in self.slots:
            self._seen.append(event.site)
        self.sink.on_route(event)

    def finish_batch(self, *, flush: bool = True) -> RouteRows:
        steps = [host_step(ctx) for ctx in self.sink.steps]
        arrays = self.sink.finish_batch().wait()
        if not steps:
            return RouteRows([], [])
        step = steps[-1]
        rows = np.flatnonzero(step.valid)
        routes = []
        for site in dict.fromkeys(self._seen):
            slot, k = self.slots[site], self.plan.sites[site].top_k
            conf = np.stack([arrays["entropy"][slot][rows], arrays["margin"][slot][rows],
                             arrays["lse"][slot][rows]], axis=1).astype(np.float32)
            routes.append(HostRoute(site, step.step, rows, arrays["ids"][slot][rows, :k],
                                    arrays["weights"][slot][rows, :k].astype(np.float32), None, conf))
        return RouteRows(steps, routes)


class StatsCollector:
    """Stats mode: bounded on-device aggregates per layer, split by the documents' labels.

    ``sites`` are the primary router sites to aggregate; ``labels`` the values of each label kind
    (``language``, ``domain``) known before the run. ``label_of(window, kind)`` gives a window's
    label value. Aggregates leave the device only when :meth:`finish_batch` is asked to flush.
    """

    def __init__(self, plan: ModelPlan, sites: Sequence[int], *, device: str, backend: str,
                 labels: dict[str, list[str]], label_of: Any, run_id: str, entropy_bins: int = 32) -> None:
        from moelens.kernels.sinks import StatsSink

        self.plan, self.run_id, self.label_of = plan, run_id, label_of
        self.slots = {site: slot for slot, site in enumerate(sorted(sites, key=lambda s: plan.sites[s].layer))}
        self.layer_of_slot = np.array([plan.sites[s].layer for s in self.slots], dtype=np.int64)
        self.labels = labels
        self._index = {kind: {v: i for i, v in enumerate(values)} for kind, values in labels.items()}
        chosen = [plan.sites[s] for s in self.slots]
        self.sink = StatsSink(self.slots, num_experts=max(s.num_experts for s in chosen), k=max(s.top_k for s in chosen),
                              device=device, label_sizes={k: len(v) for k, v in labels.items()},
                              entropy_bins=entropy_bins, backend=backend, logits_transform=logits_transform(plan))
        self.backend = self.sink.backend
        self.device = device
        self._per_expert = plan.family.logits_per_expert

    def on_step(self, ctx: StepContext) -> None:
        self.sink.on_step(ctx)

    def on_route(self, event: RouterEvent) -> None:
        if not self._per_expert:  # product-key scores are not [tokens, experts]
            event = RouterEvent(event.site, event.step, event.experts, event.weights, None)
        self.sink.on_route(event)

    def begin_batch(self, windows: Sequence[Any], shape: tuple[int, int]) -> None:
        """Label every row of the next forward with its document's labels (-1 where absent)."""
        seq = int(shape[1])
        out = {}
        for kind, index in self._index.items():
            ids = np.full((len(windows), seq), -1, dtype=np.int64)
            for b, window in enumerate(windows):
                value = self.label_of(window, kind)
                ids[b] = index.get(value, -1) if value is not None else -1
            out[kind] = torch.from_numpy(ids.reshape(-1)).to(self.device)
        self.sink.set_labels(out)

    def finish_batch(self, *, flush: bool = True) -> AggregateRows:
        if not flush:
            return AggregateRows(None)
        from moelens.pipeline.aggregates import aggregate_tables

        return AggregateRows(aggregate_tables(self.sink.drain(), self.layer_of_slot, self.labels, self.run_id))
