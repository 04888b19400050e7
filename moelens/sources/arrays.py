"""Shared assembly of routed-expert arrays (vLLM, SGLang): per-request arrays in, an :class:`ImportedRun` out.

Both engines return, per request, an array ``[tokens, num_hidden_layers, top_k]`` of the expert
ids every token was routed to, one row per token that went through the model (the prompt and
every generated token but the last). Dense layers carry no routing: older builds leave the
buffer's zeros there, newer ones ``-1``. :func:`assemble` turns a list of such requests into
documents: it maps ids (:func:`~moelens.sources.base.logical_ids`), finds the MoE layers (the
columns with routing, unless given), turns a row of ``k >= 2`` zeros in a MoE layer into "not
recorded", and checks that every request has the same layer count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moelens.errors import ConfigError, EngineFormatError
from moelens.sources.base import Doc, ImportedRun, ImportOptions, ImportSpec, logical_ids, moe_layer_mask

__all__ = ["Request", "assemble"]


@dataclass
class Request:
    """One request's routing before assembly. ``routes`` rows align with ``token_ids``."""

    routes: Any  # [n, layers, slots] integer ids as the engine returned them
    token_ids: np.ndarray | None  # [n] (-1 where unknown), or None
    meta: dict[str, Any] = field(default_factory=dict)
    what: str = "request"


def _fast(raw: Any, options: ImportOptions, E: int) -> np.ndarray | None:
    """``[layers]`` max id of each layer when the ids need no mapping (only ``-1`` as "none", all
    below ``E``): then documents keep views of the engine's arrays and are converted while they
    are written. None when the full conversion is needed (it also raises for bad ids)."""
    ids = np.asarray(raw)
    if (options.fused_shared_experts or options.physical_to_logical is not None or options.sentinels
            or ids.ndim != 3 or not np.issubdtype(ids.dtype, np.integer) or not ids.size or ids.dtype.itemsize > 8):
        return None
    layer_max = ids.max(axis=(0, 2))
    if int(layer_max.max()) >= E or int(ids.min()) < -1:
        return None
    return layer_max


def assemble(kind: str, requests: list[Request], options: ImportOptions, *, dataset: str,
             engine: dict[str, Any]) -> ImportedRun:
    """Validate and convert ``requests`` into an :class:`ImportedRun` (one document per request)."""
    if options.num_experts is None:
        raise ConfigError(f"{kind} routed-expert arrays do not record the number of experts; pass --num-experts E "
                          "(the model's routed experts per layer, e.g. n_routed_experts).")
    if not requests:
        raise EngineFormatError(f"no {kind} requests with routed experts to import.")
    E = options.num_experts
    converted = []  # per request: [layers, n, k] ids (a view of the engine's array, or converted int16)
    routed = None  # [layers] bool: the layer carries routing in some request
    shape = None
    for req in requests:
        layer_max = _fast(req.routes, options, E)
        if layer_max is not None:
            ids = np.asarray(req.routes).transpose(1, 0, 2)
        else:
            ids = logical_ids(req.routes, what=req.what, num_experts=E, options=options)
        if shape is None:
            shape = ids.shape
        elif ids.shape[0] != shape[0] or ids.shape[2] != shape[2]:
            raise EngineFormatError(f"{req.what}: {ids.shape[0]} layers x {ids.shape[2]} slots, but the first request "
                                    f"has {shape[0]} x {shape[2]}; every request must come from the same model.")
        if req.token_ids is not None and len(req.token_ids) != ids.shape[1]:
            raise EngineFormatError(f"{req.what}: {ids.shape[1]} routing rows for {len(req.token_ids)} tokens.")
        k = ids.shape[2]
        # a layer routes when an id >= 1 appears (k >= 2: a top-k never repeats, so a row of zeros is fill)
        has = (layer_max >= (1 if k >= 2 else 0)) if layer_max is not None else moe_layer_mask([ids], ids.shape[0], k)
        routed = has if routed is None else routed | has
        converted.append(ids)
    num_layers, k = shape[0], shape[2]
    if options.top_k is not None and options.top_k != k:
        raise EngineFormatError(f"the {kind} arrays have {k} slots per token but --top-k is {options.top_k}.")
    if options.moe_layers is not None:
        bad = [x for x in options.moe_layers if x >= num_layers]
        if bad:
            raise ConfigError(f"--moe-layers names layer {bad[0]} but the arrays have {num_layers} layers.")
        layers = np.array(options.moe_layers, dtype=np.int64)
    else:
        layers = np.flatnonzero(routed)
        if not len(layers):
            raise EngineFormatError(f"no layer of the {kind} arrays carries routing (all -1 or 0); nothing to import.")
    span = (slice(int(layers[0]), int(layers[-1]) + 1) if len(layers) == layers[-1] - layers[0] + 1 else layers)
    docs = [Doc(i, ids[span], None if req.token_ids is None else np.asarray(req.token_ids, dtype=np.int64),
                dict(req.meta)) for i, (req, ids) in enumerate(zip(requests, converted))]
    has_ids = all(d.token_ids is not None and bool((d.token_ids >= 0).all()) for d in docs)
    spec = ImportSpec(kind=kind, num_experts=E, top_k=k, layers=tuple(int(x) for x in layers), num_layers=num_layers,
                   dataset=dataset, model=options.model, token_ids=has_ids,
                   engine={**engine, "options": options.described(),
                           "dense_layers": sorted(set(range(num_layers)) - set(int(x) for x in layers))})
    return ImportedRun(spec, docs, zero_rows_unrecorded=True)
