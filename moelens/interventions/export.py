"""Save a merged or pruned model as a transformers checkpoint (``save_pretrained``).

* merge: the model is saved with the merged experts' averaged weights in both slots; E stays the
  same and routing is untouched, so the checkpoint computes exactly what the open intervention does.
* prune: the pruned experts are removed - their router rows, selection-bias entries and expert
  slices - and the config's expert count lowered. A config holds one count for every layer, so the
  same number of experts must go from every MoE layer. Group-limited routers (``n_group`` > 1),
  zero-compute experts and skip classes change meaning when experts go and are refused.

Other interventions (ablate, force, scale) change a forward, not a checkpoint, and are refused.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from moelens.errors import InterventionError
from moelens.interventions.routing import SELECTION_BIASES
from moelens.interventions.weights import expert_tensors
from moelens.models.sites import config_get

__all__ = ["export_model"]


def _set_config(config: Any, key: str, value: int) -> None:
    *parents, leaf = key.split(".")
    target = config
    for part in parents:
        target = getattr(target, part)
    setattr(target, leaf, value)


def _keep_rows(module: Any, name: str, keep: torch.Tensor, width: int) -> None:
    """Keep the ``keep`` experts of a per-expert tensor (expert index first, or last for a bias row)."""
    tensor = getattr(module, name)
    if not isinstance(tensor, torch.Tensor) or tensor.dim() == 0:
        return
    if tensor.shape[0] == width:
        dim = 0
    elif tensor.shape[-1] == width:
        dim = tensor.dim() - 1
    else:
        return
    kept = tensor.detach().index_select(dim, keep.to(tensor.device)).clone()
    if isinstance(tensor, torch.nn.Parameter):
        setattr(module, name, torch.nn.Parameter(kept, requires_grad=tensor.requires_grad))
    else:
        module._buffers[name] = kept


def _prune_copy(iv: Any) -> Any:
    plan, family = iv.plan, iv.plan.family
    pruned = {layer: set(experts) for layer, experts in iv.prune.items()}
    counts = {len(v) for v in pruned.values()}
    moe_layers = set(plan.moe_layers)
    if len(counts) != 1 or set(pruned) != moe_layers:
        raise InterventionError("export of a pruned model needs the same number of experts pruned from every MoE"
                                f" layer ({sorted(moe_layers)}): a config holds one expert count.")
    config = iv.model.config
    if family.zero_experts_key or family.skip_class or family.convention not in ("A", "A+", "B"):
        raise InterventionError(f"export of a pruned {family.family} model is not supported: its experts are"
                                " numbered with extra (zero-compute or skip) ids or routed another way.")
    if (config_get(config, "n_group") or 1) > 1:
        raise InterventionError("export of a pruned model with group-limited routing (n_group > 1) would change"
                                " the groups; prune in place with intervene() instead.")
    model = copy.deepcopy(iv.model)
    modules = dict(model.named_modules())
    num_experts = 0
    for site in plan.sites:
        if not site.primary:
            continue
        num_experts = site.num_experts
        keep = torch.tensor([e for e in range(site.num_experts) if e not in pruned[site.layer]])
        router = modules[site.path]
        for owner in router.modules():
            for name, _ in list(owner.named_parameters(recurse=False)) + list(owner.named_buffers(recurse=False)):
                if name in ("weight", "bias", *SELECTION_BIASES):
                    _keep_rows(owner, name, keep, site.num_experts)
            for attr in ("num_experts", "n_routed_experts"):
                if isinstance(getattr(owner, attr, None), int):
                    setattr(owner, attr, len(keep))
        parent = site.path.rsplit(".", 1)[0]
        for name in SELECTION_BIASES:
            if isinstance(getattr(modules[parent], name, None), torch.Tensor):
                _keep_rows(modules[parent], name, keep, site.num_experts)
        experts = modules[plan.experts_paths.get(site.path) or f"{parent}.experts"]
        for name, tensor, _ in expert_tensors(experts, site.num_experts):
            owner_name, _, leaf = name.rpartition(".")
            owner = experts.get_submodule(owner_name) if owner_name else experts
            if name.count(".") and owner_name.isdigit():
                raise InterventionError("export of a pruned model with one module per expert is not supported.")
            _keep_rows(owner, leaf, keep, site.num_experts)
        if isinstance(getattr(experts, "num_experts", None), int):
            experts.num_experts = len(keep)
    _set_config(model.config, family.experts_key, num_experts - counts.pop())
    return model


def export_model(iv: Any, path: str | Path) -> Path:
    """Save the model with ``iv`` applied to ``path`` (a folder ``from_pretrained`` loads)."""
    if iv.ablate or iv.force or iv.scale:
        raise InterventionError("only prune and merge describe a checkpoint; ablate, force and scale change a"
                                " forward pass (measure them with moelens intervene).")
    if iv.prune and iv.merge:
        raise InterventionError("export prune and merge separately.")
    path = Path(path)
    if iv.prune:
        model = _prune_copy(iv)
    elif not iv._undo and iv.merge:
        raise InterventionError("export a merge inside its with-block (the averaged weights exist only there).")
    else:
        model = iv.model
    model.save_pretrained(path)
    return path
