"""Expert weights for merge: the usage-weighted average of two experts, in the family's layout.

transformers 5 keeps a layer's experts fused: parameters whose first dimension is the expert index
(``gate_up_proj [E, 2I, H]``, ``down_proj [E, H, I]``, their biases, per-expert norms). Older
layouts keep one module per expert (``experts.0``, ``experts.1``, ...). :func:`merge_experts` writes
the average into both experts' slots in either layout and returns the undo.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch

from moelens.errors import InterventionError

__all__ = ["merge_experts", "expert_tensors", "merge_share"]


def merge_share(usage: Mapping[int, float], a: int, b: int) -> float:
    """The weight of expert ``a`` in the merged expert: its share of the pair's usage (0.5 without usage)."""
    ua, ub = float(usage.get(a, 0.0)), float(usage.get(b, 0.0))
    return 0.5 if ua + ub <= 0 else ua / (ua + ub)


def expert_tensors(experts: Any, num_experts: int) -> list[tuple[str, torch.Tensor, Callable[[int], torch.Tensor]]]:
    """``(name, tensor, slot)`` for every parameter that holds one slice per expert; ``slot(e)`` views it."""
    found: list[tuple[str, torch.Tensor, Callable[[int], torch.Tensor]]] = []
    children = dict(experts.named_children())
    if all(str(e) in children for e in range(num_experts)):  # one module per expert
        for name, _ in children["0"].named_parameters():
            def slot(e: int, name: str = name) -> torch.Tensor:
                return dict(children[str(e)].named_parameters())[name]
            found.append((name, slot(0), slot))
        return found
    for name, param in experts.named_parameters():
        if param.dim() >= 1 and param.shape[0] == num_experts:
            found.append((name, param, lambda e, p=param: p[e]))
    return found


def merge_experts(experts: Any, num_experts: int, pairs: Iterable[tuple[int, int]],
                  usage: Mapping[int, float]) -> Callable[[], None]:
    """Replace each pair's two experts by their usage-weighted average; returns the undo."""
    pairs = list(pairs)
    seen = [e for pair in pairs for e in pair]
    if len(seen) != len(set(seen)):
        raise InterventionError("merge: an expert appears in two pairs of one layer; merge groups pairwise.")
    tensors = expert_tensors(experts, num_experts)
    if not tensors:
        raise InterventionError(f"merge: {type(experts).__name__} holds no per-expert weights this version can average.")
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        for a, b in pairs:
            share = merge_share(usage, a, b)
            for _, _, slot in tensors:
                ta, tb = slot(a), slot(b)
                saved += [(ta, ta.detach().clone()), (tb, tb.detach().clone())]
                merged = ta.detach().double() * share + tb.detach().double() * (1.0 - share)
                ta.copy_(merged.to(ta.dtype))
                tb.copy_(merged.to(tb.dtype))

    def undo() -> None:
        with torch.no_grad():
            for target, value in reversed(saved):
                target.copy_(value)

    return undo
