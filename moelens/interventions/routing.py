"""What an intervention changes in a router: masked logits and biases, edited router outputs.

Each function installs one change and returns the callable that undoes it.

* :func:`mask_router` masks experts' logits inside the router's own forward: a torch function mode
  scoped to that call adds -inf to the matching columns of the first linear map whose output has
  one column per expert (or one more, for a skip class), before any selection happens. Selection-only
  biases of the router or its MoE block are set to -inf for those experts while the change is open.
* :func:`edit_output` rewrites a convention-A router's ``(logits, weights, indices)`` for force and
  scale; it runs before any other hook on the router, so a capture inside sees the edited routes.
* :func:`watch_inputs` keeps the current call's ``input_ids`` for token selection (``where``).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from moelens.errors import InterventionError

__all__ = ["mask_router", "edit_output", "watch_inputs", "MaskLogits", "SELECTION_BIASES"]

# where a family keeps a selection-only bias (router, MoE block or a statics module)
SELECTION_BIASES = ("e_score_correction_bias", "expert_bias", "balancing_biases")
Intervention = Any  # the open intervention (moelens.interventions.core), for annotations only

_LINEAR_OPS = frozenset({F.linear, torch.matmul, torch.mm, torch.addmm, torch.Tensor.matmul, torch.Tensor.mm,
                         torch.Tensor.__matmul__, torch.einsum})


class MaskLogits(TorchFunctionMode):
    """Add -inf to ``experts`` columns of the first linear output with ``width`` (or ``width + 1``) columns."""

    def __init__(self, experts: list[int], width: int) -> None:
        super().__init__()
        self.experts, self.widths, self.done = experts, (width, width + 1), False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if (not self.done and func in _LINEAR_OPS and isinstance(out, torch.Tensor) and out.dim() >= 1
                and out.is_floating_point() and out.shape[-1] in self.widths):
            self.done = True
            column = torch.zeros(out.shape[-1], dtype=out.dtype, device=out.device)
            column[self.experts] = float("-inf")
            out = out + column
        return out


def _biases(modules: dict[str, Any], path: str, width: int) -> list[torch.Tensor]:
    """Selection-only biases of the router at ``path`` (and its submodules), its MoE block and the block's children."""
    parent = path.rsplit(".", 1)[0] if "." in path else ""
    owners = [m for _, m in modules[path].named_modules()]
    if parent in modules:
        owners.append(modules[parent])
        owners += [m for name, m in modules[parent].named_children() if f"{parent}.{name}" != path]
    found: list[torch.Tensor] = []
    for owner in owners:
        for name in SELECTION_BIASES:
            tensor = getattr(owner, name, None)
            if isinstance(tensor, torch.Tensor) and tensor.shape[-1] in (width, width + 1) and \
                    all(tensor is not t for t in found):
                found.append(tensor)
    return found


def mask_router(modules: dict[str, Any], path: str, experts: list[int], width: int) -> list[Callable[[], None]]:
    """Mask ``experts`` of the router at ``path`` (``width`` experts, zero-compute ones included)."""
    router = modules[path]
    undo: list[Callable[[], None]] = []
    had_own = "forward" in router.__dict__
    previous = router.__dict__.get("forward")
    inner = router.forward
    chosen_check = torch.tensor(experts, dtype=torch.long)

    def forward(*args: Any, **kwargs: Any) -> Any:
        mode = MaskLogits(experts, width)
        with mode:
            out = inner(*args, **kwargs)
        if not mode.done:
            raise InterventionError(f"no router logits with {width} columns were computed inside {path}; its"
                                    " experts cannot be masked before selection.")
        ids = out[2] if isinstance(out, (tuple, list)) and len(out) >= 3 else None
        if isinstance(ids, torch.Tensor) and not ids.is_floating_point() and bool(torch.isin(ids, chosen_check.to(ids.device)).any()):
            # e.g. hash-routed layers: the ids come from a token-id table, not from the logits
            raise InterventionError(f"{path} still chose a masked expert: this router does not select on its"
                                    " logits alone (a hash-routed layer?), so it cannot be ablated there.")
        return out

    router.forward = forward

    def restore_forward() -> None:
        if had_own:
            router.forward = previous
        else:
            del router.forward

    undo.append(restore_forward)
    for bias in _biases(modules, path, width):
        saved = bias.detach().clone()
        with torch.no_grad():
            bias[..., experts] = float("-inf")

        def restore_bias(bias: torch.Tensor = bias, saved: torch.Tensor = saved) -> None:
            with torch.no_grad():
                bias.copy_(saved)

        undo.append(restore_bias)
    return undo


def watch_inputs(model: Any, iv: "Intervention") -> Callable[[], None]:
    """Keep each top-level call's ``input_ids`` on ``iv`` (for ``where`` functions)."""

    def hook(module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids")
        if ids is None and args and isinstance(args[0], torch.Tensor):
            ids = args[0]
        iv._input_ids = ids

    handle = model.register_forward_pre_hook(hook, with_kwargs=True, prepend=True)
    return handle.remove


def forced_rows(rows_ids: torch.Tensor, rows_w: torch.Tensor, forced: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids for forced tokens: the forced experts first, then the token's own choices that are not forced.

    Weights stay slot by slot (each slot keeps the gate weight the router gave it).
    """
    k = rows_ids.shape[-1]
    forced_t = torch.tensor(forced, dtype=rows_ids.dtype, device=rows_ids.device)
    out = torch.empty_like(rows_ids)
    for r in range(rows_ids.shape[0]):  # forced tokens are few; clarity over speed
        own = [int(e) for e in rows_ids[r] if int(e) not in forced]
        out[r] = torch.cat([forced_t, torch.tensor(own[: k - len(forced)], dtype=rows_ids.dtype,
                                                   device=rows_ids.device)])
    return out, rows_w


def edit_output(router: Any, family: Any, site: Any, force: tuple[int, ...] | None, scale: dict[int, float] | None,
                iv: "Intervention") -> Callable[[], None]:
    """Rewrite the router's (logits, weights, indices) for force and scale."""

    def hook(module: Any, args: tuple, output: Any) -> Any:
        logits, weights, indices = output[0], output[1], output[2]
        ids, w = indices.reshape(-1, indices.shape[-1]), weights.reshape(-1, weights.shape[-1])
        if force:
            mask = iv.token_mask(getattr(iv, "_input_ids", None), ids.shape[0])
            if mask is not None and bool(mask.any()):
                mask = mask.to(ids.device)
                new_ids, new_w = forced_rows(ids[mask], w[mask], force)
                ids, w = ids.clone(), w.clone()
                ids[mask], w[mask] = new_ids, new_w
        if scale:
            for expert, factor in scale.items():
                w = torch.where(ids == expert, w * factor, w)
        return (logits, w.reshape(weights.shape), ids.reshape(indices.shape), *output[3:])

    handle = router.register_forward_hook(hook, prepend=True)
    return handle.remove
