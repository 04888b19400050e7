"""What the hooks emit: one StepContext per forward of a layer stack, one RouterEvent per router call.

Events carry torch tensors still on the model's device; sinks decide when to move them (the
torch path copies once per batch, the kernels path reduces on the device first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["StepContext", "RouterEvent", "RoutingSink"]


@dataclass(slots=True)
class StepContext:
    """The inputs of one forward call of a layer stack (one prefill or one decode step).

    Router rows are the stack's ``batch * seq`` tokens flattened batch-major. ``positions`` holds
    each row's position in its sequence (padding counted out), ``valid`` which rows are real tokens.
    """

    step: int
    stack: str
    batch: int
    seq: int
    past: int  # tokens already in the KV cache before this call
    input_ids: torch.Tensor | None  # [batch, seq]
    valid: torch.Tensor  # [batch * seq] bool
    positions: torch.Tensor  # [batch * seq] int64

    @property
    def phase(self) -> str:
        return "prefill" if self.past == 0 else "decode"


@dataclass(slots=True)
class RouterEvent:
    """One router call: the routing decision for every row the router saw."""

    site: int
    step: int
    experts: torch.Tensor  # [T, k] int64, -1 = dropped (capacity) or skipped
    weights: torch.Tensor  # [T, k], exactly as the experts received them
    logits: torch.Tensor | None  # [T, E'] as returned by the router, when asked for


class RoutingSink(Protocol):
    """Receives what the hooks observe. Implementations must not modify the tensors."""

    def on_step(self, ctx: StepContext) -> None: ...

    def on_route(self, event: RouterEvent) -> None: ...
