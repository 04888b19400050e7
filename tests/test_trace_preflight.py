"""Options that cannot work are refused before the database is touched: one line, exit 2, no file left,
and an existing database byte for byte unchanged."""

from __future__ import annotations

import hashlib
import sys

import pytest

from moelens.cli import main


def _run(capsys, args):
    capsys.readouterr()
    code = main(args)
    return code, capsys.readouterr().err.strip()


def _one_line(code, err, *needles):
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "internal error" not in err, err
    for needle in needles:
        assert needle in err, err


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_layers_the_model_does_not_have(tmp_path, tiny_model_dir, labelled_jsonl, capsys):
    out = tmp_path / "o.duckdb"
    code, err = _run(capsys, ["trace", str(tiny_model_dir), str(labelled_jsonl), "--out", str(out), "--layers", "9",
                              "--no-progress"])
    _one_line(code, err, "layers 9 are not MoE layers", "MoE layers: 1, 2, 3")  # layer 0 is dense
    assert not out.exists()


def test_nnsight_backend_without_nnsight(tmp_path, tiny_model_dir, labelled_jsonl, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "nnsight", None)  # `import nnsight` raises ImportError
    out = tmp_path / "o.duckdb"
    code, err = _run(capsys, ["trace", str(tiny_model_dir), str(labelled_jsonl), "--out", str(out),
                              "--backend", "nnsight", "--no-progress"])
    _one_line(code, err, "pip install 'moelens[nnsight]'")
    assert not out.exists()


def test_existing_database_is_untouched_by_a_refused_run(tmp_path, tiny_model_dir, labelled_jsonl, capsys):
    out = tmp_path / "o.duckdb"
    assert main(["trace", str(tiny_model_dir), str(labelled_jsonl), "--out", str(out), "--max-docs", "2",
                 "--no-progress"]) == 0
    before = _digest(out)
    for extra in (["--layers", "4-7"], ["--max-length", "8", "--stride", "9"]):
        code, err = _run(capsys, ["trace", str(tiny_model_dir), str(labelled_jsonl), "--out", str(out),
                                  "--run-id", "other", "--no-progress", *extra])
        _one_line(code, err)
        assert _digest(out) == before
    with pytest.raises(SystemExit):  # argparse: not a number
        main(["trace", str(tiny_model_dir), str(labelled_jsonl), "--out", str(out), "--stride", "x"])
