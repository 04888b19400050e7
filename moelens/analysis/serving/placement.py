"""Expert-parallel placement from a run's routing: balancedness for chosen EP sizes and replicas,
fitted on one part of the traffic and evaluated on another.

The load of a logical expert at a layer is its number of routed assignments (every top-k slot).
For each EP size ``G`` (GPUs) and number of redundant experts ``R`` three placements are scored:

* ``contiguous`` - the engines' default without balancing: ``E / G`` consecutive experts per GPU;
* ``eplb`` - DeepSeek EPLB (:mod:`~moelens.analysis.serving.eplb`) fitted on the ``fit`` traffic;
* ``eplb_oracle`` - EPLB fitted on the evaluation traffic itself: the best a static plan could do.

Per-GPU load is the sum over its physical slots of the slot's share of its expert's load, and
balancedness follows the three engines' definitions:

* SGLang (``python/sglang/srt/eplb/expert_distribution.py::compute_utilization_rate``), per layer:
  ``(mean GPU load + 1e-5) / (max GPU load + 1e-5)``;
* vLLM (``vllm/distributed/eplb/eplb_state.py::EplbState.step``), over layers: the per-layer mean
  and max over ranks, each summed over layers, ``sum_l mean_l / sum_l max_l``;
* TensorRT-LLM (``report_load_statistics.py``), per layer: imbalance ratio ``(max - mean) / mean``.

Traffic splits (``fit_on`` / ``eval_on``): ``all``; ``rest`` (the complement of ``fit_on``);
``first:F`` / ``last:F`` (the first or last fraction ``F`` of the documents by ``doc_id`` - fit on
yesterday, serve today); ``LABEL=V[+V...]`` or ``LABEL!=V[+V...]`` for any document label
(``domain=code``, ``language!=en``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from moelens.analysis.serving.eplb import EPPlacement, contiguous_placement, rebalance_experts
from moelens.errors import ConfigError

__all__ = ["split_mask", "layer_loads", "gpu_balance", "placement_rows"]


def split_mask(routing: Any, spec: str | None, doc_idx: np.ndarray, complement_of: np.ndarray | None = None) -> np.ndarray:
    """``[T]`` bool: the tokens a split spec selects (see the module docstring)."""
    T = routing.num_tokens
    spec = (spec or "all").strip()
    if spec == "all":
        return np.ones(T, bool)
    if spec == "rest":
        if complement_of is None:
            raise ConfigError("eval_on='rest' needs fit_on (it means every token fit_on leaves out).")
        return ~complement_of
    if spec.startswith(("first:", "last:")):
        side, _, frac = spec.partition(":")
        try:
            f = float(frac)
        except ValueError:
            f = -1.0
        if not 0 < f < 1:
            raise ConfigError(f"split {spec!r}: the fraction must be between 0 and 1, e.g. first:0.5.")
        D = routing.documents.height
        cut = int(round(D * f))
        return doc_idx < cut if side == "first" else doc_idx >= D - cut
    negate = "!=" in spec
    name, _, values = spec.partition("!=" if negate else "=")
    if not values:
        raise ConfigError(f"unknown split {spec!r}; use all, rest, first:F, last:F, LABEL=V or LABEL!=V.")
    from moelens.analysis.labels import resolve_label

    label = resolve_label(routing, name.strip())
    if label.kind != "document":
        raise ConfigError(f"split {spec!r}: {name!r} is a token label; splits use document labels.")
    wanted = [v.strip() for v in values.split("+") if v.strip()]
    missing = [v for v in wanted if v not in label.values]
    if missing:
        raise ConfigError(f"split {spec!r}: {name} has no value {missing[0]!r}; values: {', '.join(label.values)}.")
    codes = [label.values.index(v) for v in wanted]
    hit = np.isin(label.codes, codes)[doc_idx]
    return ~hit if negate else hit


def layer_loads(routing: Any, indices: list[int], mask: np.ndarray | None = None) -> np.ndarray:
    """``[L, E]`` routed assignments per expert of the selected tokens."""
    E = int(routing.num_experts)
    out = np.zeros((len(indices), E), np.int64)
    for row, i in enumerate(indices):
        e = routing.experts[i] if mask is None else routing.experts[i][mask]
        flat = e.reshape(-1).view(np.uint16) if e.dtype == np.int16 else e.reshape(-1).astype(np.int16).view(np.uint16)
        out[row] = np.bincount(flat, minlength=1 << 16)[:E]  # -1 -> 65535, past every expert
    return out


def gpu_balance(gpu_load: np.ndarray) -> dict[str, Any]:
    """The three engines' balancedness of ``gpu_load[L, G]`` (see the module docstring)."""
    g = np.asarray(gpu_load, dtype=np.float64)
    mean, top = g.mean(1), g.max(1)
    sglang = (mean + 1e-5) / (top + 1e-5)
    with np.errstate(divide="ignore", invalid="ignore"):
        trt = np.where(mean > 0, (top - mean) / mean, np.nan)
    return {"sglang": sglang, "trtllm": trt,
            "vllm": float(mean.sum() / top.sum()) if top.sum() > 0 else float("nan")}


def _plans(fit: np.ndarray, ev: np.ndarray, gpus: int, redundant: int, groups: int, nodes: int,
           layers: np.ndarray) -> dict[str, EPPlacement]:
    L, E = fit.shape
    plans = {}
    if redundant == 0 and E % gpus == 0:
        plans["contiguous"] = contiguous_placement(L, E, gpus, layers)
    P = E + redundant
    plans["eplb"] = rebalance_experts(fit, P, groups, nodes, gpus, layers)
    plans["eplb_oracle"] = rebalance_experts(ev, P, groups, nodes, gpus, layers)
    return plans


def placement_rows(fit: np.ndarray, ev: np.ndarray, layers: np.ndarray, ep_sizes, replicas, groups: int = 1,
                   nodes: int = 1) -> tuple[list[dict], list[dict], dict, list[str]]:
    """``(per-layer rows, summary rows, plans, notes)`` for every EP size and redundant count.

    ``replicas=None`` scores 0 redundant experts and one per GPU for each EP size.
    """
    L, E = fit.shape
    rows, summary, plans, notes = [], [], {}, []
    for gpus in ep_sizes:
        counts = (0, gpus) if replicas is None else replicas
        for redundant in counts:
            P = E + redundant
            if P % gpus or P < gpus:
                notes.append(f"EP {gpus} with {redundant} redundant experts: {P} slots do not split over {gpus} GPUs")
                continue
            try:
                made = _plans(fit, ev, gpus, redundant, groups, nodes, layers)
            except ConfigError as error:
                notes.append(f"EP {gpus} with {redundant} redundant experts: {error}")
                continue
            for name, plan in made.items():
                bal = gpu_balance(plan.gpu_loads(ev))
                plans[(gpus, redundant, name)] = plan
                summary.append({"ep": gpus, "redundant": redundant, "placement": name, "policy": plan.policy,
                                "vllm_balancedness": bal["vllm"], "sglang_balancedness": float(bal["sglang"].mean()),
                                "trtllm_imbalance": float(np.nanmean(bal["trtllm"])) if L else float("nan"),
                                "worst_layer": int(layers[int(np.argmin(bal["sglang"]))]) if L else -1})
                for li in range(L):
                    rows.append({"ep": gpus, "redundant": redundant, "placement": name, "layer": int(layers[li]),
                                 "sglang_balancedness": float(bal["sglang"][li]), "trtllm_imbalance": float(bal["trtllm"][li])})
    return rows, summary, plans, notes
