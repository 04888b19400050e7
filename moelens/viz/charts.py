"""Altair charts for notebooks: one function per visualization, over the frames of the public API.

Each function takes a polars frame as returned by :class:`moelens.analysis.facade.Trace` (or by
:class:`moelens.capturing.Capture` for :func:`load_heatmap`) and returns an Altair chart built
from the same Vega-Lite spec as the dashboard (:mod:`moelens.viz.specs`)::

    t = moelens.open("runs.duckdb")
    t.load_chart()                                   # = load_heatmap(t.expert_load())
    load_heatmap(cap.load(), num_experts=cap.metadata["num_experts"])   # inside a notebook capture

Altair is imported when a function is called (the ``viz`` extra). Charts carry their data inline.
They render offline in JupyterLab, Notebook, VS Code and nbconvert HTML through the renderer of
:mod:`moelens.viz.jupyter`, which the first chart enables while Altair still has its CDN-loading
``default`` renderer (``moelens.viz.enable_offline_renderer()`` enables it explicitly, for any
Altair chart; a renderer chosen with ``alt.renderers.enable(...)`` is left alone).
"""

from __future__ import annotations

from typing import Any, Iterable

from moelens.errors import ConfigError
from moelens.viz import specs

__all__ = ["load_heatmap", "specialization_heatmap", "layer_balance", "nmi_chart", "comparison_chart",
           "load_shift_heatmap", "to_altair"]


def to_altair(spec: dict[str, Any]) -> Any:
    """An Altair chart object for a Vega-Lite spec dict (single, layered, faceted or concatenated).

    The spec's ``config`` and ``$schema`` are left out so that charts compose with ``|`` and ``&``
    (Altair allows ``config`` only at the top level); the dashboard keeps them.
    """
    spec = {key: value for key, value in spec.items() if key not in ("config", "$schema")}
    try:
        import altair as alt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("charts need Altair: pip install 'moelens[viz]'.") from exc
    from moelens.viz.jupyter import ensure_offline_renderer

    ensure_offline_renderer()
    for key, cls in (("hconcat", alt.HConcatChart), ("vconcat", alt.VConcatChart), ("concat", alt.ConcatChart),
                     ("layer", alt.LayerChart), ("facet", alt.FacetChart), ("repeat", alt.RepeatChart)):
        if key in spec:
            return cls.from_dict(spec)
    return alt.Chart.from_dict(spec)


def _records(frame: Any, columns: Iterable[str]) -> list[dict[str, Any]]:
    from moelens.analysis.report import clean

    cols = [c for c in columns if c in frame.columns]
    return clean(frame.select(cols).to_dicts())


def _need(frame: Any, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"{what} needs the columns {', '.join(missing)}; pass the frame of the matching "
                          "moelens.open(db) method.")


def load_heatmap(load: Any, *, num_experts: int | None = None, dead_threshold: float = 0.1,
                 title: str | None = None) -> Any:
    """Layer x expert heatmap of utilization (load / fair load 1/E).

    ``load``: ``Trace.expert_load()`` (layer, expert, count, share, utilization, dead) or
    ``Capture.load()`` (layer, expert, tokens, share); experts missing from a layer count as 0.
    ``num_experts``: E (default: the largest expert id + 1).
    """
    import polars as pl

    _need(load, ["layer", "expert"], "load_heatmap")
    count = "count" if "count" in load.columns else "tokens"
    _need(load, [count], "load_heatmap")
    E = int(num_experts if num_experts is not None else int(load["expert"].max()) + 1)
    layers = sorted(load["layer"].unique().to_list())
    grid = pl.DataFrame({"layer": [la for la in layers for _ in range(E)], "expert": list(range(E)) * len(layers)},
                        schema={"layer": pl.Int64, "expert": pl.Int64})
    counts = load.select(pl.col("layer").cast(pl.Int64), pl.col("expert").cast(pl.Int64), pl.col(count).alias("count"))
    frame = grid.join(counts.group_by("layer", "expert").agg(pl.col("count").sum()), on=["layer", "expert"],
                      how="left").with_columns(pl.col("count").fill_null(0))
    frame = frame.with_columns((pl.col("count") / pl.col("count").sum().over("layer")).fill_nan(0.0).alias("load"))
    frame = frame.with_columns((pl.col("load") * E).alias("utilization"))
    frame = frame.with_columns((pl.col("utilization") < dead_threshold).alias("dead"))
    values = _records(frame.sort("layer", "expert"), ["layer", "expert", "count", "load", "utilization", "dead"])
    return to_altair(specs.load_heatmap(values, title=title))


def specialization_heatmap(tests: Any, *, layer: int | None = None, title: str | None = None,
                           options: Any = None) -> Any:
    """Expert x value heatmap of lift for one label (``Trace.specialization(label)``); non-significant
    cells are muted, untested ones grey with the reason in the tooltip, and a value that was not
    tested at all is marked on the axis. ``layer=None``: one panel per layer. ``options``: the
    :class:`~moelens.analysis.options.SpecializationOptions` of the test (for the reasons)."""
    import polars as pl

    from moelens.viz.states import UNTESTED_MARK, value_reasons, with_states

    _need(tests, ["layer", "value", "expert", "lift", "tested", "significant"], "specialization_heatmap")
    if layer is not None:
        tests = tests.filter(pl.col("layer") == layer)
        if not tests.height:
            raise ConfigError(f"no specialization cells at layer {layer}.")
    tests = with_states(tests, options)
    order = {v: i for i, v in enumerate(tests["value"].unique(maintain_order=True).to_list())}
    marked = {v: v + UNTESTED_MARK if why else v for v, why in value_reasons(tests, options).items()}
    frame = tests.with_columns(pl.col("value").replace_strict(order, return_dtype=pl.Int32).alias("value_index"),
                               pl.col("value").replace_strict(marked, return_dtype=pl.String).alias("value_label"))
    label = tests["label"][0] if "label" in tests.columns and tests.height else "value"
    values = _records(frame, ["layer", "value", "value_label", "value_index", "expert", "share", "lift", "ci_low",
                              "ci_high", "q_value", "count", "state", "untested_reason"])
    facet = layer is None and tests["layer"].n_unique() > 1
    return to_altair(specs.lift_heatmap(values, label=label, title=title, facet_layers=facet,
                                        step=14 if facet else 18))


def layer_balance(summary: Any, *, collapse_effective: float = 0.3, title: str | None = None) -> Any:
    """Effective-expert fraction and max/mean load per layer (``Trace.load()``), one line per ``run``
    (a ``run`` column, e.g. from ``Trace.load()`` of several runs concatenated)."""
    import polars as pl

    _need(summary, ["layer", "effective_fraction", "max_over_mean"], "layer_balance")
    if "run" not in summary.columns:
        summary = summary.with_columns(pl.lit("run").alias("run"))
    values = _records(summary, ["run", "layer", "effective_fraction", "effective_experts", "max_over_mean", "collapsed"])
    return to_altair(specs.layer_balance(values, collapse_effective=collapse_effective, title=title))


def nmi_chart(nmi: Any, *, title: str | None = None) -> Any:
    """NMI between expert and label per layer (``Trace.nmi(label)``, several labels concatenated)."""
    _need(nmi, ["label", "layer", "nmi"], "nmi_chart")
    return to_altair(specs.nmi_chart(_records(nmi, ["label", "layer", "nmi", "nmi_permuted", "nmi_baseline"]),
                                     title=title))


def comparison_chart(compare: Any, *, pair: str | None = None, title: str | None = None) -> Any:
    """Router saturation and top-1 agreement per layer (``Trace.compare(a, b)``) against uniform
    baselines; several comparisons can be concatenated with a ``pair`` column."""
    import polars as pl

    _need(compare, ["layer", "saturation", "top1_agreement", "baseline_saturation", "baseline_top1"],
          "comparison_chart")
    if "pair" not in compare.columns:
        compare = compare.with_columns(pl.lit(pair or "a → b").alias("pair"))
    rows = []
    for r in compare.iter_rows(named=True):
        rows.append({"pair": r["pair"], "layer": r["layer"], "metric": "saturation", "value": r["saturation"],
                     "baseline": r["baseline_saturation"]})
        rows.append({"pair": r["pair"], "layer": r["layer"], "metric": "top1_agreement", "value": r["top1_agreement"],
                     "baseline": r["baseline_top1"]})
    from moelens.analysis.report import clean

    return to_altair(specs.comparison_chart(clean(rows), title=title))


def load_shift_heatmap(shift: Any, *, title: str | None = None) -> Any:
    """Layer x expert heatmap of the change in load share from run a to run b (``Trace.load_shift(a, b)``)."""
    _need(shift, ["layer", "expert", "share_a", "share_b", "delta"], "load_shift_heatmap")
    return to_altair(specs.load_shift_heatmap(_records(shift, ["layer", "expert", "share_a", "share_b", "delta"]),
                                              title=title))
