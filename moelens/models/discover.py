"""Discovery: find a model's routers and describe them as capture sites.

:func:`plan_model` walks an instantiated ``torch.nn.Module`` once and returns a
:class:`ModelPlan`: the family row, one :class:`RouterSite` per router module and loop pass (its
path, the decoder-layer index, a tag, E and k), the dense layers, and the run metadata recorded in
the store. Routers are found by the class names that the family table declares; a router's layer
is the index of its decoder layer in the model's outermost list of layers (an ``nn.ModuleList``),
read from the module tree, not from names. A model whose family is not in the table but whose
blocks have the dominant structure (a router returning ``(logits, weights, indices)`` beside an
experts module called as ``experts(hidden, indices, weights)``) is planned by
:mod:`moelens.models.generic`, with a warning, and verified on every call.
"""

from __future__ import annotations

from typing import Any

from moelens.errors import NotMoEModelError, UnknownArchitectureError
from moelens.models.families import FAMILIES, family_for_router_class, router_class_names
from moelens.models.family_spec import Family
from moelens.models.generic import plan_generic
from moelens.models.sites import ModelPlan, RouterSite, build_plan, config_get, locate_layer, per_layer

__all__ = ["RouterSite", "ModelPlan", "plan_model", "locate_layer", "config_get"]

# config keys that mean "this is a mixture of experts" when the family is unknown
_EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts", "num_experts_per_tok")


def _shared_count(spec: Family, config: Any) -> int:
    value = per_layer(config_get(config, spec.shared.key), 0)
    if value is None:
        return 0
    if spec.shared.kind == "size":
        return 1 if value and value > 0 else 0
    return int(value)


def _site_tag(spec: Family, path: str) -> str:
    parts = path.split(".")
    for fragment, tag in spec.tags.items():
        if fragment in parts:
            return tag
    return "mlp"


def _detect_family(model: Any, found: dict[str, str]) -> Family | None:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    for class_name in found.values():
        spec = family_for_router_class(class_name)
        if spec is not None:
            return spec
    return None


def _not_moe_error(model: Any) -> Exception:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    expert_values = [config_get(config, k) for k in _EXPERT_KEYS] if config is not None else []
    if any(isinstance(v, int) and v > 1 for v in expert_values):
        return UnknownArchitectureError(
            f"the architecture {model_type!r} looks like a Mixture of Experts but no moelens adapter knows it,"
            " and its blocks do not have the structure of the generic adapter (a router returning"
            " (logits, weights, indices) beside experts(hidden, indices, weights)).",
            hint=f"{len(FAMILIES)} transformers families are supported; run `moelens families` to list them.",
        )
    return NotMoEModelError(
        f"the model ({model_type or type(model).__name__}) has no Mixture-of-Experts layers;"
        " moelens traces routers, so it needs an MoE model (run `moelens families` for the list)."
    )


def _passes(spec: Family, config: Any, index: int) -> int:
    if spec.loop is None:
        return 1
    start, end = config_get(config, spec.loop.start_key), config_get(config, spec.loop.end_key)
    passes = config_get(config, spec.loop.passes_key)
    if start is None or end is None or passes is None:
        raise UnknownArchitectureError(f"the {spec.family} config has no {spec.loop.passes_key}; cannot tell how many"
                                       " times its looped layers run.")
    return int(passes) if int(start) <= index < int(end) else 1


def plan_model(model: Any) -> ModelPlan:
    """Describe where ``model`` routes. Raises for non-MoE models and unknown architectures."""
    from moelens.models.versions import check_transformers_version

    check_transformers_version()
    modules = dict(model.named_modules())
    known = router_class_names()
    found = {path: type(m).__name__ for path, m in modules.items() if type(m).__name__ in known}
    spec = _detect_family(model, found)
    if spec is None:
        plan = plan_generic(model, modules)
        if plan is None:
            raise _not_moe_error(model)
        return plan
    paths = [p for p, cls in found.items() if cls in spec.routers]
    if not paths:
        raise NotMoEModelError(
            f"the {spec.family} model has no MoE layers in this configuration (every layer is dense);"
            " nothing to trace."
        )
    config = getattr(model, "config", None)
    default_k = spec.fixed_top_k or config_get(config, spec.top_k_key)
    default_e = config_get(config, spec.experts_key)
    zero = int(config_get(config, spec.zero_experts_key) or 0)

    def describe(path: str, index: int) -> tuple[int, int, str, bool]:
        module = modules[path]
        e = getattr(module, "num_experts", None) or per_layer(default_e, index)
        k = getattr(module, "top_k", None) or per_layer(default_k, index)
        if e is None or k is None:
            raise UnknownArchitectureError(f"cannot read the number of experts or k for the router {path}.")
        tag = _site_tag(spec, path)
        return int(e) + zero, int(k), tag, tag not in spec.secondary_tags

    experts = {p: f"{p.rsplit('.', 1)[0]}.experts" for p in paths if "." in p}
    return build_plan(spec, modules, paths, describe, shared=_shared_count(spec, config),
                      passes=lambda index: _passes(spec, config, index),
                      experts_paths={r: e for r, e in experts.items() if e in modules})


