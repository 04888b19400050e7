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
from moelens.models.adapters import RawRoute, adapt_router_output, dbrx_route, doge_route
from moelens.models.discover import ModelPlan, RouterSite, config_get

__all__ = ["attach", "Attachment", "step_context", "past_length"]


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def _transformers_version() -> str:
    try:
        import transformers

        return transformers.__version__
    except Exception:  # noqa: BLE001 - only used in a message
        return "unknown"


def _cache_length(cache: Any) -> int | None:
    """Tokens a KV cache object holds, or None if it cannot say."""
    try:
        length = cache.get_seq_length()
    except Exception:  # noqa: BLE001 - some caches need a layer index, or are not initialised
        return None
    return int(length) if isinstance(length, (int, torch.Tensor)) else None


def _caches(arguments: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every argument that is a KV cache object, whatever the keyword (``past_key_values``, ``cache``...)."""
    return [(name, value) for name, value in arguments.items()
            if value is not None and callable(getattr(value, "get_seq_length", None))]


def past_length(stack: str, arguments: dict[str, Any], batch: int, seq: int) -> int:
    """Tokens already in the KV cache before this call of ``stack``, from whatever the call carries.

    In order: ``cache_position`` (the first position written), a 2-D attention mask (generation
    keeps it one column per token, cached ones included: width - seq), a cache object under any
    keyword. A call with none of them has an empty cache. A call that carries a cache that cannot
    be read and nothing else raises :class:`CaptureError` naming the transformers version, instead
    of guessing.
    """
    position = arguments.get("cache_position")
    if isinstance(position, torch.Tensor) and position.numel():
        return int(position.reshape(-1)[0])
    mask = arguments.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[0] == batch and mask.shape[1] >= seq:
        return int(mask.shape[1]) - seq
    caches = _caches(arguments)
    for _, cache in caches:
        length = _cache_length(cache)
        if length is not None:
            return length
    if caches:
        names = ", ".join(f"{name} ({type(value).__name__})" for name, value in caches)
        raise CaptureError(
            f"cannot tell how many tokens the KV cache holds in a call of {stack or 'the model'}: it carries {names},"
            f" which does not report its length, and no cache_position or 2-D attention mask"
            f" (transformers {_transformers_version()}); pass an attention_mask.",
            hint="If this transformers version is new, report it: moelens reads the cache length to tell prefill"
                 " from decode.")
    return 0


def step_context(step: int, stack: str, arguments: dict[str, Any]) -> StepContext | None:
    """Build the context of one stack call from its bound arguments (None if no token inputs).

    Positions count real tokens only: from a 2-D attention mask when there is one (left padding
    included), else from 2-D ``position_ids``, else ``past + 0..seq-1``.
    """
    ids = arguments.get("input_ids")
    embeds = arguments.get("inputs_embeds")
    shape_source = ids if ids is not None else embeds
    if shape_source is None or shape_source.dim() < 2:
        return None
    batch, seq = int(shape_source.shape[0]), int(shape_source.shape[1])
    device = shape_source.device
    past = past_length(stack, arguments, batch, seq)
    mask = arguments.get("attention_mask")
    position_ids = arguments.get("position_ids")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[0] == batch and mask.shape[1] >= seq:
        m = mask.to(device=device, dtype=torch.long)
        positions = (m.cumsum(dim=1) - 1).clamp(min=0)[:, -seq:]
        valid = m[:, -seq:].bool()
    elif (isinstance(position_ids, torch.Tensor) and position_ids.dim() == 2 and position_ids.shape[-1] == seq
          and position_ids.shape[0] in (1, batch)):
        positions = position_ids.to(device=device, dtype=torch.long).expand(batch, seq)
        valid = torch.ones(batch, seq, dtype=torch.bool, device=device)
    else:
        positions = (torch.arange(seq, device=device) + past).expand(batch, seq)
        valid = torch.ones(batch, seq, dtype=torch.bool, device=device)
    return StepContext(step, stack, batch, seq, past, ids, valid.reshape(-1), positions.reshape(-1))


class Attachment:
    """Live hooks on one model. ``remove()`` (or leaving the ``with`` block) takes them all off.

    Hooks are installed once per router module; a router that runs several times in one forward
    (looped layers) emits each call under the site of its pass, counted from the call of its
    layer stack that started the forward.
    """

    def __init__(self, model: torch.nn.Module, plan: ModelPlan, sink: RoutingSink, *,
                 logits: bool = False, verify: bool = False, layers: Iterable[int] | None = None) -> None:
        self.model, self.plan, self.sink = model, plan, sink
        self.logits = logits
        self.verify = verify or plan.generic  # the generic adapter is always verified
        # zero-compute (identity) experts: ids E .. E + Z - 1 after the E routed ones
        zero_key = plan.family.zero_experts_key
        self._zero = int(config_get(getattr(model, "config", None), zero_key) or 0) if zero_key else 0
        keep = None if layers is None else set(layers)
        by_path = plan.sites_by_path()
        # every pass of a router is kept or dropped together (its layer decides)
        self.routers = {path: tuple(sites) for path, sites in by_path.items() if keep is None or sites[0].layer in keep}
        self.sites = tuple(s for sites in self.routers.values() for s in sites)
        self._handles: list[Any] = []
        self._step = -1
        self._current: dict[str, int] = {}
        self._calls: dict[str, int] = {}
        self._stash: dict[str, Any] = {}
        self._last: dict[str, RawRoute] = {}
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
        for path, sites in self.routers.items():
            module = modules[path]
            if convention == "B":
                self._handles.append(module.register_forward_hook(self._stash_hook(path)))
                experts = modules[f"{_parent(path)}.experts"]
                self._handles.append(experts.register_forward_pre_hook(self._experts_hook(path)))
            elif convention == "F":
                down = modules[f"{path}.down_embed"]
                self._handles.append(down.register_forward_pre_hook(self._stash_pre_hook(path)))
                self._handles.append(module.register_forward_hook(self._doge_hook(path)))
            else:
                self._handles.append(module.register_forward_hook(self._router_hook(path)))
            experts_path = self.plan.experts_paths.get(path)
            if self.verify and convention in ("A", "A+") and experts_path in modules:
                self._handles.append(modules[experts_path].register_forward_pre_hook(self._verify_hook(path)))

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
            for path, sites in self.routers.items():
                if sites[0].stack == stack:
                    self._calls[path] = 0
            if ctx is not None:
                self.sink.on_step(ctx)
        return hook

    def _site(self, path: str) -> RouterSite:
        """The site of this call of router ``path``: its pass within the current forward."""
        sites = self.routers[path]
        calls = self._calls.get(path, 0)
        self._calls[path] = calls + 1
        if calls < len(sites):
            return sites[calls]
        if self._current.get(sites[0].stack) is None:  # called outside a forward of its stack
            return sites[calls % len(sites)]
        raise CaptureError(
            f"router {path} ran {calls + 1} times in one forward; the family table says {len(sites)}"
            f" (transformers {_transformers_version()} may loop layers differently).",
            hint="Report the model and transformers version.")

    def _emit(self, path: str, route: RawRoute) -> None:
        site = self._site(path)
        if self.verify:
            self._last[path] = route
        step = self._current.get(site.stack, -1)
        self.sink.on_route(RouterEvent(site.site, step, route.experts, route.weights,
                                       route.logits if self.logits else None))

    def _router_hook(self, path: str):
        spec = self.plan.family

        def hook(module, args, output):
            self._emit(path, adapt_router_output(spec, output, module))
        return hook

    def _stash_hook(self, path: str):
        def hook(module, args, output):
            self._stash[path] = output
        return hook

    def _stash_pre_hook(self, path: str):
        def hook(module, args):
            self._stash[path] = args[0]
        return hook

    def _experts_hook(self, path: str):
        def hook(module, args):
            self._emit(path, dbrx_route(self._stash.pop(path, None), args))
        return hook

    def _doge_hook(self, path: str):
        def hook(module, args, output):
            indices = self._stash.pop(path, None)
            if indices is None:
                raise CaptureError(f"MoE block {path} routed without calling down_embed.")
            self._emit(path, doge_route(module, output[1], indices))
        return hook

    def _verify_hook(self, path: str):
        skip_class = self.plan.family.skip_class

        def hook(module, args):
            route = self._last.pop(path, None)
            if route is None or len(args) < 3:
                return
            ids, weights = args[1], args[2]
            # a skip choice reaches the experts masked to (expert 0, weight 0)
            captured = route.experts.clamp(min=0) if skip_class else route.experts
            same_size = ids.numel() == captured.numel() and weights.numel() == route.weights.numel()
            if same_size:
                ids, weights = ids.reshape(captured.shape).long(), weights.reshape(route.weights.shape)
            if same_size and self._zero:
                # identity experts reach the experts module as they are (transformers <= 5.24) or as
                # some routed id with weight 0, their output added beside the call (5.25)
                zero = captured >= self.routers[path][0].num_experts - self._zero
                moved = zero & (ids != captured)
                same_size = bool(torch.all(weights[moved] == 0))
                ids, weights = torch.where(moved, captured, ids), torch.where(moved, route.weights, weights)
            if not (same_size and torch.equal(captured, ids) and torch.equal(route.weights, weights)):
                raise CaptureError(
                    f"captured routing of {path} differs from what its experts received"
                    f" ({self.plan.family.family}, transformers {_transformers_version()}): the model routes"
                    " differently from what its adapter reads.",
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
