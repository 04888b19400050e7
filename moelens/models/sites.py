"""Router sites and the model plan: what capture needs to know about where a model routes.

:class:`RouterSite` is one place where routing decisions are made once per forward call (a router
module, and for looped layers one pass through it); :class:`ModelPlan` collects a model's sites with
its family row and the metadata recorded in the store. :func:`build_plan` numbers sites from router
paths, reading each router's layer from the module tree (:func:`locate_layer`), never from names.
Both discovery by the family table (:mod:`moelens.models.discover`) and by structure
(:mod:`moelens.models.generic`) build plans here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from moelens.errors import UnknownArchitectureError
from moelens.models.family_spec import Family

__all__ = ["RouterSite", "ModelPlan", "build_plan", "locate_layer", "config_get", "per_layer"]


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


def per_layer(value: Any, layer: int) -> Any:
    if isinstance(value, (list, tuple)):
        return value[layer] if layer < len(value) else value[-1]
    return value


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
