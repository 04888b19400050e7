"""The README's code blocks run as written, and its facts about the shipped data match the data.

Shell blocks may use only what ``make demo`` installs (``moelens`` and ``python`` from ``.venv/bin``)
or ``make`` itself (the set-up block, which installs and is not re-run here). The blocks run in a
fresh folder after ``moelens demo`` (on the first 20 documents of the evaluation split, to keep the
suite fast), with ``my-data.jsonl`` / ``data.jsonl`` standing for the reader's own documents.
Blocks that work on the output of a serving engine (marked in the README by an HTML comment
just before the fence) cannot run here: each command must parse with moelens' own parser and every
moelens name a Python block uses must exist.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
INSTALLED = {"moelens", "python"}  # what `make demo` puts in .venv/bin


TEMPLATE = "<!-- example over your own engine's output files"


def _all_blocks(language: str) -> list[tuple[str, bool]]:
    """``(code, is_template)`` of every fenced block of ``language``, in order."""
    out = []
    for match in re.finditer(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M):
        before = README[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        out.append((match.group(1), before.startswith(TEMPLATE)))
    return out


def _blocks(language: str) -> list[str]:
    """The blocks that run here (not the engine templates)."""
    return [code for code, template in _all_blocks(language) if not template]


def _commands(block: str) -> list[str]:
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_shell_blocks_use_only_what_make_demo_installs():
    programs = Counter(shlex.split(command)[0] for block, _ in _all_blocks("bash") for command in _commands(block))
    assert set(programs) <= INSTALLED | {"make"}, programs
    setup = [b for b in _blocks("bash") if any(c.startswith("make ") for c in _commands(b))]
    assert len(setup) == 1 and [shlex.split(c)[:2] for c in _commands(setup[0])] == [["make", "demo"], ["make", "test"]]


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory) -> Path:
    """A folder as `make demo` leaves it, plus the reader's own documents."""
    from moelens.embedded import eval_split_path

    folder = tmp_path_factory.mktemp("readme")
    rows = eval_split_path().read_text(encoding="utf-8").splitlines()[:20]
    for name in ("my-data.jsonl", "data.jsonl"):
        (folder / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    subprocess.run(_moelens() + ["demo", "--out", "demo", "--max-docs", "20", "--no-site", "--no-progress"],
                   cwd=folder, check=True, capture_output=True, env=_env())
    return folder


def _moelens() -> list[str]:
    return [sys.executable, "-m", "moelens"]


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # .venv/bin: moelens and python, as after `make demo`
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1"}


@pytest.mark.parametrize("command", [c for b in _blocks("bash") for c in _commands(b) if not c.startswith("make ")])
def test_shell_examples_run(demo_folder, command):
    result = subprocess.run(["bash", "-c", command], cwd=demo_folder, capture_output=True, text=True, env=_env())
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip(), command


def test_engine_templates_use_real_commands_and_names():
    """What cannot run without an engine's files is still checked: commands parse, names exist."""
    import ast
    import importlib

    from moelens.cli import build_parser

    templates = [(code, language) for language in ("bash", "python") for code, t in _all_blocks(language) if t]
    assert len(templates) >= 5
    for code, language in templates:
        if language == "bash":
            for command in _commands(code):
                argv = shlex.split(command)
                assert argv[0] == "moelens", command
                build_parser().parse_args(argv[1:])  # an unknown flag or choice raises
            continue
        tree = ast.parse(code)
        modules = {alias.asname or alias.name: f"{node.module}.{alias.name}" for node in ast.walk(tree)
                   if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("moelens")
                   for alias in node.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
                module = importlib.import_module(modules[node.value.id])
                assert hasattr(module, node.attr), f"{modules[node.value.id]}.{node.attr}"


def test_python_block_runs(demo_folder):
    (block,) = _blocks("python")
    script = demo_folder / "readme_example.py"
    script.write_text(block, encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=demo_folder, capture_output=True, text=True, env=_env())
    assert result.returncode == 0, result.stderr[-2000:]
    assert (demo_folder / "runs.duckdb").exists()


def test_the_stated_facts_about_the_evaluation_split_hold():
    from moelens.embedded import eval_split_path

    rows = [json.loads(line) for line in eval_split_path().read_text(encoding="utf-8").splitlines()]
    stated = re.search(r"eval\.jsonl`, (\d+) documents in (\d+) domains - ([a-z, ]+) - and (\d+) language labels - "
                       r"([a-z, ]+)\)", " ".join(README.split()))
    assert stated, "the README states the evaluation split's size, domains and languages"
    count, n_domains, domains, n_languages, languages = stated.groups()
    words = lambda text: {w.strip() for w in re.split(r",|\band\b", text) if w.strip()}  # noqa: E731
    assert int(count) == len(rows)
    assert words(domains) == {r["domain"] for r in rows} and int(n_domains) == len(words(domains))
    assert words(languages) == {r["language"] for r in rows} and int(n_languages) == len(words(languages))
    assert f"{len(rows)}-document evaluation split" in README
    assert "math" not in {r["domain"] for r in rows}  # the README says math is in the training data only
