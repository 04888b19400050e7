"""The notebooks in a real JupyterLab, driven by headless Chromium; their saved outputs in nbconvert's HTML.

One ``jupyter lab`` server (the ``jupyterlab`` package, a free local port, token auth, its own
config, data and workspace folders) serves a copy of ``notebooks/``. For each notebook the browser
opens it, runs all cells from the Run menu, and checks what a person would see: every chart output
holds a rendered Vega view with marks, and the page logs no error and asks nothing of the network.
The notebook is then saved from the browser; the saved outputs must hold no error and no chart that
loads code from elsewhere, and nbconvert's HTML export of them, opened from ``file://`` with the
network cut, must draw every chart too (one page, many charts: the case that broke with Altair's
inline template). One notebook also runs in Jupyter Notebook 7's UI.

These tests also run the notebooks top to bottom (``tests/test_notebooks.py`` skips its nbclient run
where they do). Set ``MOELENS_ARTIFACTS`` to keep screenshots and the HTML exports.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions"]
RUN_LIMIT_MS = 420_000  # one notebook, all cells (about 25 s alone on 2 cores)
# nbconvert's lab template links these itself (for widgets and LaTeX); charts must need nothing outside the file
NBCONVERT_TEMPLATE_URLS = ("https://cdnjs.cloudflare.com/ajax/libs/require.js/",
                           "https://cdnjs.cloudflare.com/ajax/libs/mathjax/")

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium "
                                                               "(`make browser` installs it)")]

# every output that draws a chart: its Vega view (SVG marks, or a canvas with pixels) or an error
CHART_STATE = """
root => [...root.querySelectorAll('.jp-OutputArea-output')].filter(o =>
    /vegaEmbed|vnd\\.vega/.test(o.innerHTML + (o.getAttribute('data-mime-type') || ''))).map(o => ({
  mime: o.getAttribute('data-mime-type'),
  embeds: o.querySelectorAll('.vega-embed').length,
  marks: o.querySelectorAll('.vega-embed svg .role-mark > *').length,
  canvas: [...o.querySelectorAll('.vega-embed canvas')].filter(c => c.width > 0 && c.height > 0).length,
  error: (o.querySelector('.moelens-chart-error') || {}).textContent || null,
}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    def __init__(self, root: Path, home: Path):
        pytest.importorskip("jupyterlab")
        self.root, self.token, self.port = root, secrets.token_hex(16), _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
                   JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"), OMP_NUM_THREADS="1", MPLBACKEND="agg")
        (home / "config" / "labconfig").mkdir(parents=True)
        # no "would you like news?" notification
        (home / "config" / "labconfig" / "page_config.json").write_text(json.dumps(
            {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
        self.log = open(home / "server.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             "--allow-root"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(self.api("status"), timeout=5)
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    pytest.fail("jupyter lab did not start:\n" + (home / "server.log").read_text()[-3000:])
                time.sleep(0.5)

    def api(self, path: str) -> str:
        return f"{self.base}/api/{path}?token={self.token}"

    def shutdown_kernels(self) -> None:
        for kernel in json.load(urllib.request.urlopen(self.api("kernels"), timeout=10)):
            urllib.request.urlopen(urllib.request.Request(self.api(f"kernels/{kernel['id']}"), method="DELETE"), timeout=30)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    for path in NOTEBOOKS:
        shutil.copyfile(path, root / path.name)
    server = Lab(root, tmp_path_factory.mktemp("jupyter-home"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


class Watched:
    """A page whose console errors, page errors, dialogs and requests are recorded."""

    def __init__(self, browser, width: int = 1400):
        self.context = browser.new_context(viewport={"width": width, "height": 1000})
        self.context.set_default_timeout(90_000)  # JupyterLab's first load on a busy 2-core machine
        self.page = self.context.new_page()
        self.errors, self.requests = [], []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(f"{m.text} @ {m.location.get('url')}"))
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("dialog", lambda d: (self.errors.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def close(self):
        self.context.close()


def _artifact(path: Path) -> None:
    if os.environ.get("MOELENS_ARTIFACTS"):
        target = Path(os.environ["MOELENS_ARTIFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / path.name)


def _run_all(page, url: str, menu_bar: str) -> int:
    """Open ``url``, run all cells from the Run menu, wait until every code cell ran; the number of code cells."""
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=120_000)
    # "Run all" before the kernel is connected does nothing: wait for its name in the toolbar
    page.wait_for_function("() => [...document.querySelectorAll('.jp-Toolbar-kernelName, .jp-KernelName')]"
                           ".some(e => /Python/.test(e.textContent))", timeout=120_000, polling=250)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    page.click(f"{menu_bar} .lm-MenuBar-item:has-text('Run')")
    page.click(".lm-Menu-item[data-command='runmenu:run-all']")
    n = page.evaluate("document.querySelectorAll('.jp-Notebook .jp-CodeCell').length")
    page.wait_for_function(
        "n => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]"
        ".filter(e => /\\[\\d+\\]/.test(e.textContent)).length === n "
        "&& document.querySelector(\".jp-Notebook-ExecutionIndicator[data-status='idle']\") !== null",
        arg=n, timeout=RUN_LIMIT_MS, polling=500)
    return n


def _charts(page) -> list[dict]:
    """The chart outputs, once each has drawn or failed (or 30 s passed: then as they are)."""
    for o in page.query_selector_all(".jp-OutputArea-output"):
        if "vegaEmbed" in (o.inner_html() or ""):
            o.scroll_into_view_if_needed()
    try:
        page.wait_for_function(f"() => ({CHART_STATE})(document).every(c => c.error || c.marks || c.canvas)",
                               timeout=30_000, polling=250)
    except Exception:  # noqa: BLE001 - the assertion on the state below says what is wrong
        pass
    return page.evaluate(f"({CHART_STATE})(document)")


def _assert_drawn(charts: list[dict], where: str) -> None:
    assert charts, f"{where}: no chart output"
    bad = [c for c in charts if c["error"] or not c["embeds"] or not (c["marks"] or c["canvas"])]
    assert not bad, f"{where}: {len(bad)} of {len(charts)} chart outputs hold no drawn Vega view: {bad}"


def _check_saved(path: Path) -> int:
    """The notebook as the browser saved it: every code cell ran, no error, charts need nothing from elsewhere."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "not every cell was saved executed"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, [f"{e.ename}: {e.evalue}" for e in errors]
    htmls = [o["data"]["text/html"] for c in code for o in c.outputs if "text/html" in o.get("data", {})]
    charts = [h for h in htmls if "vegaEmbed" in h]
    for html in charts:
        assert "cdn.jsdelivr" not in html and "<script src=" not in html and "require(" not in html
    return len(charts)


def _nbconvert_page(browser, saved: Path, out: Path) -> list[dict]:
    """nbconvert's HTML of the saved notebook, opened from file:// with the network cut: the charts."""
    from nbconvert import HTMLExporter

    html, _ = HTMLExporter().from_filename(str(saved))
    target = out / (saved.stem + ".html")
    target.write_text(html, encoding="utf-8")
    _artifact(target)
    w = Watched(browser)
    try:
        w.page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
        w.page.goto(target.as_uri())
        w.page.wait_for_function("() => document.querySelectorAll('.moelens-chart').length === "
                                 "document.querySelectorAll('.moelens-chart[data-rendered], .moelens-chart-error').length",
                                 timeout=60_000)
        outside = [u for u in w.requests if not u.startswith("file:")]
        assert all(u.startswith(NBCONVERT_TEMPLATE_URLS) for u in outside), outside
        errors = [e for e in w.errors if not any(u in e for u in NBCONVERT_TEMPLATE_URLS)]
        assert not errors, errors
        return w.page.evaluate("""() => [...document.querySelectorAll('.jp-OutputArea-output')]
          .filter(o => o.innerHTML.includes('vegaEmbed')).map(o => ({
            embeds: o.querySelectorAll('.vega-embed').length,
            marks: o.querySelectorAll('.vega-embed svg .role-mark > *').length,
            canvas: o.querySelectorAll('.vega-embed canvas').length,
            error: (o.querySelector('.moelens-chart-error') || {}).textContent || null}))""")
    finally:
        w.close()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_draws_every_chart_in_jupyterlab_and_in_its_html_export(lab, browser, path, tmp_path):
    started = time.perf_counter()
    w = Watched(browser)
    try:
        url = f"{lab.base}/lab/workspaces/{path.stem}/tree/{path.name}?reset&token={lab.token}"
        _run_all(w.page, url, "#jp-MainMenu")
        ran = time.perf_counter() - started
        charts = _charts(w.page)
        shot = tmp_path / f"jupyterlab-{path.stem}.png"
        w.page.screenshot(path=str(shot), full_page=True)
        _artifact(shot)
        _assert_drawn(charts, f"{path.name} in JupyterLab")
        assert not w.errors, w.errors
        assert all(u.startswith(lab.base) for u in w.requests), sorted({u for u in w.requests if not u.startswith(lab.base)})
        w.page.keyboard.press("Control+s")
        saved = lab.root / path.name
        deadline = time.monotonic() + 60
        while '"execution_count": null' in saved.read_text(encoding="utf-8") and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        w.close()
        lab.shutdown_kernels()
    assert _check_saved(saved) == len(charts)
    exported = _nbconvert_page(browser, saved, tmp_path)
    assert len(exported) == len(charts)
    _assert_drawn(exported, f"{path.name} exported by nbconvert")
    print(f"{path.name}: ran in JupyterLab in {ran:.1f}s, {len(charts)} charts; whole test {time.perf_counter() - started:.1f}s")


def test_charts_draw_in_the_jupyter_notebook_ui(lab, browser, tmp_path):
    import nbformat

    pytest.importorskip("notebook", minversion="7")
    path = next(p for p in NOTEBOOKS if "collapse" in p.stem)  # two charts side by side, and one more
    shutil.copyfile(path, lab.root / f"nb7-{path.name}")
    # Notebook 7 logs a few errors of its own here; a notebook without charts shows which
    plain = nbformat.v4.new_notebook(metadata=nbformat.read(path, as_version=4).metadata)
    plain.cells = [nbformat.v4.new_code_cell("1 + 1")]
    nbformat.write(plain, lab.root / "nb7-plain.ipynb")
    w = Watched(browser)
    try:
        _run_all(w.page, f"{lab.base}/notebooks/nb7-plain.ipynb?token={lab.token}", "#menu-panel")
        w.page.wait_for_timeout(1000)
        baseline = set(w.errors)
    finally:
        w.close()
        lab.shutdown_kernels()
    w = Watched(browser)
    try:
        _run_all(w.page, f"{lab.base}/notebooks/nb7-{path.name}?token={lab.token}", "#menu-panel")
        charts = _charts(w.page)
        shot = tmp_path / f"notebook7-{path.stem}.png"
        w.page.screenshot(path=str(shot), full_page=True)
        _artifact(shot)
        _assert_drawn(charts, f"{path.name} in Jupyter Notebook")
        assert set(w.errors) <= baseline, sorted(set(w.errors) - baseline)
        assert all(u.startswith(lab.base) for u in w.requests)
    finally:
        w.close()
        lab.shutdown_kernels()
