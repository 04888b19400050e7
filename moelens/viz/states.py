"""The state of each specialization cell: ``significant``, ``not_significant`` or ``untested`` (and why).

A cell that was never tested is not a cell without an effect: the heatmaps, the expert cards and
the dashboard data say "untested" and give the reason - how many documents or tokens the value
has against how many the test needs. :func:`with_states` adds the columns ``state`` and
``untested_reason`` to a specialization frame (``Trace.specialization(label)``), derived from its
``tested`` / ``significant`` / ``tokens`` / ``docs`` / ``overall_share`` columns and the thresholds
of :class:`~moelens.analysis.options.SpecializationOptions`. Where the analysis already provides
``state`` and ``untested_reason``, the frame is returned as it is: this is the one place to change
when it always does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["STATES", "with_states", "untested_reason", "value_reasons", "UNTESTED_MARK"]

UNTESTED_MARK = " (untested)"  # appended to a value's axis label when the value itself was not tested

STATES = ("significant", "not_significant", "untested")


def untested_reason(tokens: int | None, docs: int | None, overall_share: float | None, options: Any) -> str:
    """Why a (layer, value, expert) cell was not tested, in words (``"3 documents < 5 needed"``)."""
    why = []
    if docs is not None and docs < options.min_docs:
        why.append(f"{int(docs)} document{'s' if docs != 1 else ''} < {options.min_docs} needed")
    if tokens is not None and tokens < options.min_tokens:
        why.append(f"{int(tokens)} token{'s' if tokens != 1 else ''} < {options.min_tokens} needed")
    if not why and overall_share is not None and overall_share <= 0:
        why.append("expert never routed at this layer")
    return ", ".join(why) or "no test statistic (the bootstrap was degenerate)"


def with_states(tests: Any, options: Any = None) -> Any:
    """``tests`` with ``state`` (one of :data:`STATES`) and ``untested_reason`` (null when tested)."""
    import polars as pl

    if "state" in tests.columns and "untested_reason" in tests.columns:
        return tests
    if options is None:
        from moelens.analysis.options import SpecializationOptions

        options = SpecializationOptions()
    cols = {c: tests[c].to_list() if c in tests.columns else [None] * tests.height
            for c in ("tokens", "docs", "overall_share")}
    tested = tests["tested"].to_list()
    reasons = [None if t else untested_reason(n, d, s, options)
               for t, n, d, s in zip(tested, cols["tokens"], cols["docs"], cols["overall_share"])]
    state = pl.when(~pl.col("tested")).then(pl.lit("untested")).when(pl.col("significant")) \
        .then(pl.lit("significant")).otherwise(pl.lit("not_significant"))
    return tests.with_columns(state.alias("state"), pl.Series("untested_reason", reasons, dtype=pl.String))


def value_reasons(tests: Any, options: Any = None) -> dict[str, str | None]:
    """Per value of the label: why the value as a whole was not tested (too few documents or tokens),
    or ``None`` when it was (some of its cells may still be untested: experts never routed)."""
    import polars as pl

    tests = with_states(tests, options)
    out: dict[str, str | None] = {}
    for value, frame in tests.group_by("value", maintain_order=True):
        name = value[0] if isinstance(value, tuple) else value
        untested = frame.filter(pl.col("state") == "untested")
        if untested.height == frame.height and frame.height:
            reasons = untested["untested_reason"].unique(maintain_order=True).to_list()
            value_level = [r for r in reasons if "needed" in r]
            out[name] = value_level[0] if value_level else reasons[0]
        else:
            out[name] = None
    return out
