"""Packaging and architecture rules: light import, public API, install layout, layering."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the moelens packages its modules may import (data flows one way:
# model -> hooks -> kernels -> store -> analysis -> presentation). The embedded registry sits
# below the model layer (models/loading resolves its short names) and imports nothing of moelens.
# moelens.tokentext (the stored form of token text, written by the tracer, read by the dashboard) is
# pure Python that imports nothing, like errors: every layer may use it. So is moelens.hub (the
# stdlib-only hub probe and "did you mean" shared by model loading and dataset reading).
BASE = {"moelens.errors", "moelens._version", "moelens.tokentext", "moelens.hub"}
ALLOWED = {
    "embedded": BASE | {"moelens.embedded"},
    "models": BASE | {"moelens.models", "moelens.embedded"},
    "hooks": BASE | {"moelens.models", "moelens.hooks"},
    "kernels": BASE | {"moelens.hooks", "moelens.kernels"},
    "store": BASE | {"moelens.store"},
    "analysis": BASE | {"moelens.store", "moelens.analysis"},
    "viz": BASE | {"moelens.store", "moelens.analysis", "moelens.viz", "moelens.web"},
}
NO_TORCH = {"embedded", "store", "analysis", "viz"}
SOURCES = {"embedded": ROOT / "moelens/embedded", "models": ROOT / "moelens/models", "hooks": ROOT / "hooks", "kernels": ROOT / "kernels",
           "store": ROOT / "store", "analysis": ROOT / "moelens/analysis", "viz": ROOT / "moelens/viz"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "moelens":
        return None
    return ".".join(parts[:2]) if len(parts) > 1 else "moelens"


@pytest.mark.parametrize("layer", sorted(SOURCES))
def test_layers_import_only_lower_layers(layer):
    violations = []
    for path in sorted(SOURCES[layer].rglob("*.py")):
        for module in _imports(path):
            if module.split(".")[0] in ("hooks", "kernels", "store"):
                violations.append(f"{path.relative_to(ROOT)}: bare import {module}")
            pkg = _package_of(module)
            if pkg is not None and pkg not in ALLOWED[layer] and pkg != "moelens":
                violations.append(f"{path.relative_to(ROOT)} imports {module}")
            if layer in NO_TORCH and module.split(".")[0] in ("torch", "transformers", "triton"):
                violations.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not violations, "\n".join(violations)


def test_no_bare_imports_of_hooks_kernels_store_anywhere():
    offenders = []
    for path in ROOT.rglob("*.py"):
        if any(part.startswith(".venv") or part in ("node_modules", "build") for part in path.relative_to(ROOT).parts):
            continue  # virtual environments (.venv, .venv-latest) hold other projects' sources
        for module in _imports(path):
            if module.split(".")[0] in ("hooks", "kernels", "store"):
                offenders.append(f"{path.relative_to(ROOT)}: {module}")
    assert not offenders, offenders


def _run(code: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_import_moelens_is_light(tmp_path):
    out = _run("import sys, moelens; heavy = [m for m in ('torch', 'transformers', 'duckdb', 'triton', "
               "'polars', 'pyarrow', 'nnsight') if m in sys.modules]; print(heavy)", tmp_path)
    assert out == "[]"


def test_public_api():
    import importlib

    import moelens

    # importing the implementing modules must not shadow the public functions
    for module in ("moelens.tracing", "moelens.capturing", "moelens.analysis.facade", "moelens.viz.notebook",
                   "moelens.config"):
        importlib.import_module(module)
    assert callable(moelens.trace) and callable(moelens.capture) and callable(moelens.open)

    assert sorted(moelens.__all__) == sorted(
        ["__version__", "capture", "intervene", "trace", "open", "TraceConfig", "load_model", "supported_families",
         "errors"])
    for name in moelens.__all__:
        assert getattr(moelens, name) is not None
    families = moelens.supported_families()
    assert len(families) == 79 and {"lara_mini", "hy_v4_vl", "inkling2_loop"} <= set(families)  # transformers 5.24
    assert {"kolibri1_1", "ergo", "minicpm5_moe", "param2moe"} <= set(families)  # transformers 5.25


def test_installed_layout_has_no_top_level_hooks_kernels_store(tmp_path):
    # from a directory outside the checkout, only the moelens.* names resolve to this project
    out = _run(
        "import importlib.util as u, json; print(json.dumps({n: (u.find_spec(n).origin if u.find_spec(n) else None)"
        " for n in ('hooks', 'kernels', 'store', 'moelens.hooks', 'moelens.kernels', 'moelens.store')}))", tmp_path)
    import json

    specs = json.loads(out)
    for name in ("hooks", "kernels", "store"):
        # another project's package of that name (PyPI's kernels, under .venv-latest inside the checkout) is fine
        assert specs[name] is None or not specs[name].startswith(str(ROOT / name)), specs
    for name in ("moelens.hooks", "moelens.kernels", "moelens.store"):
        assert specs[name] and specs[name].startswith(str(ROOT / name.split(".")[1])), specs


@pytest.mark.slow
def test_wheel_ships_models_data_and_web_but_no_top_level_hooks_kernels_store(tmp_path):
    import zipfile

    import shutil

    # build from a copy of the tracked files: an in-tree build/ folder keeps files a move left behind
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    source = tmp_path / "src"
    for name in files:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(source)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("moelens-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if "/" in n and not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"moelens"}, tops  # no tools/: the embedded model's build tooling stays in the repository
    embedded_code = sorted(n for n in names if n.startswith("moelens/embedded/") and n.endswith(".py"))
    assert embedded_code == ["moelens/embedded/__init__.py"], embedded_code
    for checkpoint in ("moelens-mini", "moelens-mini-early", "moelens-mini-collapsed"):
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            assert f"moelens/embedded/models/{checkpoint}/{f}" in names
    for f in ("moelens/embedded/data/eval.jsonl", "moelens/web/index.html", "moelens/web/vendor/vega.js",
              "moelens/hooks/attach.py", "moelens/kernels/__init__.py", "moelens/store/schema.py"):
        assert f in names, f
