"""Prune and merge what-ifs: which experts of a layer can go, and what it costs.

Candidates come from the experts' own weights and from routing:

* :func:`weight_similarity` - cosine similarity of every pair of a layer's experts over all their
  weights (the fused ``[E, ...]`` tensors or the per-expert modules, flattened);
* :func:`greedy_pairs` - disjoint pairs, most similar first (the experts a merged checkpoint would
  fold together);
* usage counts from a traced run (:func:`moelens.interventions.sweeps.expert_usage`).

:func:`curve_experiments` turns them into interventions for ``n`` experts removed per layer:

* ``merge``: the ``n`` most similar disjoint pairs, each replaced by its usage-weighted average;
* ``prune``: the same pairs, the less used expert of each pruned (redundancy pruning);
* ``least-used``: the ``n`` least used experts pruned;
* ``random``: ``n`` experts pruned at random (several seeded draws, averaged).

:func:`curve_rows` reads the measured overall rows back as the size-quality curve (one row per
method, layer and ``n``: loss, loss change, KL and top-1 agreement), the ``whatif_curves`` table.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from moelens.interventions.effects import Experiment

__all__ = ["weight_similarity", "greedy_pairs", "least_used", "curve_experiments", "curve_rows", "METHODS"]

METHODS = ("merge", "prune", "least-used", "random")


def weight_similarity(model: Any, layer: int) -> np.ndarray:
    """``[E, E]`` cosine similarity of the layer's experts over all their per-expert weights."""
    import torch

    from moelens.interventions.weights import expert_tensors
    from moelens.models.discover import plan_model

    plan = plan_model(model)
    site = next(s for s in plan.sites if s.layer == layer and s.primary)
    experts = model.get_submodule(plan.experts_paths.get(site.path) or f"{site.path.rsplit('.', 1)[0]}.experts")
    E = site.num_experts
    with torch.no_grad():
        flat = torch.cat([torch.stack([slot(e).detach().float().reshape(-1) for e in range(E)])
                          for _, _, slot in expert_tensors(experts, E)], dim=1)
        unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return (unit @ unit.T).cpu().numpy().astype(np.float64)


def greedy_pairs(similarity: np.ndarray, n: int) -> list[tuple[int, int]]:
    """``n`` disjoint pairs, the most similar first (ties: lower ids first)."""
    E = similarity.shape[0]
    order = sorted(((-similarity[a, b], a, b) for a in range(E) for b in range(a + 1, E)))
    used: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for _, a, b in order:
        if len(pairs) == n:
            break
        if a not in used and b not in used:
            pairs.append((a, b))
            used.update((a, b))
    return pairs


def least_used(usage: np.ndarray, n: int) -> list[int]:
    """The ``n`` experts with the smallest usage (ties: lower ids first)."""
    return sorted(int(e) for e in np.lexsort((np.arange(len(usage)), usage))[:n])


def curve_experiments(layer: int, sizes: Iterable[int], similarity: np.ndarray, usage: np.ndarray, *,
                      methods: Iterable[str] = METHODS, draws: int = 3, seed: int = 0) -> list[Experiment]:
    """Interventions for every (method, n) of the curve; ``label`` is ``whatif:<method>:<n>``."""
    out: list[Experiment] = []
    E = len(usage)
    for n in sizes:
        pairs = greedy_pairs(similarity, n)
        for method in methods:
            label = f"whatif:{method}:{n}"
            if method == "merge":
                shares = {e: float(usage[e]) for pair in pairs for e in pair}
                out.append(Experiment({"merge": {layer: pairs}, "usage": {layer: shares}}, label=label))
            elif method == "prune":
                out.append(Experiment({"prune": {layer: sorted(a if usage[a] < usage[b] or (usage[a] == usage[b] and a < b)
                                                               else b for a, b in pairs)}}, label=label))
            elif method == "least-used":
                out.append(Experiment({"prune": {layer: least_used(usage, n)}}, label=label))
            elif method == "random":
                rng = np.random.default_rng(seed + 1000 * layer + n)
                for _ in range(draws):
                    pick = sorted(int(e) for e in rng.choice(E, size=n, replace=False))
                    out.append(Experiment({"prune": {layer: pick}}, label=label))
    return out


def curve_rows(rows: Any, experiments: list[Experiment]) -> Any:
    """The ``whatif_curves`` rows from measured overall rows (random draws averaged)."""
    import polars as pl

    overall = rows.filter(pl.col("label_kind") == "all")
    records = []
    for iid, exp in enumerate(experiments):
        if not exp.label.startswith("whatif:"):
            continue
        _, method, n = exp.label.split(":")
        row = overall.filter(pl.col("intervention_id") == iid).row(0, named=True)
        records.append({"method": method, "layer": exp.layer, "n_removed": int(n), "experts": exp.experts,
                        "loss": row["base_loss"] + row["d_loss"], "d_loss": row["d_loss"], "kl": row["kl"],
                        "top1_agree": row["top1_agree"]})
    frame = pl.DataFrame(records, schema={"method": pl.String, "layer": pl.Int32, "n_removed": pl.Int32,
                                          "experts": pl.List(pl.Int32), "loss": pl.Float64, "d_loss": pl.Float64,
                                          "kl": pl.Float64, "top1_agree": pl.Float64})
    return (frame.group_by("method", "layer", "n_removed", maintain_order=True)
            .agg(pl.col("experts").first(), pl.col("loss").mean(), pl.col("d_loss").mean(), pl.col("kl").mean(),
                 pl.col("top1_agree").mean())
            .sort("layer", "n_removed", pl.col("method").replace_strict({m: i for i, m in enumerate(METHODS)})))
