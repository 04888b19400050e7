"""The run plan: every decision about a trace made once, before anything runs or is written.

:func:`make_run_plan` turns the :class:`~moelens.config.TraceConfig`, the loaded model and its
:class:`~moelens.models.discover.ModelPlan` into a frozen :class:`RunPlan`: which router sites are
recorded, how wide the stored rows are, which capture path reduces routing (torch hooks with a host
copy per batch, or the device record kernels), whether the model's forward needs the router
logits, and the window layout. Options that cannot work (a layer the model does not have, a
backend that is not installed) raise a typed error here, before the database is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moelens.config import TraceConfig
from moelens.errors import ConfigError
from moelens.models.discover import ModelPlan, RouterSite

__all__ = ["RunPlan", "make_run_plan", "kept_sites", "logits_width"]


@dataclass(frozen=True)
class RunPlan:
    cfg: TraceConfig
    model: ModelPlan
    sites: tuple[RouterSite, ...]  # the sites recorded (primary and secondary; the run's `sites` rows)
    layers: tuple[int, ...]  # their decoder-layer indices
    table_k: int  # choices per stored row
    logits_width: int  # columns of a stored logits row
    capture: str  # "torch" (hooks + one host copy per batch) or "triton" (device record kernels)
    need_logits: bool  # the hooks hand router logits to the collector
    device: str
    notes: tuple[str, ...]  # what the plan decided that a user should know (logged and printed)

    @property
    def site_ids(self) -> frozenset[int]:
        return frozenset(s.site for s in self.sites)

    @property
    def stride(self) -> int:
        return self.cfg.stride or self.cfg.max_length

    def windows_meta(self) -> dict[str, Any]:
        """The window layout, recorded in the run's config."""
        return {"max_length": self.cfg.max_length, "stride": self.stride,
                "carried_context": self.cfg.max_length - self.stride}


def kept_sites(model: ModelPlan, layers: tuple[int, ...] | None) -> tuple[RouterSite, ...]:
    """The sites a run records: the asked layers (default all); never a decoder stack's routers,
    which documents (encoder inputs of seq2seq models) do not reach."""
    return tuple(s for s in model.sites if (layers is None or s.layer in layers) and s.tag != "decoder")


def logits_width(model: ModelPlan, sites: tuple[RouterSite, ...]) -> int:
    """Columns of a stored logits row: E (zero-compute experts included, plus a skip class where the
    router scores one), or the 2 x sqrt(E) product-key scores of product-key routers."""
    if not model.family.logits_per_expert:
        return 2 * int(round(model.num_experts ** 0.5))
    return max(s.num_experts for s in sites) + int(model.family.skip_class)


def _check_layers(cfg: TraceConfig, model: ModelPlan) -> None:
    if cfg.layers is None:
        return
    routed = sorted({s.layer for s in model.sites if s.tag != "decoder"})
    missing = [layer for layer in cfg.layers if layer not in routed]
    if missing:
        shown = ", ".join(map(str, routed[:12])) + (" ..." if len(routed) > 12 else "")
        raise ConfigError(f"layers {', '.join(map(str, missing))} are not MoE layers of this {model.family.family} model"
                          f" ({model.num_layers} layers; MoE layers: {shown}).")


def _capture_path(cfg: TraceConfig, model: ModelPlan, device: str, remote: bool) -> tuple[str, list[str]]:
    """``torch`` or ``triton`` for this run, and the notes that explain the choice."""
    import torch

    from moelens.kernels import choose_backend

    if remote:
        return "torch", []
    if cfg.device_map is not None:  # routers live on several devices: one host copy per batch handles them
        if cfg.capture == "triton" or cfg.mode == "stats":
            raise ConfigError("--device-map spreads the routers over several devices; the device kernels (--capture"
                              " triton, --mode stats) need them on one: use --capture torch --mode routes.")
        return "torch", [f"device map {cfg.device_map}: capturing with the torch path on every router's device"]
    backend = choose_backend(cfg.capture, torch.device(device))
    if cfg.mode == "stats":
        return backend, [f"stats mode: aggregates on {device} with the {backend} kernels"]
    if backend == "triton" and not model.family.device_records:
        return "torch", [f"{model.family.family} routers do not return [tokens, experts] logits; capturing with the"
                         " torch path instead of the Triton record kernels"]
    if backend == "triton":
        return "triton", [f"capture path: Triton record kernels on {device}"]
    if cfg.capture != "torch":
        return "torch", [f"capture path: torch (no CUDA device for the Triton kernels on {device})"]
    return "torch", []


def make_run_plan(cfg: TraceConfig, loaded: Any, model: ModelPlan) -> RunPlan:
    """Decide everything about the run; raise :class:`ConfigError` for options that cannot work."""
    _check_layers(cfg, model)
    if cfg.backend == "nnsight":
        try:
            import nnsight  # noqa: F401
        except ImportError:
            raise ConfigError("the nnsight backend needs nnsight: pip install 'moelens[nnsight]'"
                              " (or trace with the torch backend).") from None
    sites = kept_sites(model, cfg.layers)
    capture, notes = _capture_path(cfg, model, loaded.device, loaded.dtype == "remote")
    return RunPlan(
        cfg=cfg, model=model, sites=sites, layers=tuple(sorted({s.layer for s in sites})),
        table_k=max(s.top_k for s in sites), logits_width=logits_width(model, sites), capture=capture,
        need_logits=cfg.logits or cfg.mode == "stats" or capture == "triton", device=loaded.device,
        notes=tuple(notes))
