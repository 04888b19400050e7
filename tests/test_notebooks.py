"""The notebooks in notebooks/: committed without outputs, and each runs top to bottom on the embedded model.

Where Chromium and JupyterLab are installed (``make test``), ``tests/test_notebooks_browser.py`` runs
every notebook in a real JupyterLab and checks what it draws; elsewhere the run here, with nbclient
and the ``python3`` kernel of this environment, checks that every cell runs and every chart is
self-contained. Each notebook traces about 100 documents.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IN_JUPYTERLAB = Path("/usr/bin/chromium").exists() and importlib.util.find_spec("jupyterlab") is not None
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMEOUT_PER_CELL = 300
IDS = [p.stem for p in NOTEBOOKS]


def test_there_are_notebooks_for_each_topic():
    names = " ".join(IDS)
    for topic in ("quickstart", "specialization", "collapse", "comparison"):
        assert topic in names, f"no notebook about {topic}: {IDS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_notebook_has_no_outputs(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs: strip them before committing"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
    assert "widgets" not in nb.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_imports_only_moelens_polars_and_altair(path):
    import ast

    import nbformat

    nb = nbformat.read(path, as_version=4)
    allowed = {"moelens", "polars", "altair", "tempfile", "pathlib"}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


@pytest.mark.slow
@pytest.mark.skipif(IN_JUPYTERLAB, reason="run in JupyterLab by tests/test_notebooks_browser.py")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    # the kernel inherits this: a tiny model runs fastest single-threaded, and CI shares its cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=TIMEOUT_PER_CELL, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    started = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"{path.name} failed:\n{error}")
    seconds = time.perf_counter() - started
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    # every chart cell displayed a self-contained chart: the Vega runtime inline, no CDN
    charts = [o for c in code for o in c.outputs if "text/html" in o.get("data", {}) and "vegaEmbed" in o["data"]["text/html"]]
    assert charts, f"{path.name} displayed no chart"
    for o in charts:
        html = o["data"]["text/html"]
        assert "cdn.jsdelivr" not in html and "<script src=" not in html
        assert 'class="moelens-chart"' in html  # moelens' renderer, not Altair's inline template
    print(f"{path.name}: {seconds:.1f}s")
