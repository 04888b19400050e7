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
:func:`size_quality` does all of it on a model and documents, with the pairs ranked by weight
similarity or by a routing similarity of :mod:`moelens.interventions.candidates`.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from moelens.interventions.candidates import weight_similarity
from moelens.interventions.effects import Experiment

__all__ = ["weight_similarity", "greedy_pairs", "least_used", "curve_experiments", "curve_rows", "size_quality",
           "similarity_matrix", "METHODS"]

METHODS = ("merge", "prune", "least-used", "random")


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


def similarity_matrix(frame: Any, layer: int, by: str, num_experts: int) -> np.ndarray:
    """``[E, E]`` matrix of column ``by`` of a candidates frame (missing pairs: -inf, never chosen first)."""
    import polars as pl

    M = np.full((num_experts, num_experts), -np.inf)
    np.fill_diagonal(M, 1.0)
    for a, b, v in frame.filter((pl.col("layer") == layer) & pl.col(by).is_not_null()).select("a", "b", by).iter_rows():
        M[a, b] = M[b, a] = v
    return M


def size_quality(model: Any, data: Any, *, db: str | None = None, run: str | None = None,
                 layers: Iterable[int] | None = None, n: Iterable[int] = (1, 2, 4), methods: Iterable[str] = METHODS,
                 pairs_by: str = "weight_similarity", usage: dict[int, Any] | None = None, draws: int = 3,
                 seed: int = 0, tokenizer: Any = None, out: str | None = None, irun_id: str | None = None,
                 **measure_options: Any):
    """The size-quality curve: for every layer and ``n`` experts removed, the overall loss, its change, KL and
    top-1 agreement of each method (one row per method, layer, ``n``; random draws averaged).

    ``usage`` (``{layer: count per expert}``) comes from the traced run ``run`` of ``db`` unless given;
    ``pairs_by`` ranks merge/prune pairs: ``weight_similarity`` (from the model) or ``coactivation`` /
    ``profile_similarity`` (from ``db``). With ``out`` the measured rows go to its ``interventions`` table
    and the curve to ``whatif_curves`` under ``irun_id``.
    """
    from moelens.errors import ConfigError
    from moelens.interventions.effects import measure
    from moelens.models.discover import plan_model

    methods = list(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ConfigError(f"unknown what-if method {bad[0] if bad else ''!r}; choose from {', '.join(METHODS)}.")
    if isinstance(model, str):
        from moelens.models.loading import load_model

        loaded = load_model(model)
        model, tokenizer = loaded.model, tokenizer or loaded.tokenizer
    plan = plan_model(model)
    E = plan.num_experts
    layers = sorted(plan.moe_layers) if layers is None else [int(x) for x in layers]
    sizes = sorted({int(x) for x in n})
    if not sizes or sizes[0] < 1 or sizes[-1] > E // 2:
        raise ConfigError(f"n must be between 1 and {E // 2} (half the {E} experts); got {sizes}.")
    if draws < 1:
        raise ConfigError(f"draws must be at least 1, got {draws}.")
    if usage is None:
        if db is None:
            raise ConfigError("size_quality needs expert usage: pass db= (a traced run) or usage={layer: counts}.")
        from moelens.interventions.sweeps import expert_usage

        usage = expert_usage(db, run)
    missing = [layer for layer in layers if layer not in usage]
    if missing:
        raise ConfigError(f"no usage for layer {missing[0]}; trace it first or pass usage for it.")
    frame = None
    if pairs_by != "weight_similarity":
        from moelens.interventions.candidates import SIMILARITIES, candidates

        if pairs_by not in SIMILARITIES:
            raise ConfigError(f"pairs_by must be one of {', '.join(SIMILARITIES)}; got {pairs_by!r}.")
        if db is None:
            raise ConfigError(f"pairs_by={pairs_by!r} reads routing: pass db= (a traced run).")
        frame = candidates(db, run=run, layers=layers)
    experiments: list[Experiment] = []
    for layer in layers:
        sim = weight_similarity(model, layer) if frame is None else similarity_matrix(frame, layer, pairs_by, E)
        experiments += curve_experiments(layer, sizes, sim, np.asarray(usage[layer], dtype=np.float64),
                                         methods=methods, draws=draws, seed=seed)
    rows = measure(model, data, experiments, tokenizer=tokenizer, out=out, irun_id=irun_id, **measure_options)
    curve = curve_rows(rows, experiments)
    if out is not None:
        from moelens.interventions.storage import write_curve

        write_curve(out, rows["irun_id"][0], curve)
    return curve
