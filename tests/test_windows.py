"""Long documents: windows, strides and carried context.

Window layouts are checked against tables worked out by hand; the end-to-end test compares a
windowed trace with the full-document trace of a model whose attention only reaches back a few
tokens (sliding-window attention), so that a stride carrying enough context must give every token
exactly the routing it has with the whole document in view.
"""

from __future__ import annotations

import numpy as np
import pytest

import moelens
from moelens.errors import ConfigError
from moelens.pipeline.windows import Batcher, Window, cut_context, document_windows, window_spans


@pytest.mark.parametrize(("n", "max_length", "stride", "expected"), [
    (5, 8, None, [(0, 5, 0)]),
    (8, 8, None, [(0, 8, 0)]),
    (10, 4, None, [(0, 4, 0), (4, 8, 4), (8, 10, 8)]),
    (10, 6, 3, [(0, 6, 0), (3, 9, 6), (6, 10, 9)]),
    (7, 4, 1, [(0, 4, 0), (1, 5, 4), (2, 6, 5), (3, 7, 6)]),
    (9, 4, 2, [(0, 4, 0), (2, 6, 4), (4, 8, 6), (6, 9, 8)]),
])
def test_window_spans_by_hand(n, max_length, stride, expected):
    spans = window_spans(n, max_length, stride)
    assert spans == expected
    recorded = [p for s, e, r in spans for p in range(r, e)]
    assert recorded == list(range(n))  # every token recorded exactly once, in order


def test_cut_context_by_hand():
    assert cut_context(10, 4) == 6  # windows 2 and 3 (positions 4..9) start from scratch
    assert cut_context(10, 6, 3) == 4  # positions 6..9 are recorded in windows that start at 3 and 6
    assert cut_context(5, 8) == 0


def test_document_windows_and_batcher():
    ids = np.arange(100, 110)
    windows = document_windows(7, ids, 6, 3)
    assert [(w.start, w.end, w.record_from, w.ids.tolist()) for w in windows] == [
        (0, 6, 0, list(range(100, 106))), (3, 9, 6, list(range(103, 109))), (6, 10, 9, list(range(106, 110)))]
    batcher = Batcher(2)
    first = list(batcher.add(windows))
    assert [[w.start for w in b] for b in first] == [[0, 3]]
    assert [[w.start for w in b] for b in batcher.flush()] == [[6]]
    assert list(batcher.flush()) == []


def test_stride_is_validated():
    with pytest.raises(ConfigError, match="stride"):
        moelens.TraceConfig(model="m", data="d", out="o", max_length=8, stride=9)
    with pytest.raises(ConfigError, match="stride"):
        moelens.TraceConfig(model="m", data="d", out="o", stride=0)
    with pytest.raises(ValueError):
        window_spans(10, 4, 5)
    assert isinstance(document_windows(0, np.arange(3), 4)[0], Window)


def _routes(db, run):
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT doc_id, pos, layer, rank, expert, weight FROM routes WHERE run_id = ? "
                       "ORDER BY doc_id, pos, layer, rank", [run]).fetchall()
    con.close()
    return rows


def test_stride_that_carries_enough_context_equals_the_full_document_run(tmp_path, write_jsonl):
    from moelens.models.tiny import build_tiny_model

    # Each token attends to itself and the 3 tokens before it, in each of 2 layers: the router of layer l
    # sees (l + 1) * 3 tokens back, so 6 tokens of carried context give every token its full context.
    model = build_tiny_model("mixtral", num_layers=2, sliding_window=4)
    model.save_pretrained(tmp_path / "model")
    rng = np.random.default_rng(3)
    docs = [rng.integers(3, model.config.vocab_size, n).tolist() for n in (40, 23, 9)]
    data = write_jsonl(tmp_path / "ids.jsonl", [{"input_ids": d} for d in docs])
    db = tmp_path / "w.duckdb"
    common = dict(out=str(db), batch_size=3, progress=False)
    full = moelens.trace(str(tmp_path / "model"), str(data), run_id="full", max_length=64, **common)
    assert not any("windows" in n for n in full.notes)  # nothing was windowed
    cut = moelens.trace(str(tmp_path / "model"), str(data), run_id="cut", max_length=12, **common)
    carried = moelens.trace(str(tmp_path / "model"), str(data), run_id="carried", max_length=12, stride=6, **common)

    full_rows, carried_rows, cut_rows = _routes(db, "full"), _routes(db, "carried"), _routes(db, "cut")
    assert len(full_rows) == len(carried_rows) == len(cut_rows)
    # with 12 - 6 = 6 tokens carried, every recorded token sees all it can attend to
    assert [r[:5] for r in carried_rows] == [r[:5] for r in full_rows]
    np.testing.assert_allclose([r[5] for r in carried_rows], [r[5] for r in full_rows], rtol=1e-5, atol=1e-6)
    # consecutive windows without carried context change the routing of tokens after a cut
    assert [r[:5] for r in cut_rows] != [r[:5] for r in full_rows]
    # the user is told, and the layout is in the run's metadata
    assert any("traced in windows" in n and "without the earlier context" in n for n in cut.notes)
    assert any("overlap by 6 tokens" in n for n in carried.notes)
    with moelens.open(str(db)) as t:
        config = t.sql("SELECT config FROM runs WHERE run_id = 'carried'")["config"][0]
    import json

    assert json.loads(config)["windows"] == {"max_length": 12, "stride": 6, "carried_context": 6}
