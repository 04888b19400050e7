"""The generic adapter: plan a model whose family is not in the table, from the structure of its blocks.

Most MoE families follow one convention (A): an MoE block holds a router whose forward returns
``(logits[T, E], weights[T, k], indices[T, k])`` and an experts module called as
``experts(hidden, indices, weights)``. A family that transformers released after this table (or a
remote-code model) usually does too. :func:`plan_generic` finds such blocks by structure alone:

* the experts module: a child whose own parameters include tensors of three or more dimensions
  with the same leading size ``E >= 2`` (the fused per-expert weights of transformers 5), or a
  ``ModuleList`` of ``E >= 2`` experts, and whose forward takes (hidden, indices, weights);
* the router: a sibling whose own ``weight`` is a matrix with ``E`` rows;
* k: the router's ``top_k`` attribute, else the config's ``num_experts_per_tok`` (or an alias).

The plan it returns is marked ``generic``: capture then cross-checks every router call against what
the experts module received, so a model that only looks like convention A raises a
:class:`~moelens.errors.CaptureError` instead of writing wrong rows. A one-line
:class:`~moelens.errors.GenericAdapterWarning` names the family. Blocks that fit nowhere give
``None`` (the caller raises the usual clear error).
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

from moelens.errors import GenericAdapterWarning
from moelens.models.family_spec import Family
from moelens.models.sites import build_plan, config_get

__all__ = ["plan_generic", "find_blocks"]

_K_KEYS = ("num_experts_per_tok", "num_experts_per_token", "top_k", "moe_topk", "moe_k", "top_k_experts", "topk")


def _leading_experts(module: Any) -> int | None:
    """E when ``module`` holds per-expert weights (3-D+ tensors sharing a leading size, or a list)."""
    import torch

    if isinstance(module, torch.nn.ModuleList):
        return len(module) if len(module) >= 2 else None
    sizes = {p.shape[0] for p in module.parameters(recurse=False) if p.dim() >= 3}
    if len(sizes) == 1 and next(iter(sizes)) >= 2:
        return int(next(iter(sizes)))
    return None


def _takes_dispatch(module: Any) -> bool:
    try:
        params = [p for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return False
    return len(params) >= 3


def find_blocks(modules: dict[str, Any]) -> list[tuple[str, str, int]]:
    """``(router path, experts path, E)`` of every block with the convention-A structure."""
    found = []
    for path, module in modules.items():
        children = dict(module.named_children())
        for e_name, experts in children.items():
            num_experts = _leading_experts(experts)
            if num_experts is None or not _takes_dispatch(experts):
                continue
            for r_name, router in children.items():
                weight = router._parameters.get("weight") if r_name != e_name else None
                if weight is not None and weight.dim() == 2 and weight.shape[0] == num_experts:
                    prefix = f"{path}." if path else ""
                    found.append((prefix + r_name, prefix + e_name, num_experts))
                    break
    return found


def _top_k(router: Any, config: Any) -> int | None:
    k = getattr(router, "top_k", None)
    if isinstance(k, int) and k >= 1:
        return k
    for key in _K_KEYS:
        value = config_get(config, key)
        if isinstance(value, int) and value >= 1:
            return value
    return None


def plan_generic(model: Any, modules: dict[str, Any]):
    """A generic (convention A, verified) :class:`~moelens.models.sites.ModelPlan`, or None."""
    blocks = find_blocks(modules)
    if not blocks:
        return None
    config = getattr(model, "config", None)
    ks = {router: _top_k(modules[router], config) for router, _, _ in blocks}
    if any(k is None for k in ks.values()):
        return None
    name = getattr(config, "model_type", None) or type(model).__name__
    spec = Family(
        family=name, convention="A", scoring="S?", model=type(model).__name__,
        config=type(config).__name__ if config is not None else "",
        routers=tuple(sorted({type(modules[r]).__name__ for r, _, _ in blocks})),
        experts_key="", top_k_key=None,
        rule="not in the family table: read by the generic convention-A adapter found by structure;"
             " every call is checked against what the experts module received",
        notes="generic adapter (found by structure, verified on every call)")
    experts_of = {router: experts for router, experts, _ in blocks}
    sizes = {router: e for router, _, e in blocks}
    plan = build_plan(spec, modules, list(experts_of),
                      lambda path, index: (sizes[path], ks[path], "mlp", True), shared=0, generic=True,
                      experts_paths=experts_of)
    warnings.warn(f"moelens: the architecture {name!r} is not in the family table; capturing it with the generic"
                  f" adapter ({len(blocks)} MoE blocks found by structure) and verifying every call against its"
                  " experts.", GenericAdapterWarning, stacklevel=3)
    return plan
