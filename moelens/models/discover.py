"""Discovery: find a model's routers and describe them as capture sites.

:func:`plan_model` walks an instantiated ``torch.nn.Module`` once and returns a
:class:`ModelPlan`: the family row, one :class:`RouterSite` per router module (its path, the
decoder-layer index, a tag, E and k), the dense layers, and the run metadata recorded in the
store. Routers are found by the class names that the family table declares, never by guessing
from attribute names, so wrappers (``...ForConditionalGeneration``, text towers) are handled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from moelens.errors import NotMoEModelError, UnknownArchitectureError
from moelens.models.families import FAMILIES, FamilySpec, family_for_router_class

__all__ = ["RouterSite", "ModelPlan", "plan_model"]

# containers of decoder layers: model.layers.3, transformer.blocks.3, encoder.block.3, h.3
_LAYER = re.compile(r"(?:^|\.)(layers|blocks|block|h)\.(\d+)(?=\.|$)")
# config keys that mean "this is a mixture of experts" when the family is unknown
_EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts", "num_experts_per_tok")


@dataclass(frozen=True)
class RouterSite:
    """One router module: a place where routing decisions are made once per forward call."""

    site: int
    path: str
    layer: int
    tag: str
    primary: bool
    num_experts: int
    top_k: int
    stack: str  # path of the module that owns the layer list (its inputs give positions)

    def as_dict(self) -> dict[str, Any]:
        return {"site": self.site, "path": self.path, "layer": self.layer, "tag": self.tag,
                "primary": self.primary, "num_experts": self.num_experts, "top_k": self.top_k}


@dataclass(frozen=True)
class ModelPlan:
    family: FamilySpec
    sites: tuple[RouterSite, ...]
    num_layers: int
    num_experts: int
    top_k: int
    num_shared_experts: int
    stacks: tuple[str, ...]

    @property
    def moe_layers(self) -> tuple[int, ...]:
        return tuple(sorted({s.layer for s in self.sites if s.primary}))

    @property
    def dense_layers(self) -> tuple[int, ...]:
        moe = set(self.moe_layers)
        return tuple(i for i in range(self.num_layers) if i not in moe)

    def metadata(self) -> dict[str, Any]:
        """What the store records about the model's routing (runs table + config JSON)."""
        spec = self.family
        return {
            "family": spec.family,
            "convention": spec.convention,
            "scoring": spec.scoring_function,
            "scoring_group": spec.scoring,
            "scoring_rule": spec.rule,
            "logits_kind": spec.logits_kind,
            "num_layers": self.num_layers,
            "moe_layers": list(self.moe_layers),
            "dense_layers": list(self.dense_layers),
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "num_shared_experts": self.num_shared_experts,
            "shared_experts": spec.shared,
            "notes": spec.notes,
            "sites": [s.as_dict() for s in self.sites],
        }


def _config_get(config: Any, key: str | None) -> Any:
    """Look ``key`` up (dotted for nested configs) on the config or its text sub-config."""
    if key is None:
        return None
    candidates = [config]
    get_text = getattr(config, "get_text_config", None)
    if callable(get_text):
        try:
            text = get_text()
        except Exception:  # noqa: BLE001 - some composite configs raise for missing towers
            text = None
        if text is not None and text is not config:
            candidates.insert(0, text)
    for cfg in candidates:
        value: Any = cfg
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
            if value is None:
                break
        if value is not None:
            return value
    return None


def _per_layer(value: Any, layer: int) -> Any:
    if isinstance(value, (list, tuple)):
        return value[layer] if layer < len(value) else value[-1]
    return value


def _shared_count(spec: FamilySpec, config: Any) -> int:
    value = _config_get(config, spec.shared_key)
    if value is None or spec.shared_key == "zero_expert_num":
        return 0
    value = _per_layer(value, 0)
    if spec.shared_key.endswith(("intermediate_size", "_dim")):
        return 1 if value and value > 0 else 0
    return int(value)


def _site_tag(spec: FamilySpec, path: str) -> str:
    for fragment, tag in spec.tags.items():
        if fragment in path.split("."):
            return tag
    return "mlp"


def _detect_family(model: Any, router_classes: dict[str, str]) -> FamilySpec:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    for class_name in router_classes.values():
        spec = family_for_router_class(class_name)
        if spec is not None:
            return spec
    config = getattr(model, "config", None)
    expert_values = [_config_get(config, k) for k in _EXPERT_KEYS] if config is not None else []
    if any(isinstance(v, int) and v > 1 for v in expert_values):
        raise UnknownArchitectureError(
            f"the architecture {model_type!r} looks like a Mixture of Experts but no moelens adapter knows it.",
            hint=f"{len(FAMILIES)} transformers families are supported; run `moelens families` to list them.",
        )
    raise NotMoEModelError(
        f"the model ({model_type or type(model).__name__}) has no Mixture-of-Experts layers;"
        " moelens traces routers, so it needs an MoE model (run `moelens families` for the list)."
    )


def plan_model(model: Any) -> ModelPlan:
    """Describe where ``model`` routes. Raises for non-MoE models and unknown architectures."""
    modules = dict(model.named_modules())
    all_router_classes = {cls for spec in FAMILIES.values() for cls in spec.routers}
    found = {path: type(m).__name__ for path, m in modules.items() if type(m).__name__ in all_router_classes}
    spec = _detect_family(model, found)
    paths = [p for p, cls in found.items() if cls in spec.routers]
    if not paths:
        raise NotMoEModelError(
            f"the {spec.family} model has no MoE layers in this configuration (every layer is dense);"
            " nothing to trace."
        )
    config = getattr(model, "config", None)

    # Layer stacks in registration order (encoder before decoder in seq2seq models).
    stacks: dict[str, int] = {}
    located = []
    for path in paths:
        match = _LAYER.search(path)
        if match is None:
            raise UnknownArchitectureError(f"cannot tell which layer the router {path} belongs to.")
        container = path[: match.start(2) - 1]
        stack = container.rsplit(".", 1)[0] if "." in container else ""
        if container not in stacks:
            stacks[container] = len(modules[container]) if container in modules else int(match.group(2)) + 1
        located.append((path, container, stack, int(match.group(2))))
    offsets, total = {}, 0
    for container, depth in stacks.items():
        offsets[container], total = total, total + depth

    sites = []
    default_k = spec.fixed_top_k or _config_get(config, spec.top_k_key)
    default_e = _config_get(config, spec.num_experts_key)
    extra = _config_get(config, "zero_expert_num") if spec.logits_kind == "with_extra" and spec.family == "longcat_flash" else 0
    for site, (path, container, stack, index) in enumerate(located):
        module = modules[path]
        layer = offsets[container] + index
        e = getattr(module, "num_experts", None) or _per_layer(default_e, index)
        k = getattr(module, "top_k", None) or _per_layer(default_k, index)
        if e is None or k is None:
            raise UnknownArchitectureError(f"cannot read the number of experts or k for the router {path}.")
        tag = _site_tag(spec, path)
        sites.append(RouterSite(site, path, layer, tag, tag not in spec.secondary_tags,
                                int(e) + int(extra or 0), int(k), stack))
    primary = [s for s in sites if s.primary] or sites
    return ModelPlan(
        family=spec,
        sites=tuple(sites),
        num_layers=total,
        num_experts=max(s.num_experts for s in primary),
        top_k=max(s.top_k for s in primary),
        num_shared_experts=_shared_count(spec, config),
        stacks=tuple(dict.fromkeys(s.stack for s in sites)),
    )
