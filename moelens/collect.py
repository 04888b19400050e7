"""Collect hook events and bring them to the host once per batch.

:class:`BatchCollector` (the torch path) is the sink the hooks emit into. It keeps references to
the event tensors on the model's device and, at :meth:`BatchCollector.drain`, concatenates them
and copies each kind (ids, weights, logits) to the host in one transfer, instead of one
synchronising copy per layer. :class:`DeviceCollector` (the kernels path) lets
:class:`moelens.kernels.sinks.RecordSink` write compact records into a device buffer during the
forward and copies the buffer once. Both return the same host objects: rows are checked against
the step that produced them and padding is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from moelens.errors import CaptureError
from moelens.hooks.events import RouterEvent, StepContext
from moelens.models.discover import ModelPlan

__all__ = ["HostStep", "HostRoute", "BatchCollector", "DeviceCollector", "logits_transform"]


@dataclass
class HostStep:
    step: int
    stack: str
    batch: int
    seq: int
    past: int
    valid: np.ndarray  # [batch * seq] bool
    positions: np.ndarray  # [batch * seq] int64
    input_ids: np.ndarray | None  # [batch * seq] int64

    @property
    def phase(self) -> str:
        return "prefill" if self.past == 0 else "decode"


@dataclass
class HostRoute:
    site: int
    step: int
    rows: np.ndarray  # [n] row index in the step's flattened batch (valid rows only)
    experts: np.ndarray  # [n, k] int16, -1 = dropped / skipped
    weights: np.ndarray  # [n, k] float32
    logits: np.ndarray | None  # [n, E'] float32
    confidence: np.ndarray | None = None  # [n, 3] float32: entropy, margin, lse (kernels path)


def _to_host(tensors: list[torch.Tensor], dtype: torch.dtype) -> list[np.ndarray]:
    """One device-to-host copy for a list of tensors with the same trailing shape."""
    if not tensors:
        return []
    sizes = [t.shape[0] for t in tensors]
    flat = torch.cat([t.to(dtype) for t in tensors]).cpu().numpy()
    return np.split(flat, np.cumsum(sizes)[:-1])


def _host_step(ctx: StepContext) -> HostStep:
    return HostStep(ctx.step, ctx.stack, ctx.batch, ctx.seq, ctx.past, ctx.valid.cpu().numpy(),
                    ctx.positions.cpu().numpy().astype(np.int64),
                    None if ctx.input_ids is None else ctx.input_ids.reshape(-1).cpu().numpy().astype(np.int64))


def logits_transform(plan: ModelPlan):
    """What turns a router's logits output into logits (None: it already holds logits)."""
    if plan.family.logits == "probs":  # the router returns softmax probabilities (gemma4)
        return lambda probs: probs.float().clamp_min(torch.finfo(torch.float32).tiny).log()
    return None


class BatchCollector:
    """Sink that buffers one batch of events and drains them to numpy."""

    def __init__(self, plan: ModelPlan, *, logits: bool = False) -> None:
        self.plan = plan
        self.keep_logits = logits
        self._steps: list[StepContext] = []
        self._events: list[RouterEvent] = []

    def on_step(self, ctx: StepContext) -> None:
        self._steps.append(ctx)

    def on_route(self, event: RouterEvent) -> None:
        self._events.append(event)

    def pending(self) -> bool:
        """Whether anything was recorded since the last :meth:`drain`."""
        return bool(self._events or self._steps)

    def drain(self) -> tuple[list[HostStep], list[HostRoute]]:
        steps, events = self._steps, self._events
        self._steps, self._events = [], []
        host_steps = {ctx.step: _host_step(ctx) for ctx in steps}
        routes: list[HostRoute] = []
        by_k: dict[int, list[int]] = {}
        for i, ev in enumerate(events):
            by_k.setdefault(ev.experts.shape[1], []).append(i)
        experts: dict[int, np.ndarray] = {}
        weights: dict[int, np.ndarray] = {}
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
                for i, lg in zip(idx, _to_host([events[i].logits.reshape(-1, events[i].logits.shape[-1])
                                                for i in idx], torch.float32)):
                    logits[i] = lg
        for i, ev in enumerate(events):
            step = host_steps.get(ev.step)
            n = experts[i].shape[0]
            if step is None:
                rows = np.arange(n)
            else:
                if n != step.batch * step.seq:
                    site = self.plan.sites[ev.site]
                    raise CaptureError(
                        f"router {site.path} saw {n} rows for a batch of {step.batch}x{step.seq} tokens;"
                        " moelens captures text-only inputs where every router sees every token.")
                rows = np.flatnonzero(step.valid)
            keep = rows if step is not None else slice(None)
            routes.append(HostRoute(ev.site, ev.step, rows, experts[i][keep], weights[i][keep],
                                    logits[i][keep] if i in logits else None))
        return list(host_steps.values()), routes


class DeviceCollector:
    """Sink for the kernels path: records reduced on the device, one host copy per batch.

    Args:
        sites: the plan's site numbers to record (each gets a buffer slot).
        max_tokens: rows per batch (``batch_size * max_length``).
        backend: ``torch`` or ``triton`` record kernels (see :func:`moelens.kernels.choose_backend`).
    """

    def __init__(self, plan: ModelPlan, sites: list[int], *, max_tokens: int, device: str, backend: str) -> None:
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

    def begin_batch(self, *_: object) -> None:
        self.sink.begin_batch()
        self._seen = []

    def on_step(self, ctx: StepContext) -> None:
        self.sink.on_step(ctx)

    def on_route(self, event: RouterEvent) -> None:
        if event.site in self.slots:
            self._seen.append(event.site)
        self.sink.on_route(event)

    def drain(self) -> tuple[list[HostStep], list[HostRoute]]:
        steps = [_host_step(ctx) for ctx in self.sink.steps]
        arrays = self.sink.finish_batch().wait()
        if not steps:
            return [], []
        step = steps[-1]
        rows = np.flatnonzero(step.valid)
        routes = []
        for site in dict.fromkeys(self._seen):
            slot, k = self.slots[site], self.plan.sites[site].top_k
            conf = np.stack([arrays["entropy"][slot][rows], arrays["margin"][slot][rows],
                             arrays["lse"][slot][rows]], axis=1).astype(np.float32)
            routes.append(HostRoute(site, step.step, rows, arrays["ids"][slot][rows, :k],
                                    arrays["weights"][slot][rows, :k].astype(np.float32), None, conf))
        return steps, routes
