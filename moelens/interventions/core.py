"""Interventions on a running transformers MoE model: ablate, prune, force, scale and merge experts.

:func:`intervene` is a context manager beside :func:`moelens.capture`. It finds the model's router
sites through the family table (the same plan capture uses), changes what the routers decide or what
the experts compute while the block is open, and restores everything on exit, errors included:

* **ablate** / **prune** ``{layer: [expert, ...]}``: the experts' router logits are masked (-inf)
  before selection, and any selection-only bias too, so the router's own code picks each token's
  next choice with its own normalisation (softmax over the rest, renormalisation, groups). The
  logits are masked where the router computes them: the first linear map inside the router's
  forward whose output has one column per expert (a torch function mode scoped to that call).
  ``prune`` is the same computation, named for what a pruned checkpoint does; it is exportable.
* **force** ``{layer: [expert, ...]}``: the tokens selected by ``where`` go to those experts. The
  forced ids take the token's first slots; each slot keeps the gate weight the router gave it (the
  token's own top-k weights, slot by slot), the remaining slots keep the token's own choices that
  are not forced. Other tokens are untouched.
* **scale** ``{layer: {expert: factor}}``: the expert's gate weight is multiplied by ``factor``
  after the family's normalisation (what the experts module receives).
* **merge** ``{layer: [(a, b), ...]}``: experts ``a`` and ``b`` are both replaced by their
  usage-weighted average (``usage={layer: {expert: count}}``, equal weights without it), in the
  family's expert layout (fused ``[E, ...]`` parameters or one module per expert). Both ids then reach
  the same merged expert, which is what routing both ids to one expert computes.

Force and scale edit the router's output ``(logits, weights, indices)`` (conventions A and A+);
other conventions raise :class:`~moelens.errors.InterventionError`. Capture can run inside an
intervention and records the new routes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from moelens.errors import InterventionError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["intervene", "Intervention", "describe"]

ROUTER_OUTPUT_CONVENTIONS = ("A", "A+")


def _norm_experts(value: Mapping[int, Iterable[int]] | None) -> dict[int, tuple[int, ...]]:
    return {int(layer): tuple(sorted({int(e) for e in experts})) for layer, experts in (value or {}).items()}


def describe(*, ablate=None, prune=None, force=None, scale=None, merge=None) -> str:
    """One line for interventions given as :func:`intervene`'s arguments, e.g. ``ablate L2:E5,E7; scale L1:E3x0.5``."""
    parts = []
    for name, value in (("ablate", ablate), ("prune", prune), ("force", force)):
        for layer, experts in sorted((value or {}).items()):
            parts.append(f"{name} L{layer}:" + ",".join(f"E{e}" for e in experts))
    for layer, factors in sorted((scale or {}).items()):
        parts.append(f"scale L{layer}:" + ",".join(f"E{e}x{f:g}" for e, f in sorted(factors.items())))
    for layer, pairs in sorted((merge or {}).items()):
        parts.append(f"merge L{layer}:" + ",".join(f"E{a}+E{b}" for a, b in pairs))
    return "; ".join(parts) or "none"


class Intervention:
    """An open intervention (see the module docstring); use :func:`intervene` to make one."""

    def __init__(self, model: Any, *, ablate=None, prune=None, force=None, scale=None, merge=None,
                 usage=None, where=None) -> None:
        from moelens.models.discover import plan_model

        self.model = model
        self.plan = plan_model(model)
        self.ablate = _norm_experts(ablate)
        self.prune = _norm_experts(prune)
        self.force = {int(k): tuple(int(e) for e in v) for k, v in (force or {}).items()}
        self.scale = {int(k): {int(e): float(f) for e, f in v.items()} for k, v in (scale or {}).items()}
        self.merge = {int(k): tuple((int(a), int(b)) for a, b in v) for k, v in (merge or {}).items()}
        self.usage = {int(k): {int(e): float(c) for e, c in v.items()} for k, v in (usage or {}).items()}
        self.where = where
        self._mask_now: torch.Tensor | None = None
        self._undo: list[Callable[[], None]] = []
        self._check()

    # -- description ------------------------------------------------------------------------

    @property
    def spec(self) -> dict[str, Any]:
        """A canonical JSON-able description (stored with every measured effect)."""
        out: dict[str, Any] = {}
        for name in ("ablate", "prune", "force"):
            value = getattr(self, name)
            if value:
                out[name] = {str(k): list(v) for k, v in sorted(value.items())}
        if self.scale:
            out["scale"] = {str(k): {str(e): f for e, f in sorted(v.items())} for k, v in sorted(self.scale.items())}
        if self.merge:
            out["merge"] = {str(k): [list(p) for p in v] for k, v in sorted(self.merge.items())}
        return out

    def describe(self) -> str:
        """One line, e.g. ``ablate L2:E5,E7``."""
        return describe(ablate=self.ablate, prune=self.prune, force=self.force, scale=self.scale, merge=self.merge)

    def __repr__(self) -> str:
        return f"Intervention({self.describe()})"

    def to_json(self) -> str:
        return json.dumps(self.spec, sort_keys=True)

    # -- checks -----------------------------------------------------------------------------

    def _sites(self, layer: int):
        sites = [s for s in self.plan.sites if s.layer == layer and s.primary]
        if not sites:
            moe = ", ".join(str(x) for x in self.plan.moe_layers)
            raise InterventionError(f"layer {layer} has no router in this {self.plan.family.family} model"
                                    f" (MoE layers: {moe}).")
        return sites

    def _check(self) -> None:
        family = self.plan.family
        edits_output = bool(self.force or self.scale)
        if edits_output and family.convention not in ROUTER_OUTPUT_CONVENTIONS:
            raise InterventionError(f"force and scale edit the router output (logits, weights, indices); the"
                                    f" {family.family} router (convention {family.convention}) returns another"
                                    " form. ablate, prune and merge work on it.")
        if family.convention in ("E", "F") and (self.ablate or self.prune):
            raise InterventionError(f"ablate and prune mask router logits; the {family.family} router (convention"
                                    f" {family.convention}) does not select on per-expert logits.")
        layers: dict[str, Iterable[tuple[int, Iterable[int]]]] = {
            "ablate": self.ablate.items(), "prune": self.prune.items(), "force": self.force.items(),
            "scale": ((k, v.keys()) for k, v in self.scale.items()),
            "merge": ((k, [e for p in v for e in p]) for k, v in self.merge.items()),
        }
        for name, items in layers.items():
            for layer, experts in items:
                site = self._sites(layer)[0]
                for e in experts:
                    if not 0 <= e < site.num_experts:
                        raise InterventionError(f"{name}: expert {e} is out of range at layer {layer}"
                                                f" (experts 0..{site.num_experts - 1}).")
        for layer, experts in {**self.ablate, **self.prune}.items():
            left = self._sites(layer)[0]
            if len(set(self.ablate.get(layer, ())) | set(self.prune.get(layer, ()))) > left.num_experts - left.top_k:
                raise InterventionError(f"layer {layer}: removing {len(experts)} experts leaves fewer than k ="
                                        f" {left.top_k} to choose from.")
        for layer, experts in self.force.items():
            k = self._sites(layer)[0].top_k
            if not 0 < len(experts) <= k or len(set(experts)) != len(experts):
                raise InterventionError(f"force: layer {layer} takes 1 to k = {k} distinct experts, got {list(experts)}.")
        if self.force and self.where is None:
            raise InterventionError("force needs the tokens to route: pass where= (a bool mask [batch, tokens] or a"
                                    " function of input_ids).")
        for layer, pairs in self.merge.items():
            if any(a == b for a, b in pairs):
                raise InterventionError(f"merge: layer {layer} pairs an expert with itself.")

    # -- open / close -----------------------------------------------------------------------

    def __enter__(self) -> "Intervention":
        from moelens.interventions import routing, weights

        try:
            modules = dict(self.model.named_modules())
            masked: dict[str, set[int]] = {}
            for layer, experts in {**self.prune, **self.ablate}.items():
                for site in self._sites(layer):
                    masked.setdefault(site.path, set()).update(self.ablate.get(layer, ()))
                    masked[site.path].update(self.prune.get(layer, ()))
            for path, experts in masked.items():
                self._undo += routing.mask_router(modules, path, sorted(experts), self._sites_by_path(path).num_experts)
            if self.force or self.scale:
                self._undo.append(routing.watch_inputs(self.model, self))
                for layer in sorted(set(self.force) | set(self.scale)):
                    for site in self._sites(layer):
                        self._undo.append(routing.edit_output(modules[site.path], self.plan.family, site,
                                                              self.force.get(layer), self.scale.get(layer), self))
            for layer, pairs in self.merge.items():
                site = self._sites(layer)[0]
                experts_path = self.plan.experts_paths.get(site.path) or f"{site.path.rsplit('.', 1)[0]}.experts"
                if experts_path not in modules:
                    raise InterventionError(f"merge: no experts module at {experts_path} for layer {layer}.")
                self._undo.append(weights.merge_experts(modules[experts_path], site.num_experts, pairs,
                                                        self.usage.get(layer, {})))
        except BaseException:
            self._restore()
            raise
        return self

    def _sites_by_path(self, path: str):
        return next(s for s in self.plan.sites if s.path == path)

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        while self._undo:
            self._undo.pop()()

    # -- token selection for force ------------------------------------------------------------

    def set_where(self, mask: Any) -> None:
        """Select the tokens to force for the next calls (a bool tensor ``[batch, tokens]``)."""
        self.where = mask

    def token_mask(self, input_ids: Any, tokens: int) -> torch.Tensor | None:
        """The flattened bool mask of the tokens to force in the current call, if any."""
        import torch

        where = self.where
        if where is None:
            return None
        mask = where(input_ids) if callable(where) else where
        mask = torch.as_tensor(mask, dtype=torch.bool).reshape(-1)
        if mask.numel() != tokens:
            raise InterventionError(f"force: where= selects {mask.numel()} tokens but the router saw {tokens};"
                                    " give a mask shaped like the call's input_ids.")
        return mask

    def export(self, path: str) -> None:
        """Save the model with this intervention applied (see :mod:`moelens.interventions.export`)."""
        from moelens.interventions.export import export_model

        export_model(self, path)


def intervene(model: Any, *, ablate: Mapping[int, Iterable[int]] | None = None,
              prune: Mapping[int, Iterable[int]] | None = None, force: Mapping[int, Iterable[int]] | None = None,
              scale: Mapping[int, Mapping[int, float]] | None = None,
              merge: Mapping[int, Iterable[tuple[int, int]]] | None = None,
              usage: Mapping[int, Mapping[int, float]] | None = None, where: Any = None) -> Intervention:
    """Change what a transformers MoE model's routers decide (see the module docstring).

    Layers are moelens' layer indices (the ``layer`` column of the routes view).

        >>> with moelens.intervene(model, ablate={2: [5, 7]}):       # doctest: +SKIP
        ...     out = model(**inputs)
        >>> with moelens.intervene(model, ablate={2: [5]}), moelens.capture(model) as cap:  # doctest: +SKIP
        ...     model(**inputs)                                        # where did expert 5's tokens go?
    """
    return Intervention(model, ablate=ablate, prune=prune, force=force, scale=scale, merge=merge, usage=usage,
                        where=where)
