"""Attach capture hooks to a model and remove them again, whatever happens.

:func:`attach` registers plain PyTorch hooks for the sites of a
:class:`~moelens.models.discover.ModelPlan`:

* a forward pre-hook on every layer stack (``model.model``, ``encoder``, ``decoder``...) that
  reads the call's inputs (ids, attention mask, cache length) into a :class:`StepContext`;
* per router site, the hook its convention needs (forward hook on the router; for dbrx a
  pre-hook on the experts module; for doge a pre-hook on ``down_embed`` plus a hook on the block).

Hooks only read: they return ``None`` (a non-``None`` return would replace the module's output)
and never modify a tensor. All state lives on the :class:`Attachment`; nothing is module-global.
Use it as a context manager so hooks are removed in ``finally``, also after an exception.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterable

import torch

from moelens.errors import CaptureError
from moelens.hooks.events import RouterEvent, RoutingSink, StepContext
from moelens.models.adapters import RawRoute, adapt_router_output, dbrx_route, doge_route, zaya_mark_skips
from moelens.models.discover import ModelPlan, RouterSite

__all__ = ["attach", "Attachment", "step_context"]


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def _cache_length(cache: Any, cache_position: torch.Tensor | None) -> int:
    if cache is not None and hasattr(cache, "get_seq_length"):
        try:
            return int(cache.get_seq_length())
        except Exception:  # noqa: BLE001 - some caches need a layer index
            pass
    if cache_position is not None and cache_position.numel():
        return int(cache_position.reshape(-1)[0])
    return 0


def step_context(step: int, stack: str, arguments: dict[str, Any]) -> StepContext | None:
    """Build the context of one stack call from its bound arguments (None if no token inputs)."""
    ids = arguments.get("input_ids")
    embeds = arguments.get("inputs_embeds")
    shape_source = ids if ids is not None else embeds
    if shape_source is None or shape_source.dim() < 2:
        return None
    batch, seq = int(shape_source.shape[0]), int(shape_source.shape[1])
    device = shape_source.device
    cache = arguments.get("past_key_values", arguments.get("past_key_value"))
    past = _cache_length(cache, arguments.get("cache_position"))
    mask = arguments.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[0] == batch and mask.shape[1] >= seq:
        m = mask.to(device=device, dtype=torch.long)
        positions = (m.cumsum(dim=1) - 1).clamp(min=0)[:, -seq:]
        valid = m[:, -seq:].bool()
    else:
        positions = (torch.arange(seq, device=device) + past).expand(batch, seq)
        valid = torch.ones(batch, seq, dtype=torch.bool, device=device)
    return StepContext(step, stack, batch, seq, past, ids, valid.reshape(-1), positions.reshape(-1))


class Attachment:
    """Live hooks on one model. ``remove()`` (or leaving the ``with`` block) takes them all off."""

    def __init__(self, model: torch.nn.Module, plan: ModelPlan, sink: RoutingSink, *,
                 logits: bool = False, verify: bool = False, layers: Iterable[int] | None = None) -> None:
        self.model, self.plan, self.sink = model, plan, sink
        self.logits, self.verify = logits, verify
        keep = None if layers is None else set(layers)
        self.sites = tuple(s for s in plan.sites if keep is None or s.layer in keep)
        self._handles: list[Any] = []
        self._step = -1
        self._current: dict[str, int] = {}
        self._stash: dict[int, Any] = {}
        self._last: dict[int, RawRoute] = {}
        self._signatures: dict[str, inspect.Signature] = {}
        try:
            self._install()
        except BaseException:
            self.remove()
            raise

    # -- installation ---------------------------------------------------------------------
    def _install(self) -> None:
        modules = dict(self.model.named_modules())
        for stack in dict.fromkeys(s.stack for s in self.sites):
            module = modules[stack]
            self._signatures[stack] = inspect.signature(module.forward)
            self._handles.append(module.register_forward_pre_hook(self._stack_hook(stack), with_kwargs=True))
        convention = self.plan.family.convention
        for site in self.sites:
            module = modules[site.path]
            if convention == "B":
                self._handles.append(module.register_forward_hook(self._stash_hook(site)))
                experts = modules[f"{_parent(site.path)}.experts"]
                self._handles.append(experts.register_forward_pre_hook(self._experts_hook(site)))
            elif convention == "F":
                down = modules[f"{site.path}.down_embed"]
                self._handles.append(down.register_forward_pre_hook(self._stash_pre_hook(site)))
                self._handles.append(module.register_forward_hook(self._doge_hook(site)))
            else:
                self._handles.append(module.register_forward_hook(self._router_hook(site, module)))
            if self.verify and convention in ("A", "A+"):
                experts = modules.get(f"{_parent(site.path)}.experts")
                if experts is not None:
                    self._handles.append(experts.register_forward_pre_hook(self._verify_hook(site)))

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()
        self._stash.clear()
        self._last.clear()

    def __enter__(self) -> "Attachment":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    # -- hooks ------------------------------------------------------------------------------
    def _stack_hook(self, stack: str):
        def hook(module, args, kwargs):
            try:
                bound = dict(self._signatures[stack].bind_partial(*args, **kwargs).arguments)
            except TypeError:
                bound = dict(kwargs)
            if isinstance(bound.get("kwargs"), dict):
                bound = {**bound.pop("kwargs"), **bound}
            self._step += 1
            ctx = step_context(self._step, stack, bound)
            self._current[stack] = self._step
            if ctx is not None:
                self.sink.on_step(ctx)
        return hook

    def _emit(self, site: RouterSite, route: RawRoute) -> None:
        if self.verify:
            self._last[site.site] = route
        step = self._current.get(site.stack, -1)
        self.sink.on_route(RouterEvent(site.site, step, route.experts, route.weights,
                                       route.logits if self.logits else None))

    def _router_hook(self, site: RouterSite, router: torch.nn.Module):
        spec = self.plan.family

        def hook(module, args, output):
            route = adapt_router_output(spec.convention, spec.family, output, module)
            if spec.family == "zaya":
                route = zaya_mark_skips(route, router, site.num_experts)
            self._emit(site, route)
        return hook

    def _stash_hook(self, site: RouterSite):
        def hook(module, args, output):
            self._stash[site.site] = output
        return hook

    def _stash_pre_hook(self, site: RouterSite):
        def hook(module, args):
            self._stash[site.site] = args[0]
        return hook

    def _experts_hook(self, site: RouterSite):
        def hook(module, args):
            self._emit(site, dbrx_route(self._stash.pop(site.site, None), args))
        return hook

    def _doge_hook(self, site: RouterSite):
        def hook(module, args, output):
            indices = self._stash.pop(site.site, None)
            if indices is None:
                raise CaptureError(f"doge block {site.path} routed without calling down_embed.")
            self._emit(site, doge_route(module, output[1], indices))
        return hook

    def _verify_hook(self, site: RouterSite):
        def hook(module, args):
            route = self._last.get(site.site)
            if route is None or len(args) < 3:
                return
            ids, weights = args[1], args[2]
            captured = route.experts.clamp(min=0) if self.plan.family.family == "zaya" else route.experts
            if not (torch.equal(captured, ids.reshape(captured.shape).long())
                    and torch.equal(route.weights, weights.reshape(route.weights.shape))):
                raise CaptureError(
                    f"captured routing of {site.path} differs from what its experts received;"
                    " this transformers version routes differently from the family table.",
                    hint="Report the model and transformers version.",
                )
        return hook


def attach(model: torch.nn.Module, plan: ModelPlan, sink: RoutingSink, *, logits: bool = False,
           verify: bool = False, layers: Iterable[int] | None = None) -> Attachment:
    """Install capture hooks for ``plan`` on ``model``, emitting into ``sink``.

    Args:
        logits: also hand the router logits to the sink (they are dropped otherwise).
        verify: check on every call that the captured ids and weights equal what the experts
            module receives (conventions A/A+); raises :class:`CaptureError` on a mismatch.
        layers: only these decoder-layer indices (default: all router sites).
    """
    return Attachment(model, plan, sink, logits=logits, verify=verify, layers=layers)
