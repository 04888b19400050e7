"""``export_site``: write the static dashboard (``moelens export DB --site DIR``, ``moelens demo``).

The site is the static assets of :mod:`moelens.web` (HTML, CSS, JavaScript and the vendored Vega
runtime) plus data files that the Python side precomputes:

* ``data/index.js`` - schema ``moelens.site-index/1``: the runs, the default run, pairwise run
  comparisons (router saturation) and the Vega-Lite templates of :mod:`moelens.viz.specs`;
* ``data/run-<i>.js`` - schema ``moelens.site-run/2`` (:mod:`moelens.viz.sitedata`), loaded by the
  page when the run is shown;
* ``data/run-<i>-docs-<c>.js`` - schema ``moelens.site-docs/1``: chunk ``c`` of the token view's
  documents, loaded when one of them is shown;
* ``data/run-<i>-search.js`` - schema ``moelens.site-search/1``: the token search index, loaded when
  a search is typed.

Data files are JavaScript (``fetch()`` of local files is blocked under ``file://``): a one-line
assignment to a global, then the JSON on its own line. The JSON is written ASCII-only with ``<``,
``>`` and ``&`` escaped as ``\\u003c``, ``\\u003e``, ``\\u0026``, so no text from the data (token
text is untrusted input) can close the script or start markup. The page builds its DOM with
``textContent`` only. Schema: ``docs/site-data.md``.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from moelens._version import __version__
from moelens.viz.jupyter import script_json
from moelens.viz.sitedata import SiteCaps, compact, run_data

__all__ = ["export_site", "js_json", "read_data_file", "INDEX_SCHEMA", "DOCS_SCHEMA", "SEARCH_SCHEMA"]

INDEX_SCHEMA = "moelens.site-index/1"
ASSET_SUFFIXES = (".html", ".css", ".js")


js_json = script_json  # JSON that is safe inside a <script> (ASCII, <, >, & as unicode escapes)
DOCS_SCHEMA = "moelens.site-docs/1"
SEARCH_SCHEMA = "moelens.site-search/1"


def _write_data(path: Path, target: str, obj: Any) -> None:
    path.write_text(f"/* moelens dashboard data ({obj.get('schema')}); the JSON is the next line */\n{target} =\n"
                    f"{js_json(obj)}\n;\n", encoding="ascii")


def read_data_file(path: str | os.PathLike) -> Any:
    """The JSON object of a ``data/*.js`` file written by :func:`export_site`."""
    lines = Path(path).read_text(encoding="ascii").split("\n")
    return json.loads(lines[2])


def _copy_assets(out: Path) -> None:
    web = resources.files("moelens.web")

    def copy(node: Any, dest: Path, vendor: bool) -> None:
        for item in node.iterdir():
            if item.name.startswith((".", "_")):
                continue
            if item.is_dir():
                if item.name == "vendor":
                    copy(item, dest / item.name, True)
                continue
            if vendor or item.name.endswith(ASSET_SUFFIXES):
                dest.mkdir(parents=True, exist_ok=True)
                with resources.as_file(item) as src:
                    shutil.copyfile(src, dest / item.name)

    copy(web, out, False)


def _light(routing: Any) -> Any:
    """The run without gate weights and token text (kept for the pairwise comparisons)."""
    from dataclasses import replace

    return replace(routing, weights=None, tokens=None)


def _comparisons(loaded: list[Any]) -> list[dict[str, Any]]:
    from moelens.analysis.compare import align_tokens, load_shift, router_saturation
    from moelens.errors import ConfigError

    out = []
    for a, b in itertools.combinations(loaded, 2):
        try:
            al = align_tokens(a, b)
        except ConfigError:
            continue  # different architectures or data: nothing to compare
        sat = router_saturation(a, b, None, al)
        tv = {r["layer"]: r["tv"] for r in load_shift(a, b, None, al).unique("layer").iter_rows(named=True)}
        out.append({"run_a": a.run_id, "run_b": b.run_id, "tokens": int(len(al.a)),
                    "token_mismatches": al.token_mismatches,
                    "layers": [{**r, "load_tv": tv.get(r["layer"])} for r in sat.iter_rows(named=True)]})
    return out


def _run_entry(index: int, data: dict[str, Any]) -> dict[str, Any]:
    """The index's summary of one exported run."""
    run = data["run"]
    keys = ("run_id", "model", "family", "dataset", "status", "created_at", "num_experts", "top_k", "tokens",
            "documents", "layers")
    return {"index": index, "file": f"data/run-{index}.js", **{key: run.get(key) for key in keys},
            "collapsed_layers": sum(bool(r["collapsed"]) for r in data["layers"]),
            "layer_balance": [{key: r[key] for key in ("layer", "effective_experts", "effective_fraction",
                                                        "max_over_mean", "collapsed")} for r in data["layers"]]}


def export_site(db: Any, out_dir: str | os.PathLike, *, run_id: str | None = None, default_run: str | None = None,
                caps: SiteCaps = SiteCaps(), options: Any = None) -> Path:
    """Write the static dashboard of ``db`` into ``out_dir`` and return the path of its ``index.html``.

    Every run of the database is exported, or only ``run_id``; the page opens on ``default_run``
    (default: the last run) and lets the reader switch between runs. Runs without per-token routes
    (``--mode stats``, or nothing traced yet) are listed as skipped. ``caps`` bounds the sampled
    parts (documents, contexts; see :class:`SiteCaps`).
    """
    from moelens.analysis.options import ReportOptions
    from moelens.errors import RunNotFoundError, StoreError
    from moelens.store import Store
    from moelens.store.arrays import load_routing
    from moelens.viz.specs import all_specs

    options = options or ReportOptions()
    out = Path(out_dir)
    data_dir = out / "data"
    store = db if isinstance(db, Store) else Store(db, read_only=True)
    try:
        run_ids = [store.require_run(run_id).run_id] if run_id is not None else store.run_ids()
        if not run_ids:
            store.require_run(None)  # raises the "no runs yet" error
        if default_run is not None and default_run not in run_ids:
            raise RunNotFoundError(f"default_run {default_run!r} is not among the exported runs: {', '.join(run_ids)}.")
        data_dir.mkdir(parents=True, exist_ok=True)
        for old in data_dir.glob("run-*.js"):
            old.unlink()
        runs, skipped, loaded = [], [], []
        for rid in run_ids:
            if not store.con.execute("SELECT count(*) FROM tokens WHERE run_id = ?", [rid]).fetchone()[0]:
                skipped.append({"run_id": rid, "reason": "no per-token routes (stats mode or nothing traced)"})
                continue
            routing = load_routing(store, rid, weights=True, token_text=True)
            files = run_data(store, rid, caps, options, routing=routing)
            data = files.run
            index = len(runs)
            _write_data(data_dir / f"run-{index}.js", f"(window.MOELENS_RUNS = window.MOELENS_RUNS || {{}})[{index}]",
                        data)
            for c, chunk in enumerate(files.chunks):
                _write_data(data_dir / f"run-{index}-docs-{c}.js",
                            f'(window.MOELENS_DOCS = window.MOELENS_DOCS || {{}})["{index}/{c}"]',
                            {"schema": DOCS_SCHEMA, "run": index, "chunk": c, "documents": chunk})
            _write_data(data_dir / f"run-{index}-search.js",
                        f"(window.MOELENS_SEARCH = window.MOELENS_SEARCH || {{}})[{index}]",
                        {"schema": SEARCH_SCHEMA, "run": index, **files.search})
            runs.append(_run_entry(index, data))
            if len(run_ids) <= caps.max_compare_runs:
                loaded.append(_light(routing))
            del routing
        if not runs:
            raise StoreError(f"no run of {store.path} has per-token routes to show; trace with --mode routes.")
        shown = [r["index"] for r in runs if r["run_id"] == default_run]
        if default_run is not None and not shown:
            raise StoreError(f"default_run {default_run!r} has no per-token routes to show.")
        index_data = {"schema": INDEX_SCHEMA, "schema_version": 1,
                      "generator": {"name": "moelens", "version": __version__},
                      "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                      "database": os.path.basename(str(store.path)), "runs": runs,
                      "default_run": shown[0] if shown else len(runs) - 1,
                      "skipped": skipped, "comparisons": _comparisons(loaded),
                      "specs": all_specs(options.load.collapse_effective)}
        _write_data(data_dir / "index.js", "window.MOELENS_SITE", compact(index_data))
    finally:
        if not isinstance(db, Store):
            store.close()
    _copy_assets(out)
    return out / "index.html"
