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
from moelens.sources.base import Doc, ImportedRun, ImportOptions, RunSpec, logical_ids, moe_layer_mask, \
    unrecorded_zero_rows

__all__ = ["Request", "assemble"]


@dataclass
class Request:
    """One request's routing before assembly. ``routes`` rows align with ``token_ids``."""

    routes: Any  # [n, layers, slots] integer ids as the engine returned them
    token_ids: np.ndarray | None  # [n] (-1 where unknown), or None
    meta: dict[str, Any] = field(default_factory=dict)
    what: str = "request"


def assemble(kind: str, requests: list[Request], options: ImportOptions, *, dataset: str,
             engine: dict[str, Any]) -> ImportedRun:
    """Validate and convert ``requests`` into an :class:`ImportedRun` (one document per request)."""
    if options.num_experts is None:
        raise ConfigError(f"{kind} routed-expert arrays do not record the number of experts; pass --num-experts E "
                          "(the model's routed experts per layer, e.g. n_routed_experts).")
    if not requests:
        raise EngineFormatError(f"no {kind} requests with routed experts to import.")
    E = options.num_experts
    converted = []
    shape = None
    for req in requests:
        ids = logical_ids(req.routes, what=req.what, num_experts=E, options=options)
        if shape is None:
            shape = ids.shape
        elif ids.shape[0] != shape[0] or ids.shape[2] != shape[2]:
            raise EngineFormatError(f"{req.what}: {ids.shape[0]} layers x {ids.shape[2]} slots, but the first request "
                                    f"has {shape[0]} x {shape[2]}; every request must come from the same model.")
        if req.token_ids is not None and len(req.token_ids) != ids.shape[1]:
            raise EngineFormatError(f"{req.what}: {ids.shape[1]} routing rows for {len(req.token_ids)} tokens.")
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
        layers = np.flatnonzero(moe_layer_mask(converted, num_layers, k))
        if not len(layers):
            raise EngineFormatError(f"no layer of the {kind} arrays carries routing (all -1 or 0); nothing to import.")
    docs, unrecorded = [], 0
    for i, (req, ids) in enumerate(zip(requests, converted)):
        experts, n_zero = unrecorded_zero_rows(ids[layers], k)
        unrecorded += n_zero
        docs.append(Doc(i, np.ascontiguousarray(experts), None if req.token_ids is None
                        else np.asarray(req.token_ids, dtype=np.int64), dict(req.meta)))
    has_ids = all(d.token_ids is not None and bool((d.token_ids >= 0).all()) for d in docs)
    spec = RunSpec(kind=kind, num_experts=E, top_k=k, layers=tuple(int(x) for x in layers), num_layers=num_layers,
                   dataset=dataset, model=options.model, token_ids=has_ids,
                   engine={**engine, "options": options.described(), "unrecorded_rows": unrecorded,
                           "dense_layers": sorted(set(range(num_layers)) - set(int(x) for x in layers))})
    return ImportedRun(spec, docs)
