"""Every option of every command under out-of-range and wrong-type values: never an internal error.

The cases are generated from the parser itself (so a new option is fuzzed the day it is added):
each int option gets ``x``, ``1.5``, ``0``, ``-1`` and a 20-digit number, each float option ``x``,
``nan``, ``inf``, ``-1``, ``0``, ``2``, each list option malformed lists, each choice a bogus
choice, each string option an empty string, a bogus word and paths that are missing, a folder or a
file. Hand-written cases add bad positional arguments. The oracle for every case: the command
either succeeds (exit 0: the value was valid) or prints exactly one line ``error: ...`` and exits
2 leaving the workspace byte for byte as it was (no new file, no empty database, no changed one).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from moelens.cli import build_parser, main

INTS = ["x", "1.5", "0", "-1", "99999999999999999999"]
FLOATS = ["x", "nan", "inf", "-1", "0", "2"]
LISTS = {"layer_list": ["x", ",", "3-1", "0-99999999", "-1", "99"], "name_list": [",", "nope"],
         "int_list": ["x", ",", "0", "-1", "99999999"]}
PATHS = ["", "bogus", "{ws}/nodir/x", "{ws}", "{ws}/notes.txt"]
# string options whose every value is valid (any run name, split or revision): one value is enough
FREE_TEXT = {"--run-id": ["bogus"], "--split": ["bogus"], "--revision": ["bogus"]}
# commands that trace: big-but-valid numbers would trace for real; their range checks are the same code
SLOW = {"trace", "demo"}

# Cases known to fail inside code another change owns: (command, flag, value) -> reason (none at present).
XFAIL: dict[tuple[str, str, str], str] = {}


def _base(ws: Path) -> dict[str, list[str]]:
    return {
        "trace": [str(ws / "model"), str(ws / "docs.jsonl"), "--out", str(ws / "new.duckdb"), "--no-progress",
                  "--max-docs", "2"],
        "report": [str(ws / "runs.duckdb"), "--run", "a", "--bootstrap", "20"],
        "compare": [str(ws / "runs.duckdb"), "a", "b"],
        "export": [str(ws / "runs.duckdb"), "--parquet", str(ws / "pq")],
        "runs": [str(ws / "runs.duckdb")],
        "families": [],
        "demo": ["--out", str(ws / "demo"), "--max-docs", "2", "--no-site", "--no-progress", "--checkpoints", "main"],
        "import": ["vllm", str(ws / "vllm.jsonl"), "--out", str(ws / "new.duckdb"), "--num-experts", "8",
                   "--no-progress"],
        "merge": [str(ws / "runs.duckdb"), "--out", str(ws / "merged.duckdb"), "--run", "a", "--no-progress"],
        "serving": [str(ws / "runs.duckdb"), "--run", "a", "--ep", "2"],
        "upgrade": [str(ws / "runs.duckdb")],
        "intervene": [str(ws / "model"), str(ws / "docs.jsonl"), "--out", str(ws / "new.duckdb"), "--ablate", "1:0",
                      "--max-docs", "2", "--bootstrap", "20", "--no-progress"],
    }


def _values(command: str, flag: str, action: argparse.Action) -> list[str]:
    if action.choices:
        return ["bogus"]
    if action.type is int:
        return INTS[:-1] if command in SLOW else INTS
    if action.type is float:
        return FLOATS
    name = getattr(action.type, "__name__", "")
    if name in LISTS:
        return LISTS[name]
    return FREE_TEXT.get(flag, PATHS)


def _option_cases() -> list:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    cases = []
    for command, p in sub.choices.items():
        for action in p._actions:
            if not action.option_strings or action.nargs == 0 or action.dest == "help":
                continue
            flag = max(action.option_strings, key=len)
            for value in _values(command, flag, action):
                reason = XFAIL.get((command, flag, value))
                marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
                cases.append(pytest.param(command, flag, value, id=f"{command} {flag} {value!r}", marks=marks))
    return cases


POSITIONAL = [
    ("intervene-missing-data", ["intervene", "{ws}/model", "{ws}/none.jsonl", "--out", "{ws}/new.duckdb",
                                "--ablate", "1:0"]),
    ("intervene-nothing-asked", ["intervene", "{ws}/model", "{ws}/docs.jsonl", "--out", "{ws}/new.duckdb"]),
    ("intervene-bad-spec", ["intervene", "{ws}/model", "{ws}/docs.jsonl", "--out", "{ws}/new.duckdb", "--ablate", "1-0"]),
    ("intervene-no-such-layer", ["intervene", "{ws}/model", "{ws}/docs.jsonl", "--out", "{ws}/new.duckdb",
                                 "--ablate", "99:0"]),
    ("intervene-label-without-sweep", ["intervene", "{ws}/model", "{ws}/docs.jsonl", "--out", "{ws}/new.duckdb",
                                       "--ablate", "1:0", "--label", "domain=x"]),
    ("intervene-db-is-text", ["intervene", "{ws}/model", "{ws}/docs.jsonl", "--out", "{ws}/notes.txt",
                              "--ablate", "1:0"]),
    ("report-missing-db", ["report", "{ws}/none.duckdb"]),
    ("report-db-is-a-folder", ["report", "{ws}"]),
    ("report-db-is-text", ["report", "{ws}/notes.txt"]),
    ("report-db-not-moelens", ["report", "{ws}/other.duckdb"]),
    ("report-no-run-given", ["report", "{ws}/runs.duckdb"]),
    ("compare-stats-run", ["compare", "{ws}/runs.duckdb", "a", "s"]),
    ("compare-missing-run", ["compare", "{ws}/runs.duckdb", "a", "zzz"]),
    ("compare-other-expert-count", ["compare", "{ws}/runs.duckdb", "a", "e4"]),
    ("export-nothing-asked", ["export", "{ws}/runs.duckdb"]),
    ("export-missing-db", ["export", "{ws}/none.duckdb", "--parquet", "{ws}/pq"]),
    ("runs-missing-db", ["runs", "{ws}/none.duckdb"]),
    ("runs-db-is-text", ["runs", "{ws}/notes.txt"]),
    ("trace-misspelled-model", ["trace", "moelens-mni", "{ws}/docs.jsonl", "--out", "{ws}/new.duckdb"]),
    ("trace-folder-not-a-model", ["trace", "{ws}/empty", "{ws}/docs.jsonl", "--out", "{ws}/new.duckdb"]),
    ("trace-model-is-a-file", ["trace", "{ws}/notes.txt", "{ws}/docs.jsonl", "--out", "{ws}/new.duckdb"]),
    ("trace-missing-data", ["trace", "{ws}/model", "missing.jsonl", "--out", "{ws}/new.duckdb"]),
    ("trace-folder-without-data", ["trace", "{ws}/model", "{ws}/empty", "--out", "{ws}/new.duckdb"]),
    ("trace-stats-and-logits", ["trace", "{ws}/model", "{ws}/docs.jsonl", "--out", "{ws}/new.duckdb", "--mode",
                                "stats", "--logits"]),
    ("trace-remote-without-nnsight-backend", ["trace", "{ws}/model", "{ws}/docs.jsonl", "--out", "{ws}/new.duckdb",
                                              "--remote"]),
    ("no-command", []),
    ("unknown-command", ["bogus"]),
    ("unknown-flag", ["report", "{ws}/runs.duckdb", "--bogus"]),
    ("missing-positional", ["report"]),
]


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_model_dir) -> Path:
    import json

    import duckdb

    import moelens
    from moelens.analysis import from_arrays
    from moelens.store.arrays import save_routing

    ws = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(tiny_model_dir, ws / "model")
    texts = ["The quick brown fox jumps over the lazy dog.", "def double(x):\n    return 2 * x\n",
             "Le renard brun rapide saute par-dessus le chien paresseux."]
    data = ws / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": texts[i % 3], "domain": "abc"[i % 3], "id": i}) + "\n"
                            for i in range(12)))
    db = ws / "runs.duckdb"
    rng = np.random.default_rng(0)
    doc = np.repeat(np.arange(30), 20)
    e = np.argsort(rng.random((2, len(doc), 8)), axis=2)[:, :, :2].astype(np.int16)
    docs = [{"doc_id": d, "domain": "ab"[d % 2], "meta": {"id": d}} for d in range(30)]
    tokens = rng.integers(0, 40, len(doc))
    save_routing(from_arrays(e, num_experts=8, doc_id=doc, documents=docs, token_id=tokens), db, run_id="a")
    save_routing(from_arrays(e[:, :, ::-1].copy(), num_experts=8, doc_id=doc, documents=docs, token_id=tokens), db,
                 run_id="b")
    save_routing(from_arrays(e % 4, num_experts=4, doc_id=doc, documents=docs, token_id=tokens), db, run_id="e4")
    moelens.trace(str(ws / "model"), str(data), out=str(db), run_id="s", mode="stats", progress=False)
    (ws / "notes.txt").write_text("hello")
    # a vLLM RequestOutput as JSON (prompt ids, completion ids, one routed_experts row per routed token, 4 layers)
    routed = [[[int(x) for x in rng.choice(8, 2, replace=False)] for _ in range(4)] for _ in range(5)]
    (ws / "vllm.jsonl").write_text(json.dumps({"request_id": "r0", "prompt_token_ids": [1, 2, 3], "outputs": [
        {"index": 0, "token_ids": [4, 5, 6], "routed_experts": routed}]}) + "\n")
    (ws / "empty").mkdir()
    con = duckdb.connect(str(ws / "other.duckdb"))
    con.execute("CREATE TABLE t (x INTEGER)")
    con.close()
    return ws


def _field_names() -> set[str]:
    """Python names of the options that the command line spells with dashes (batch_size: --batch-size)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest for p in sub.choices.values() for a in p._actions if a.option_strings and "_" in a.dest}


_FIELD_NAMES = _field_names()


def _snapshot(ws: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in ws.rglob("*") if p.is_file()}


def _check(ws: Path, argv: list[str], capsys, monkeypatch) -> None:
    monkeypatch.chdir(ws)  # relative paths in the values land in the workspace
    before = _snapshot(ws)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    after = _snapshot(ws)
    if code == 0:  # a valid value: let the next case start from the same workspace
        for path in set(after) - set(before):
            Path(path).unlink()
        for folder in ("pq", "demo", "bogus", "placement"):
            shutil.rmtree(ws / folder, ignore_errors=True)
        return
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert not [name for name in _FIELD_NAMES if name in err], f"a Python field name in a CLI message: {err}"
    assert sorted(set(after) - set(before)) == [], f"left behind by {argv}: {err}"
    assert {k: v for k, v in after.items() if k in before} == before, f"changed by {argv}: {err}"


@pytest.mark.parametrize("command, flag, value", _option_cases())
def test_every_option_rejects_bad_values_in_one_line(ws, command, flag, value, capsys, monkeypatch):
    argv = [command, *_base(ws)[command]]
    if flag in argv:
        i = argv.index(flag)
        del argv[i:i + 2]
    _check(ws, argv + [flag, value.format(ws=ws)], capsys, monkeypatch)


@pytest.mark.parametrize("argv", [pytest.param(a, id=name) for name, a in POSITIONAL])
def test_bad_arguments_are_one_line(ws, argv, capsys, monkeypatch):
    _check(ws, [a.format(ws=ws) for a in argv], capsys, monkeypatch)
