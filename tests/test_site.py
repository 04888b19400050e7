"""The dashboard's data (export_site): every number checked against the database's own SQL views.

A tiny random MoE is traced over a labelled corpus (plus a stats-mode run, which has nothing per
token to show); the exported ``data/*.js`` files are read back and compared with ``routes``,
``tokens`` and ``documents``. Hand-made runs check the run comparison, the caps and the untested
state. The corpus has Chinese text, which the tiny byte-level tokenizer cuts inside characters.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest

import moelens
from moelens.analysis.routing import from_arrays
from moelens.errors import StoreError
from moelens.store.arrays import save_routing
from moelens.viz.site import export_site, js_json, read_data_file
from moelens.viz.sitedata import SiteCaps

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "def double(x):\n    return 2 * x\n",
    "Article 1. All human beings are born free and equal in dignity and rights.",
    "敏捷的棕色狐狸跳过了懒狗。",
]
PAYLOAD = "Payload <script>alert(1)</script> <img src=x onerror=alert(1)> \"q\" 'q' </div> </script> & end"


def corpus_rows() -> list[dict]:
    rows = []
    for i in range(21):
        rows.append({"text": TEXTS[i % 4] * (1 + i % 3), "domain": ["prose", "prose", "code", "legal"][i % 4],
                     "language": ["en", "de", "python", "en"][i % 4]})
    rows += [{"text": TEXTS[4] * 2, "domain": "prose", "language": "zh"}] * 3  # 3 documents: zh is not tested
    rows.append({"text": PAYLOAD, "domain": "<img src=x onerror=alert(2)>", "language": "en"})
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def traced(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    data = write_rows(root / "docs.jsonl", corpus_rows())
    db = root / "t.duckdb"
    moelens.trace(str(tiny_model_dir), str(data), out=str(db), run_id="tiny", batch_size=4, progress=False)
    moelens.trace(str(tiny_model_dir), str(data), out=str(db), run_id="stats-only", mode="stats", progress=False)
    site = root / "site"
    index_html = export_site(db, site, caps=SiteCaps(chunk_docs=10))
    return db, site, index_html


def sql(db, query, params=None):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(query, params or []).fetchall()
    finally:
        con.close()


def run_file(site: Path, index: int = 0) -> dict:
    return read_data_file(site / "data" / f"run-{index}.js")


def documents(site: Path, index: int = 0) -> list[dict]:
    """The token view's documents: the run file's list joined with their chunk files."""
    run = run_file(site, index)
    chunks = {}
    for c in range(run["chunks"]):
        data = read_data_file(site / "data" / f"run-{index}-docs-{c}.js")
        assert data["schema"] == "moelens.site-docs/1" and data["chunk"] == c
        chunks[c] = {d["doc_id"]: d for d in data["documents"]}
    return [{**meta, **chunks[meta["chunk"]][meta["doc_id"]]} for meta in run["documents"]]


def stored(view) -> str:
    """The stored text a token view shows (its fragments back in the <0x..> notation)."""
    if isinstance(view, str):
        return view
    return "".join(p if isinstance(p, str) else "".join(f"<0x{h.upper()}>" for h in p[0].split()) for p in view)


def test_js_json_is_safe_inside_a_script_and_round_trips():
    obj = {"t": ["</script><script>alert(1)</script>", "<img src=x onerror=alert(1)>", "a & b", "\u2028\u2029", "ü中"],
           "n": [1, 2.5, None]}
    text = js_json(obj)
    assert json.loads(text) == obj
    assert text.isascii()
    for bad in ("<", ">", "&", "</script"):
        assert bad not in text


def test_export_writes_index_runs_and_local_assets(traced):
    db, site, index_html = traced
    assert index_html == site / "index.html" and index_html.is_file()
    index = read_data_file(site / "data" / "index.js")
    assert index["schema"] == "moelens.site-index/1" and index["schema_version"] == 1
    assert [r["run_id"] for r in index["runs"]] == ["tiny"]
    assert index["skipped"] == [{"run_id": "stats-only", "reason": "no per-token routes (stats mode or nothing traced)"}]
    assert index["default_run"] == 0
    run = run_file(site)
    assert run["schema"] == "moelens.site-run/2" and run["schema_version"] == 2
    (num_experts, top_k), = sql(db, "SELECT num_experts, top_k FROM runs WHERE run_id = 'tiny'")
    assert (run["run"]["num_experts"], run["run"]["top_k"]) == (num_experts, top_k)
    # every script and stylesheet the page names is a relative path to a file of the site
    html = index_html.read_text(encoding="utf-8")
    import re

    refs = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert refs and all("//" not in r and (site / r).is_file() for r in refs), refs
    for name in ("app.js", "core.js", "vendor/vega.js", "app.css"):
        assert (site / name).is_file()


def test_load_cells_equal_the_routes_view(traced):
    db, site, _ = traced
    run = run_file(site)
    expected = {(layer, expert): n for layer, expert, n in sql(
        db, "SELECT layer, expert, count(*) FROM routes WHERE run_id = 'tiny' AND expert >= 0 GROUP BY ALL")}
    layers = [r[0] for r in sql(db, "SELECT layer FROM sites WHERE run_id = 'tiny' AND is_primary ORDER BY layer")]
    E = run["run"]["num_experts"]
    assert run["run"]["layers"] == layers
    assert len(run["experts"]) == len(layers) * E
    for x in run["experts"]:
        assert x["count"] == expected.get((x["layer"], x["expert"]), 0)
    for row in run["layers"]:
        assert row["counts"] == [expected.get((row["layer"], e), 0) for e in range(E)]
        total = sum(row["counts"])
        assert row["load"] == pytest.approx([c / total for c in row["counts"]], rel=1e-3)


def test_token_view_documents_equal_tokens_and_routes(traced):
    db, site, _ = traced
    run = run_file(site)
    (n_docs,), = sql(db, "SELECT count(*) FROM documents WHERE run_id = 'tiny'")
    docs = documents(site)
    assert len(docs) == n_docs and run["chunks"] == 3  # every document (25), in chunks of 10
    assert [d["doc_id"] for d in docs] == sorted(d["doc_id"] for d in docs)
    layers, k = run["run"]["layers"], run["run"]["top_k"]
    for doc in docs:
        texts = [t for _, t in sql(db, "SELECT pos, token FROM tokens WHERE run_id = 'tiny' AND doc_id = ? ORDER BY pos",
                                   [doc["doc_id"]])]
        T = doc["shown_tokens"]
        assert doc["n_tokens"] == len(texts) and T == min(len(texts), SiteCaps().max_doc_tokens)
        assert [stored(v) for v in doc["tokens"]] == texts[:T] and all(texts)
        experts = np.full((len(layers), T, k), -1)
        weights = np.zeros((len(layers), T, k))
        for layer, pos, rank, expert, weight in sql(
                db, "SELECT layer, pos, rank, expert, weight FROM routes WHERE run_id = 'tiny' AND doc_id = ? AND pos < ?",
                [doc["doc_id"], T]):
            experts[layers.index(layer), pos, rank] = expert
            weights[layers.index(layer), pos, rank] = weight
        assert doc["experts"] == experts.reshape(-1).tolist()
        assert np.abs(np.array(doc["weights"]) / 1000 - weights.reshape(-1)).max() <= 0.0005 + 1e-6
    payload = [d for d in docs if d["domain"] == "<img src=x onerror=alert(2)>"]
    assert len(payload) == 1 and "".join(payload[0]["tokens"]) == PAYLOAD
    # the Chinese documents: characters cut by the byte-level tokenizer are fragments with the whole character
    zh = next(d for d in docs if d["language"] == "zh")
    fragments = [p for v in zh["tokens"] if not isinstance(v, str) for p in v if not isinstance(p, str)]
    assert fragments
    for hexbytes, char, first, size in fragments:
        data = bytes.fromhex(hexbytes)
        assert char in TEXTS[4] and char.encode("utf-8")[first:first + len(data)] == data and size == 3


def test_search_index_lists_every_token_and_its_documents(traced):
    db, site, _ = traced
    index = read_data_file(site / "data" / "run-0-search.js")
    assert index["schema"] == "moelens.site-search/1"
    docs = documents(site)
    position = {d["doc_id"]: i for i, d in enumerate(docs)}
    expected: dict[int, dict[int, int]] = {}
    for doc_id, token_id, n in sql(db, "SELECT doc_id, token_id, count(*) FROM tokens WHERE run_id = 'tiny' GROUP BY ALL"):
        expected.setdefault(token_id, {})[position[doc_id]] = n
    assert index["ids"] == sorted(expected)
    for j, token_id in enumerate(index["ids"]):
        post = index["docs"][j]
        assert dict(zip(post[::2], post[1::2])) == expected[token_id]
        assert index["count"][j] == sum(expected[token_id].values())
        (text,), = sql(db, "SELECT DISTINCT token FROM tokens WHERE run_id = 'tiny' AND token_id = ?", [token_id])
        assert index["match"][j].startswith(text) and stored(index["views"][j]) == text
    # a text search for a Chinese character finds the tokens holding its bytes too
    fox = [j for j, m in enumerate(index["match"]) if "狐" in m]
    assert any("<0x" in index["match"][j] for j in fox)


def test_specialization_cells_equal_shares_counted_in_sql(traced):
    db, site, _ = traced
    run = run_file(site)
    label = next(lab for lab in run["labels"] if lab["name"] == "domain")
    n_value = dict(sql(db, "SELECT d.domain, count(*) FROM tokens t JOIN documents d USING (run_id, doc_id) "
                           "WHERE t.run_id = 'tiny' GROUP BY ALL"))
    n_cell = {(layer, v, e): n for layer, v, e, n in sql(
        db, "SELECT r.layer, d.domain, r.expert, count(*) FROM routes r JOIN documents d USING (run_id, doc_id) "
            "WHERE r.run_id = 'tiny' AND r.expert >= 0 GROUP BY ALL")}
    cells = label["cells"]
    assert sorted(label["values"]) == sorted(n_value)
    assert len(cells["layer"]) == len(run["run"]["layers"]) * len(label["values"]) * run["run"]["num_experts"]
    for i in range(len(cells["layer"])):
        layer, value, e = cells["layer"][i], label["values"][cells["value"][i]], cells["expert"][i]
        assert cells["count"][i] == n_cell.get((layer, value, e), 0)
        assert cells["share"][i] == pytest.approx(n_cell.get((layer, value, e), 0) / n_value[value], rel=1e-3, abs=1e-9)
    # a value is tested only with >= 20 tokens in >= 5 documents (docs/metrics.md); otherwise the cell is
    # "untested" with the reason, never "not significant"
    docs_per_value = dict(sql(db, "SELECT domain, count(*) FROM documents WHERE run_id = 'tiny' GROUP BY ALL"))
    for i in range(len(cells["layer"])):
        value = label["values"][cells["value"][i]]
        enough = docs_per_value[value] >= 5 and n_value[value] >= 20
        routed = n_cell.get((cells["layer"][i], value, cells["expert"][i]), 0) or any(
            n for (layer, _, e), n in n_cell.items() if (layer, e) == (cells["layer"][i], cells["expert"][i]))
        assert cells["tested"][i] == int(enough and bool(routed))
        assert cells["state"][i] == ("untested" if not cells["tested"][i] else
                                     "significant" if cells["significant"][i] else "not_significant")
        if not enough:
            plural = "s" if docs_per_value[value] != 1 else ""
            why = ([f"{docs_per_value[value]} document{plural} < 5 needed"] if docs_per_value[value] < 5 else []) + \
                ([f"{n_value[value]} tokens < 20 needed"] if n_value[value] < 20 else [])
            assert cells["untested_reason"][i] == ", ".join(why)
        else:
            assert cells["untested_reason"][i] is None or cells["untested_reason"][i] == "expert never routed at this layer"
    language = next(lab for lab in run["labels"] if lab["name"] == "language")
    assert language["value_untested"][language["values"].index("zh")] == "3 documents < 5 needed"
    assert language["value_untested"][language["values"].index("en")] is None
    # significance is the report's rule: the cells flagged are the facade's significant rows
    with moelens.open(db) as t:
        sig = t.specialization("domain", run="tiny", significant=True)
    flagged = {(cells["layer"][i], label["values"][cells["value"][i]], cells["expert"][i])
               for i in range(len(cells["layer"])) if cells["significant"][i]}
    assert flagged == set(zip(sig["layer"].to_list(), sig["value"].to_list(), sig["expert"].to_list()))


def test_expert_cards_contexts_and_tokens_come_from_the_database(traced):
    db, site, _ = traced
    run = run_file(site)
    best = {(layer, e): w for layer, e, w in sql(
        db, "SELECT layer, expert, max(weight) FROM routes WHERE run_id = 'tiny' AND expert >= 0 GROUP BY ALL")}
    caps = SiteCaps()
    for x in run["experts"]:
        if x["count"] == 0:
            assert x["contexts"] == [] and x["never_routed"] and x["dead"]
            continue
        assert 1 <= len(x["contexts"]) <= caps.contexts_per_expert
        assert len({c["doc_id"] for c in x["contexts"]}) == len(x["contexts"])  # one per document
        assert x["contexts"][0]["weight"] == pytest.approx(best[(x["layer"], x["expert"])], rel=1e-3)
        for c in x["contexts"]:
            (expert,), = sql(db, "SELECT expert FROM routes WHERE run_id = 'tiny' AND doc_id = ? AND pos = ? "
                                 "AND layer = ? AND rank = ?", [c["doc_id"], c["pos"], x["layer"], c["slot"]])
            assert expert == x["expert"]
            texts = dict(sql(db, "SELECT pos, token FROM tokens WHERE run_id = 'tiny' AND doc_id = ?", [c["doc_id"]]))
            p = c["pos"]
            assert stored(c["token"]) == texts[p]
            assert [stored(v) for v in c["before"]] == [texts[q] for q in range(max(0, p - caps.context_window), p)]
            assert [stored(v) for v in c["after"]] == [texts[q] for q in range(p + 1, min(len(texts), p + caps.context_window + 1))]
        assert sum(x["weight_hist"]) == x["count"]
        assert x["utilization"] == pytest.approx(x["load"] * run["run"]["num_experts"], rel=1e-3)
        assert x["overloaded"] == (x["utilization"] >= caps.overloaded)
    freq = {(layer, e, tid): n for layer, e, tid, n in sql(
        db, "SELECT r.layer, r.expert, t.token_id, count(*) FROM routes r JOIN tokens t USING (run_id, doc_id, pos) "
            "WHERE r.run_id = 'tiny' AND r.expert >= 0 GROUP BY ALL")}
    for x in run["experts"]:
        counts = [t["count"] for t in x["frequent_tokens"]]
        assert counts == sorted(counts, reverse=True)
        for t in x["frequent_tokens"]:
            assert t["count"] == freq[(x["layer"], x["expert"], t["token_id"])]
        mine = sorted((n for (layer, e, _), n in freq.items() if (layer, e) == (x["layer"], x["expert"])), reverse=True)
        assert counts == mine[:len(counts)] and len(counts) == min(len(mine), SiteCaps().top_tokens)


def test_caps_bound_documents_tokens_and_contexts(traced, tmp_path):
    db, _, _ = traced
    caps = SiteCaps(max_docs=5, max_doc_tokens=5, contexts_per_expert=1, context_window=2, top_tokens=2, partners=1)
    export_site(db, tmp_path / "small", caps=caps)
    run = run_file(tmp_path / "small")
    assert all(d["shown_tokens"] == 5 for d in documents(tmp_path / "small"))
    # round-robin over the (domain, language) groups: prose/en 0, prose/de 1, code/python 2, legal/en 3 and the
    # payload document 21 - not the first five documents
    assert [d["doc_id"] for d in run["documents"]] == [0, 1, 2, 3, 21]
    index = read_data_file(tmp_path / "small" / "data" / "run-0-search.js")
    assert sum(index["count"]) == 5 * 5  # the search covers exactly the exported tokens
    for x in run["experts"]:
        assert len(x["contexts"]) <= 1 and len(x["frequent_tokens"]) <= 2 and len(x["partners"]) <= 1
        for c in x["contexts"]:
            assert len(c["before"]) <= 2 and len(c["after"]) <= 2


def test_only_the_given_run_and_errors(traced, tmp_path):
    db, _, _ = traced
    export_site(db, tmp_path / "one", run_id="tiny")
    assert [r["run_id"] for r in read_data_file(tmp_path / "one" / "data" / "index.js")["runs"]] == ["tiny"]
    with pytest.raises(StoreError, match="no run of"):
        export_site(db, tmp_path / "none", run_id="stats-only")
    with pytest.raises(StoreError, match="no run 'nope'"):
        export_site(db, tmp_path / "none", run_id="nope")


def test_runs_switch_and_comparison_equals_hand_computed_saturation(tmp_path):
    # one layer, E = 4, k = 2, four tokens; |A ∩ B| / k = 1, .5, .5, 1 -> .75; top-1 equal for tokens 0 and 3
    a = np.array([[0, 1], [0, 1], [2, 3], [2, 3]])
    b = np.array([[0, 1], [1, 2], [3, 1], [2, 3]])
    db = tmp_path / "ab.duckdb"
    docs = [{"doc_id": 0, "domain": "x", "language": "en"}]
    for name, experts in (("a", a), ("b", b)):
        routing = from_arrays(experts, num_experts=4, token_id=[5, 6, 7, 8], documents=docs, run_id=name,
                              weights=np.full(experts.shape, 0.5, np.float32))
        routing.tokens = ["w", "x", "y", "z"]
        save_routing(routing, db, run_id=name)
    export_site(db, tmp_path / "site")
    index = read_data_file(tmp_path / "site" / "data" / "index.js")
    assert [r["run_id"] for r in index["runs"]] == ["a", "b"] and index["default_run"] == 1
    assert [r["file"] for r in index["runs"]] == ["data/run-0.js", "data/run-1.js"]
    (comp,) = index["comparisons"]
    (layer,) = comp["layers"]
    assert (comp["run_a"], comp["run_b"], comp["tokens"]) == ("a", "b", 4)
    assert layer["saturation"] == pytest.approx(0.75) and layer["top1_agreement"] == pytest.approx(0.5)
    assert layer["baseline_saturation"] == pytest.approx(0.5) and layer["baseline_top1"] == pytest.approx(0.25)
    # shares a: 1/4 each; b: 1/8, 3/8, 1/4, 1/4 -> TV = (1/8 + 1/8) / 2
    assert layer["load_tv"] == pytest.approx(0.125)
    assert run_file(tmp_path / "site", 1)["layers"][0]["counts"] == [1, 3, 2, 2]
    export_site(db, tmp_path / "first", default_run="a")
    assert read_data_file(tmp_path / "first" / "data" / "index.js")["default_run"] == 0
    with pytest.raises(StoreError, match="default_run 'c'"):
        export_site(db, tmp_path / "bad", default_run="c")


def test_cli_export_site(traced, tmp_path):
    db, _, _ = traced
    out = subprocess.run([sys.executable, "-m", "moelens", "export", str(db), "--site", str(tmp_path / "cli")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert str(tmp_path / "cli" / "index.html") in out.stdout
    assert (tmp_path / "cli" / "data" / "run-0.js").is_file()


def test_dashboard_glossary_and_docs_glossary_agree_and_the_page_keeps_one_word_per_concept():
    import re

    root = Path(__file__).resolve().parents[1]
    js = (root / "web" / "glossary.js").read_text(encoding="utf-8")
    md = (root / "docs" / "glossary.md").read_text(encoding="utf-8")
    block = js[js.index("M.GLOSSARY = ["):js.index("M.views.glossary")]
    js_terms = re.findall(r'^\s+\["([^"]+)", "', block, flags=re.M)
    md_terms = []
    for section in md.split("\n## ")[1:]:
        if section.startswith(("Abbreviations",)):
            continue
        body = section.split("\n### ")[0]
        md_terms += [row.split(" | ")[0][2:].replace("\\|", "|") for row in body.splitlines()
                     if row.startswith("| ") and not row.startswith(("| term", "|---"))]
    assert js_terms and js_terms == md_terms
    for name in ("CONVENTIONS", "SCORING_GROUPS"):
        table = js[js.index(f"M.{name} = {{"):]
        codes = re.findall(r'^\s+"([A-Z]\+?\d?)": "', table[:table.index("};")], flags=re.M)
        assert codes and all(f"\n| {code} | " in md for code in codes)
    # the page's own words: load (not "share of the layer"), slot (not "rank"), fair load
    pages = "".join((root / "web" / f).read_text(encoding="utf-8") for f in
                    ("overview.js", "heatmaps.js", "tokens.js", "card.js", "core.js", "tokentext.js", "palette.js"))
    strings = " ".join(re.findall(r'"[^"\n]*"|`[^`]*`', pages))
    for banned in (r"\brank\b", r"share of the layer", r"fair share", r"\bchoice \d"):
        assert not re.search(banned, strings), banned
