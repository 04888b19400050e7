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

from dataclasses import dataclass, field
from typing import Any, Mapping

from moelens.errors import NotMoEModelError, UnknownArchitectureError
from moelens.models.families import FAMILIES, family_for_router_class, router_class_names
from moelens.models.family_spec import Family

__all__ = ["RouterSite", "ModelPlan", "plan_model", "locate_layer", "config_get"]

# config keys that mean "this is a mixture of experts" when the family is unknown
_EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts", "num_experts_per_tok")


@dataclass(frozen=True)
class RouterSite:
    """One place where routing decisions are made once per forward call: a router module and, for
    looped layers, one pass through it."""

    site: int
    path: str
    layer: int
    tag: str
    primary: bool
    num_experts: int
    top_k: int
    stack: str  # path of the module that owns the layer list (its inputs give positions)
    loop_pass: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"site": self.site, "path": self.path, "layer": self.layer, "tag": self.tag,
                "primary": self.primary, "num_experts": self.num_experts, "top_k": self.top_k,
                "pass": self.loop_pass}


@dataclass(frozen=True)
class ModelPlan:
    family: Family
    sites: tuple[RouterSite, ...]
    num_layers: int
    num_experts: int
    top_k: int
    num_shared_experts: int
    stacks: tuple[str, ...]
    generic: bool = False  # found by structure, not by the table: every call is verified
    # router path -> path of the experts module it dispatches to (what --verify compares against)
    experts_paths: Mapping[str, str] = field(default_factory=dict)

    @property
    def moe_layers(self) -> tuple[int, ...]:
        return tuple(sorted({s.layer for s in self.sites if s.primary}))

    @property
    def dense_layers(self) -> tuple[int, ...]:
        moe = set(self.moe_layers)
        return tuple(i for i in range(self.num_layers) if i not in moe)

    @property
    def looped_layers(self) -> dict[int, int]:
        """``{layer: passes}`` for layers whose router runs more than once per forward."""
        out: dict[int, int] = {}
        for s in self.sites:
            out[s.layer] = max(out.get(s.layer, 1), s.loop_pass + 1)
        return {layer: n for layer, n in out.items() if n > 1}

    def sites_by_path(self) -> dict[str, list[RouterSite]]:
        """Sites of each router module, in pass order."""
        out: dict[str, list[RouterSite]] = {}
        for s in self.sites:
            out.setdefault(s.path, []).append(s)
        return out

    def metadata(self) -> dict[str, Any]:
        """What the store records about the model's routing (runs table + config JSON)."""
        spec = self.family
        return {
            "family": spec.family,
            "convention": spec.convention,
            "scoring": spec.scoring_function,
            "scoring_group": spec.scoring,
            "scoring_rule": spec.rule,
            "logits_kind": spec.logits,
            "num_layers": self.num_layers,
            "moe_layers": list(self.moe_layers),
            "dense_layers": list(self.dense_layers),
            "looped_layers": {str(layer): n for layer, n in self.looped_layers.items()},
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "num_shared_experts": self.num_shared_experts,
            "shared_experts": spec.shared.words,
            "generic_adapter": self.generic,
            "notes": spec.notes,
            "sites": [s.as_dict() for s in self.sites],
        }


def config_get(config: Any, key: str | None) -> Any:
    """Look ``key`` up (dotted for nested configs) on the config or its text sub-config."""
    if key is None or config is None:
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


def _shared_count(spec: Family, config: Any) -> int:
    value = _per_layer(config_get(config, spec.shared.key), 0)
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


def locate_layer(modules: dict[str, Any], path: str) -> tuple[str, int]:
    """``(container, index)``: the outermost list of layers holding ``path`` and the layer's index in it.

    The container is an ``nn.ModuleList`` whose item (a decoder or encoder layer) contains the
    module; the outermost one is taken because layers may hold lists of their own (T5 blocks).
    """
    import torch

    parts = path.split(".")
    for depth in range(1, len(parts)):
        container = ".".join(parts[:depth - 1]) if depth > 1 else ""
        item = parts[depth - 1]
        if item.isdigit() and isinstance(modules.get(container), torch.nn.ModuleList):
            return container, int(item)
    raise UnknownArchitectureError(f"cannot tell which layer the router {path} belongs to: it is not inside a"
                                   " list of layers (nn.ModuleList).")


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
        from moelens.models.generic import plan_generic

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
        e = getattr(module, "num_experts", None) or _per_layer(default_e, index)
        k = getattr(module, "top_k", None) or _per_layer(default_k, index)
        if e is None or k is None:
            raise UnknownArchitectureError(f"cannot read the number of experts or k for the router {path}.")
        tag = _site_tag(spec, path)
        return int(e) + zero, int(k), tag, tag not in spec.secondary_tags

    experts = {p: f"{p.rsplit('.', 1)[0]}.experts" for p in paths if "." in p}
    return build_plan(spec, modules, paths, describe, shared=_shared_count(spec, config),
                      passes=lambda index: _passes(spec, config, index),
                      experts_paths={r: e for r, e in experts.items() if e in modules})


def build_plan(spec: Family, modules: dict[str, Any], paths: list[str], describe: Any, *, shared: int,
               passes: Any = lambda index: 1, generic: bool = False,
               experts_paths: Mapping[str, str] | None = None) -> ModelPlan:
    """Sites for the router ``paths`` (``describe(path, index) -> (E, k, tag, primary)``), numbered in
    module order, one per loop pass; layers are numbered across stacks (encoder before decoder)."""
    stacks: dict[str, int] = {}
    located = []
    for path in paths:
        container, index = locate_layer(modules, path)
        stacks.setdefault(container, len(modules[container]))
        stack = container.rsplit(".", 1)[0] if "." in container else ""
        located.append((path, container, stack, index))
    offsets, total = {}, 0
    for container, depth in stacks.items():
        offsets[container], total = total, total + depth
    sites: list[RouterSite] = []
    for path, container, stack, index in located:
        e, k, tag, primary = describe(path, index)
        for loop_pass in range(passes(index)):
            sites.append(RouterSite(len(sites), path, offsets[container] + index, tag, primary, e, k, stack, loop_pass))
    primary_sites = [s for s in sites if s.primary] or sites
    return ModelPlan(
        family=spec,
        sites=tuple(sites),
        num_layers=total,
        num_experts=max(s.num_experts for s in primary_sites),
        top_k=max(s.top_k for s in primary_sites),
        num_shared_experts=shared,
        stacks=tuple(dict.fromkeys(s.stack for s in sites)),
        generic=generic,
        experts_paths=dict(experts_paths or {}),
    )
