"""The nnsight backend: the same routing events as the torch hooks, read through nnsight.

nnsight runs a forward inside ``model.trace(...)`` and hands back the values saved there; with
``remote=True`` the same trace runs on a model hosted by NDIF (the model is then an
``nnsight.LanguageModel`` whose weights never load locally). :class:`NNsightRunner` saves each
router's output (or, for dbrx and doge, the experts' inputs) in execution order - nnsight needs
envoys accessed in the order the modules run - and feeds them to the same adapters as
:mod:`moelens.hooks.attach`, so both backends emit identical :class:`RouterEvent` objects.
"""

from __future__ import annotations

from typing import Any, Iterable

from moelens.errors import ConfigError
from moelens.hooks.attach import step_context
from moelens.hooks.events import RouterEvent, RoutingSink
from moelens.models.adapters import adapt_router_output, dbrx_route, doge_route
from moelens.models.discover import ModelPlan, RouterSite

__all__ = ["NNsightRunner"]


def _envoy(root: Any, path: str) -> Any:
    envoy = root
    for part in path.split("."):
        envoy = envoy[int(part)] if part.isdigit() else getattr(envoy, part)
    return envoy


def _execution_order(site: RouterSite) -> tuple[int, int]:
    # within a layer, attention runs before the MLP (jetmoe's mixture-of-attention router)
    return site.layer, 0 if site.tag == "attention" else 1


class NNsightRunner:
    """Run forwards through nnsight and emit routing events into ``sink``.

    Args:
        model: a ``torch.nn.Module`` (wrapped with ``nnsight.NNsight``) or an nnsight model
            (``LanguageModel``) already wrapping one, e.g. for remote execution.
        remote: pass ``remote=True`` to nnsight's trace (NDIF-hosted models; needs an API key).
    """

    def __init__(self, model: Any, plan: ModelPlan, sink: RoutingSink, *, logits: bool = False,
                 layers: Iterable[int] | None = None, remote: bool = False) -> None:
        import nnsight

        if any(s.tag in ("encoder", "decoder") for s in plan.sites):
            raise ConfigError("the nnsight backend traces decoder-only models; use --backend torch for "
                              f"{plan.family.family}.")
        if plan.looped_layers:
            raise ConfigError(f"{plan.family.family} runs some layers several times per forward; the nnsight backend"
                              " reads one output per module, so use --backend torch for it.")
        if plan.generic:
            raise ConfigError(f"{plan.family.family} is captured by the generic adapter, which verifies every call"
                              " with torch hooks; use --backend torch for it.")
        self.wrapped = model if isinstance(model, nnsight.NNsight) else nnsight.NNsight(model)
        module = getattr(self.wrapped, "_module", None) or getattr(self.wrapped, "_model", None)
        self._modules = dict((module if isinstance(model, nnsight.NNsight) else model).named_modules())
        self.plan, self.sink, self.logits, self.remote = plan, sink, logits, remote
        keep = None if layers is None else set(layers)
        self.sites = sorted((s for s in plan.sites if keep is None or s.layer in keep), key=_execution_order)
        self._step = -1

    def _requests(self) -> list[tuple[RouterSite, str, Any]]:
        conv = self.plan.family.convention
        requests = []
        for site in self.sites:
            if conv == "B":
                parent = site.path.rsplit(".", 1)[0]
                requests.append((site, "logits", _envoy(self.wrapped, site.path)))
                requests.append((site, "experts_inputs", _envoy(self.wrapped, f"{parent}.experts")))
            elif conv == "F":
                requests.append((site, "down_inputs", _envoy(self.wrapped, f"{site.path}.down_embed")))
                requests.append((site, "block_output", _envoy(self.wrapped, site.path)))
            else:
                requests.append((site, "output", _envoy(self.wrapped, site.path)))
        return requests

    def __call__(self, **inputs: Any) -> None:
        """One forward with ``inputs`` (``input_ids``, ``attention_mask``...); emits its events."""
        import nnsight

        requests = self._requests()
        with self.wrapped.trace(**inputs, remote=self.remote):
            saved = nnsight.save([])
            for _site, kind, envoy in requests:
                saved.append(envoy.inputs if kind.endswith("inputs") else envoy.output)
        self._step += 1
        stack = self.sites[0].stack if self.sites else ""
        ctx = step_context(self._step, stack, inputs)
        if ctx is not None:
            self.sink.on_step(ctx)
        self._emit(requests, list(saved))

    def _emit(self, requests: list[tuple[RouterSite, str, Any]], values: list[Any]) -> None:
        spec = self.plan.family
        modules = self._modules
        pending: dict[int, Any] = {}
        for (site, kind, _), value in zip(requests, values):
            if kind in ("logits", "down_inputs"):
                pending[site.site] = value
                continue
            if kind == "experts_inputs":
                route = dbrx_route(pending.pop(site.site, None), value[0])
            elif kind == "block_output":
                indices = pending.pop(site.site)[0][0]
                route = doge_route(modules[site.path], value[1], indices)
            else:
                route = adapt_router_output(spec, value, modules.get(site.path))
            self.sink.on_route(RouterEvent(site.site, self._step, route.experts, route.weights,
                                           route.logits if self.logits else None))
