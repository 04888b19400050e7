"""Bad input: one line naming the problem and the fix, a non-zero exit, and the database untouched."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from moelens.cli import main


def _digest(path: Path) -> str | None:
    if not path.exists():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run_cli(capsys, args):
    capsys.readouterr()  # drop what fixtures printed (e.g. save_pretrained's progress bar)
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err.strip()


def _assert_one_line_error(code, err, *needles):
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


@pytest.fixture
def db_with_run(tiny_model_dir, labelled_jsonl, tmp_path):
    out = tmp_path / "db.duckdb"
    assert main(["trace", str(tiny_model_dir), str(labelled_jsonl), "--out", str(out), "--max-docs", "3",
                 "--no-progress"]) == 0
    return out


def _trace_args(model, data, out, *extra):
    return ["trace", str(model), str(data), "--out", str(out), "--no-progress", *extra]


def test_model_without_moe_layers(tmp_path, labelled_jsonl, capsys):
    import transformers

    folder = tmp_path / "llama"
    transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=320, hidden_size=32, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    ).save_pretrained(folder)
    out = tmp_path / "o.duckdb"
    code, err = _run_cli(capsys, _trace_args(folder, labelled_jsonl, out))
    _assert_one_line_error(code, err, "no Mixture-of-Experts layers")
    assert not out.exists()


def test_unknown_moe_architecture_lists_where_to_find_supported(tmp_path, labelled_jsonl, capsys):
    import torch
    import transformers

    class BrandNewMoeConfig(transformers.PretrainedConfig):
        model_type = "brand_new_moe"

        def __init__(self, num_experts=16, vocab_size=320, **kw):
            self.num_experts, self.vocab_size = num_experts, vocab_size
            super().__init__(**kw)

    class BrandNewMoeForCausalLM(transformers.PreTrainedModel):
        config_class = BrandNewMoeConfig

        def __init__(self, config):
            super().__init__(config)
            self.emb = torch.nn.Embedding(config.vocab_size, 8)
            self.post_init()

    transformers.AutoConfig.register("brand_new_moe", BrandNewMoeConfig, exist_ok=True)
    transformers.AutoModelForCausalLM.register(BrandNewMoeConfig, BrandNewMoeForCausalLM, exist_ok=True)
    folder = tmp_path / "new"
    BrandNewMoeForCausalLM(BrandNewMoeConfig()).save_pretrained(folder)
    out = tmp_path / "o.duckdb"
    code, err = _run_cli(capsys, _trace_args(folder, labelled_jsonl, out))
    _assert_one_line_error(code, err, "brand_new_moe", "moelens families")
    assert not out.exists()


def test_missing_model_path(tmp_path, labelled_jsonl, capsys):
    out = tmp_path / "o.duckdb"
    code, err = _run_cli(capsys, _trace_args(tmp_path / "nope" / "model", labelled_jsonl, out))
    _assert_one_line_error(code, err, "no model folder")
    assert not out.exists()


def test_missing_text_column_names_the_columns(tiny_model_dir, labelled_jsonl, tmp_path, capsys):
    out = tmp_path / "o.duckdb"
    code, err = _run_cli(capsys, _trace_args(tiny_model_dir, labelled_jsonl, out, "--text-column", "body"))
    _assert_one_line_error(code, err, "'body'", "text, domain, language", "--text-column")
    assert not out.exists()


def test_empty_dataset(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    out = tmp_path / "o.duckdb"
    code, err = _run_cli(capsys, _trace_args(tiny_model_dir, data, out))
    _assert_one_line_error(code, err, "no documents")
    assert not out.exists()


def test_only_whitespace_documents(tiny_model_dir, tmp_path, capsys, write_jsonl):
    data = write_jsonl(tmp_path / "ws.jsonl", [{"text": "  "}, {"text": "\n\t"}])
    out = tmp_path / "o.duckdb"
    code, err = _run_cli(capsys, _trace_args(tiny_model_dir, data, out))
    _assert_one_line_error(code, err, "empty or whitespace-only")
    assert not out.exists()


def test_input_ids_outside_the_vocabulary(tiny_model_dir, tmp_path, capsys, write_jsonl):
    data = write_jsonl(tmp_path / "ids.jsonl", [{"input_ids": [1, 2, 3]}, {"input_ids": [4, 99999]}])
    out = tmp_path / "o.duckdb"
    code, err = _run_cli(capsys, _trace_args(tiny_model_dir, data, out))
    _assert_one_line_error(code, err, "99999", "vocabulary")
    assert not out.exists()


def test_non_utf8_text_file(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "latin1.txt"
    data.write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    out = tmp_path / "o.duckdb"
    code, err = _run_cli(capsys, _trace_args(tiny_model_dir, data, out))
    _assert_one_line_error(code, err, "not UTF-8", "iconv")
    assert not out.exists()


def test_database_of_another_schema_version(db_with_run, tiny_model_dir, labelled_jsonl, capsys):
    con = duckdb.connect(str(db_with_run))
    con.execute("UPDATE moelens_meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    before = _digest(db_with_run)
    code, err = _run_cli(capsys, _trace_args(tiny_model_dir, labelled_jsonl, db_with_run, "--run-id", "other"))
    _assert_one_line_error(code, err, "schema version 99")
    assert _digest(db_with_run) == before


def test_database_locked_by_another_writer(db_with_run, tiny_model_dir, labelled_jsonl, capsys):
    holder = subprocess.Popen([sys.executable, "-c",
                               f"import duckdb, time; c = duckdb.connect({str(db_with_run)!r}); print('ok', flush=True);"
                               " time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        code, err = _run_cli(capsys, _trace_args(tiny_model_dir, labelled_jsonl, db_with_run, "--run-id", "x"))
        _assert_one_line_error(code, err, "another process", f"PID {holder.pid}")
    finally:
        holder.kill()
        holder.wait()


def test_corrupt_database_file(tiny_model_dir, labelled_jsonl, tmp_path, capsys):
    out = tmp_path / "bad.duckdb"
    out.write_bytes(b"this is not a database" * 200)
    before = _digest(out)
    code, err = _run_cli(capsys, _trace_args(tiny_model_dir, labelled_jsonl, out))
    _assert_one_line_error(code, err, "not a readable DuckDB database")
    assert _digest(out) == before


def test_resume_with_different_options_is_refused(db_with_run, tiny_model_dir, labelled_jsonl, capsys):
    before = _digest(db_with_run)
    code, err = _run_cli(capsys, _trace_args(tiny_model_dir, labelled_jsonl, db_with_run,
                                             "--max-docs", "3", "--max-length", "16"))
    # options are spelled as flags on the command line, never as Python field names
    _assert_one_line_error(code, err, "--max-length", "--overwrite")
    assert "max_length" not in err
    assert _digest(db_with_run) == before


def test_bad_option_values(tiny_model_dir, labelled_jsonl, tmp_path, capsys):
    code, err = _run_cli(capsys, _trace_args(tiny_model_dir, labelled_jsonl, tmp_path / "o.duckdb",
                                             "--batch-size", "0"))
    _assert_one_line_error(code, err, "--batch-size must be a positive integer")
    assert "batch_size" not in err


def test_unexpected_errors_are_one_line_without_debug(monkeypatch, capsys):
    import moelens.cli.families as fam

    monkeypatch.setattr(fam, "run", lambda args: (_ for _ in ()).throw(ZeroDivisionError("oops")))
    monkeypatch.setattr(sys, "argv", ["moelens", "families"])
    monkeypatch.delenv("MOELENS_DEBUG", raising=False)
    code = main(["families"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("internal error: ZeroDivisionError: oops") and "\n" not in err
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "families"])


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["trace", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "moelens trace moelens-mini data.jsonl --out runs.duckdb" in out


def test_the_library_names_options_as_parameters_and_the_cli_as_flags(tmp_path, capsys):
    """One error, two spellings: Python callers see run='b', the command line --run b."""
    import numpy as np

    import moelens
    from moelens.analysis import from_arrays
    from moelens.errors import RunNotFoundError
    from moelens.store.arrays import save_routing

    db = tmp_path / "two.duckdb"
    e = np.zeros((1, 4, 1), np.int16)
    for run in ("a", "b"):
        save_routing(from_arrays(e, num_experts=2), db, run_id=run)
    with moelens.open(db) as t, pytest.raises(RunNotFoundError) as err:
        t.load()
    assert str(err.value) == f"{db} holds 2 runs; choose one with run (e.g. run='b')."
    code, cli = _run_cli(capsys, ["report", str(db)])
    _assert_one_line_error(code, cli, f"{db} holds 2 runs; choose one with --run (e.g. --run b).")


def test_option_rendering_by_hand():
    from moelens.errors import ConfigError, option

    error = ConfigError(f"{option('logits', True)} cannot go with {option('mode', 'stats')}; {option('layers', (1, 2))}"
                        f" was {option('max_docs', None)}, see {option('batch_size')}.")
    assert str(error) == "logits=True cannot go with mode='stats'; layers=(1, 2) was max_docs=None, see batch_size."
    flags = {"logits": "--logits", "mode": "--mode", "layers": "--layers", "max_docs": "--max-docs",
             "batch_size": "--batch-size"}
    assert error.render(flags.get) == ("--logits cannot go with --mode stats; --layers 1,2 was no --max-docs, "
                                       "see --batch-size.")
    assert error.options == ("logits", "mode", "layers", "max_docs", "batch_size")


def test_piped_tables_are_not_cut_to_80_columns(tmp_path):
    """Defect: redirected output cut cells (`lay…`, `82,…`)."""
    import numpy as np

    from moelens.analysis import from_arrays
    from moelens.store.arrays import save_routing

    db = tmp_path / "wide.duckdb"
    rng = np.random.default_rng(0)
    doc = np.repeat(np.arange(40), 30)
    save_routing(from_arrays(np.argsort(rng.random((2, 1200, 8)), axis=2)[:, :, :2].astype(np.int16), num_experts=8,
                             doc_id=doc), db, run_id="w")
    env = {k: v for k, v in __import__("os").environ.items() if k != "COLUMNS"}
    out = subprocess.run([sys.executable, "-m", "moelens", "report", str(db)], capture_output=True, text=True, env=env,
                         check=True).stdout  # stdout is a pipe, as with `| less` or `> file`
    assert "…" not in out
    header = next(line for line in out.splitlines() if line.startswith("┃") and "max/mean" in line)
    assert all(col in header for col in ("layer", "tokens", "imbalance", "verdict")) and len(header) > 80
    assert "1,200" in out


def test_a_missing_data_file_is_not_blamed_on_the_datasets_package(tmp_path, monkeypatch):
    from moelens.data import load_documents
    from moelens.errors import DataNotFoundError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.json").write_text("[]")
    with pytest.raises(DataNotFoundError) as err:
        load_documents("data.jsonl")
    assert "datasets" not in str(err.value) and "(did you mean data.json?)" in str(err.value)
    with pytest.raises(DataNotFoundError, match="hub cannot be reached"):  # a hub id, offline: at once
        load_documents("org/some-dataset")


def test_model_names_fail_fast_offline_with_did_you_mean(tmp_path, monkeypatch):
    from moelens.errors import ModelNotFoundError
    from moelens import hub
    from moelens.models.loading import resolve_model

    with pytest.raises(ModelNotFoundError, match=r"no model 'moelens-mni' \(did you mean moelens-mini\?\).*offline"):
        resolve_model("moelens-mni")
    (tmp_path / "notes").mkdir()
    with pytest.raises(ModelNotFoundError, match="is a folder but not a model: it has no config.json"):
        resolve_model(str(tmp_path / "notes"))
    # without HF_HUB_OFFLINE, an unreachable hub is found by one bounded connect, not by retries
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    attempts = []

    def refuse(address, timeout):
        attempts.append((address, timeout))
        raise OSError("unreachable")

    hub._unreachable.cache_clear()
    monkeypatch.setattr(hub.socket, "create_connection", refuse)
    try:
        with pytest.raises(ModelNotFoundError, match="did you mean moelens-mini-early"):
            resolve_model("moelens-mini-erly")
    finally:
        hub._unreachable.cache_clear()
    assert attempts == [(("huggingface.co", 443), hub.PROBE_SECONDS)]
