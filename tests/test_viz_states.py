"""Specialization cell states (moelens.viz.states): significant, not significant, untested - and why.

Oracle: literal frames whose thresholds were worked out by hand against the default
SpecializationOptions (a value is tested with >= 20 tokens in >= 5 documents).
"""

from __future__ import annotations

import polars as pl

from moelens.analysis.options import SpecializationOptions
from moelens.viz.states import untested_reason, value_reasons, with_states


def frame(rows):
    cols = ("value", "expert", "tokens", "docs", "overall_share", "tested", "significant")
    return pl.DataFrame([dict(zip(cols, r)) for r in rows])


def test_states_and_reasons():
    tests = frame([("en", 0, 400, 12, 0.2, True, True),
                   ("en", 1, 400, 12, 0.2, True, False),
                   ("en", 2, 400, 12, 0.0, False, False),   # expert never routed at the layer
                   ("ja", 0, 60, 3, 0.2, False, False),     # 3 documents
                   ("xx", 0, 12, 1, 0.2, False, False)])    # 1 document and 12 tokens
    out = with_states(tests)
    assert out["state"].to_list() == ["significant", "not_significant", "untested", "untested", "untested"]
    assert out["untested_reason"].to_list() == [None, None, "expert never routed at this layer",
                                                "3 documents < 5 needed", "1 document < 5 needed, 12 tokens < 20 needed"]
    assert value_reasons(out) == {"en": None, "ja": "3 documents < 5 needed",
                                  "xx": "1 document < 5 needed, 12 tokens < 20 needed"}


def test_thresholds_come_from_the_options_and_provided_columns_win():
    strict = SpecializationOptions(min_docs=10, min_tokens=500)
    assert untested_reason(400, 8, 0.1, strict) == "8 documents < 10 needed, 400 tokens < 500 needed"
    given = frame([("en", 0, 1, 1, 0.1, False, False)]).with_columns(
        pl.lit("untested").alias("state"), pl.lit("from the analysis").alias("untested_reason"))
    assert with_states(given)["untested_reason"].to_list() == ["from the analysis"]
