"""Which interventions to measure, and what their effects mean.

* :func:`single_experts` - every expert of the given layers ablated alone;
* :func:`top_specialists` - the experts the analysis ranks as specialists of a label value (significant,
  support-aware, by the lower bound of the lift's interval), ablated together per layer;
* :func:`matched_controls` - random experts of the same layer whose summed usage matches an
  intervention's experts (the control that separates "needed for this label" from "removing that much
  routing hurts anything");
* :func:`causal_verdicts` - per intervention and label value: ``effect`` when the loss increase's
  interval lies above 0 and above every matched control's interval on the same value, ``no effect
  beyond noise`` otherwise (``not measured`` where nothing was measured).
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from moelens.analysis.causal import causal_verdicts
from moelens.errors import ConfigError
from moelens.interventions.effects import Experiment

__all__ = ["single_experts", "top_specialists", "matched_controls", "expert_usage", "causal_verdicts"]


def single_experts(layers: Iterable[int], num_experts: int) -> list[Experiment]:
    return [Experiment({"ablate": {int(layer): [e]}}) for layer in layers for e in range(num_experts)]


def _trace(db: str):
    from moelens.analysis.facade import open as open_db

    return open_db(db)


def top_specialists(db: str, label: str, value: str, *, run: str | None = None, top: int = 2,
                    layers: Iterable[int] | None = None) -> list[Experiment]:
    """One ablation per layer of the ``top`` experts most specialised in ``label=value`` (significant cells)."""
    import polars as pl

    cells = _trace(db).specialization(label, run=run, layers=layers, significant=True)
    cells = cells.filter(pl.col("value") == value)
    if cells.height == 0:
        raise ConfigError(f"no expert is significantly specialised in {label}={value} in this run; pick another"
                          " value (moelens report lists the specialists).")
    out = []
    for layer in sorted(set(cells["layer"].to_list())):
        experts = cells.filter(pl.col("layer") == layer)["expert"].head(top).to_list()
        out.append(Experiment({"ablate": {int(layer): sorted(int(e) for e in experts)}},
                              label=f"specialists of {label}={value}"))
    return out


def expert_usage(db: str, run: str | None = None) -> dict[int, np.ndarray]:
    """``{layer: count per expert}`` of a traced run."""
    load = _trace(db).expert_load(run)
    out: dict[int, np.ndarray] = {}
    for layer in sorted(set(load["layer"].to_list())):
        part = load.filter(load["layer"] == layer).sort("expert")
        out[int(layer)] = part["count"].to_numpy().astype(np.float64)
    return out


def matched_controls(experiment: Experiment, usage: dict[int, np.ndarray], *, n: int, seed: int = 0,
                     candidates: int = 4000, control_for: int) -> list[Experiment]:
    """``n`` distinct random expert sets of the experiment's layer and size, closest in summed usage."""
    layer, chosen = experiment.layer, experiment.experts
    if layer is None or layer not in usage:
        raise ConfigError(f"matched controls need a single-layer intervention of a traced layer ({experiment.describe()}).")
    counts = usage[layer]
    pool = np.array([e for e in range(len(counts)) if e not in chosen])
    size = len(chosen)
    if len(pool) < size:
        return []
    rng = np.random.default_rng(seed + 7919 * layer + sum(chosen))
    target = counts[chosen].sum()
    seen: dict[tuple[int, ...], float] = {}
    for _ in range(candidates):
        pick = tuple(sorted(int(e) for e in rng.choice(pool, size=size, replace=False)))
        seen[pick] = abs(counts[list(pick)].sum() - target)
    best = sorted(seen, key=lambda p: (seen[p], p))[:n]
    return [Experiment({"ablate": {layer: list(p)}}, control=True, control_for=control_for,
                       label=f"random, usage-matched to {experiment.describe()}") for p in best]
