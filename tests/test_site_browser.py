"""The exported dashboard in a real browser: headless Debian Chromium driven by Playwright, from file://.

A tiny random MoE is traced over a labelled corpus that includes a document of HTML and script
payloads (also used as label values) and a Chinese one (its byte-level tokenizer cuts characters);
hand-made runs have whole payloads as token text and run id, a bidi override and a 300-character
token, and 16 and 64 experts for the palette. The tests compare what the page shows with the
database's SQL views (cells per heatmap, the route of a hovered token, the expert card, the search),
measure layout (bidi order, overflow) and colours (CIEDE2000, checked against Sharma's published
pairs), record every request (only file:// may appear), every console message and every dialog, and
save screenshots (copied to ``$MOELENS_ARTIFACTS`` when set).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pytest

import moelens
from moelens.analysis.routing import from_arrays
from moelens.store.arrays import save_routing
from moelens.viz.site import export_site

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium "
                                                               "(`make browser` installs it)")]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions"]
PAYLOAD = "Payload <script>alert(1)</script> <img src=x onerror=alert(1)> \"q\" 'q' </div> </script> & end"
BAD_DOMAIN = "<img src=x onerror=alert(2)>"
BAD_LANGUAGE = "</script><script>alert(3)</script>"
BAD_TOKENS = ["<script>alert(4)</script>", "<img src=x onerror=alert(5)>", "\"'", "</div>", "</script>", "&amp;"]
BAD_RUN = "</script><b onmouseover=alert(6)>run</b>"
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Der schnelle braune Fuchs springt über den faulen Hund.",
         "def double(x):\n    return 2 * x\n", "Article 1. All human beings are born free and equal in dignity."]
CHINESE = "敏捷的棕色狐狸跳过了懒狗。"
RLO = "\u202e"
BIDI_TOKENS = ["left ", RLO + "evil", " b", " c", " d"]  # an unterminated RIGHT-TO-LEFT OVERRIDE
LONG_TOKEN = "x" * 150 + "y" * 150
RUNS = {"tiny": 0, "payloads": 1, "text": 2, "palette-16": 3, "palette-64": 4}


def _save(db, run_id, experts, num_experts, docs, doc_id, tokens, token_id=None):
    experts = np.asarray(experts)
    routing = from_arrays(experts, num_experts=num_experts, doc_id=doc_id, documents=docs,
                          token_id=token_id if token_id is not None else np.arange(experts.shape[1]) % 97 + 1,
                          layers=list(range(experts.shape[0])), weights=np.full(experts.shape, 0.5, np.float32))
    routing.tokens = tokens
    save_routing(routing, db, run_id=run_id)


def palette_run(E: int, first: np.ndarray, doc_id: np.ndarray):
    """Two layers, top-2: slot 1 = ``first``, slot 2 = the next expert."""
    e = np.stack([first, (first + 1) % E], axis=1)
    return np.stack([e, e])


def expected_top(first: np.ndarray) -> list[int]:
    """The 16 experts the token view colours for E > 16: most first choices, ties to the lower id."""
    counts = np.bincount(first)
    return sorted(range(len(counts)), key=lambda e: (-counts[e], e))[:16] if len(counts) else []


@pytest.fixture(scope="module")
def site(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    rows = [{"text": TEXTS[i % 4] * (1 + i % 3), "domain": ["prose", "prose", "code", "legal"][i % 4],
             "language": ["en", "de", "python", "en"][i % 4]} for i in range(20)]
    rows += [{"text": PAYLOAD, "domain": BAD_DOMAIN, "language": BAD_LANGUAGE}] * 5  # >= 5 docs: a tested value
    rows += [{"text": CHINESE * 2, "domain": "prose", "language": "zh"}] * 2
    data = root / "docs.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    db = root / "t.duckdb"
    moelens.trace(str(tiny_model_dir), str(data), out=str(db), run_id="tiny", batch_size=4, progress=False)
    # 1: a hand-made run whose token text and run id are whole payloads
    experts = np.array([[[0, 1], [2, 3], [1, 2], [3, 0], [0, 2], [1, 3]]] * 2)
    _save(db, BAD_RUN, experts, 4, [{"doc_id": 0, "domain": BAD_DOMAIN}, {"doc_id": 1, "domain": "ok"}],
          [0, 0, 0, 1, 1, 1], BAD_TOKENS, token_id=[1, 2, 3, 4, 5, 6])
    # 2: a bidi override that must stay inside its token, and a 300-character token
    tokens = BIDI_TOKENS + [LONG_TOKEN, " after"]
    experts = np.array([[[i % 4, (i + 1) % 4] for i in range(len(tokens))]] * 2)
    _save(db, "text", experts, 4, [{"doc_id": 0, "domain": "bidi"}, {"doc_id": 1, "domain": "long"}],
          [0] * 5 + [1] * 2, tokens, token_id=list(range(10, 10 + len(tokens))))
    # 3: 16 experts; document 0 walks through all of them; domains a, b (5 documents each: tested) and c (2: not);
    # expert 15 only in domain a (lift 0 elsewhere); each document its own language (1 document: untested)
    rng = np.random.default_rng(0)
    first, doc, docs = [], [], []
    for d in range(12):
        domain = "a" if d < 5 else "b" if d < 10 else "c"
        docs.append({"doc_id": d, "domain": domain, "language": f"l{d}"})
        f = np.arange(64) % 16 if d == 0 else rng.integers(0, 14, 40)  # slot 2 (f + 1) stays below 15
        if domain == "a" and d:
            f[:8] = 15
        first.append(f)
        doc.append(np.full(len(f), d))
    first, doc = np.concatenate(first), np.concatenate(doc)
    _save(db, "palette-16", palette_run(16, first, doc), 16, docs, doc, [f"t{i % 50}" for i in range(len(first))])
    # 4: 64 experts, expert e the first choice of 40 - e tokens (e < 16) or of 2 tokens
    counts = [40 - e if e < 16 else 2 for e in range(64)]
    first = rng.permutation(np.repeat(np.arange(64), counts))
    _save(db, "palette-64", palette_run(64, first, np.zeros(len(first), int)), 64, [{"doc_id": 0, "domain": "x"}],
          np.zeros(len(first), int), [f"w{i % 30} " for i in range(len(first))])
    _plant_interventions(db)
    return db, export_site(db, root / "site")


# interventions measured on the tiny run's model, written by hand (the Causal view must show exactly these):
# intervention 0 ablates layer 1, expert 2; 1 and 2 are its random controls; 3 is a second intervention
CAUSAL = [  # (id, control_for, label_kind, label_value, d_loss, lo, hi)
    (0, None, "all", "all", 0.05, 0.03, 0.07), (0, None, "domain", "code", 0.40, 0.30, 0.50),
    (0, None, "domain", "prose", 0.02, -0.01, 0.05),
    (1, 0, "all", "all", 0.04, 0.02, 0.06), (1, 0, "domain", "code", 0.10, 0.05, 0.20),
    (1, 0, "domain", "prose", 0.03, 0.00, 0.06),
    (2, 0, "all", "all", 0.06, 0.04, 0.08), (2, 0, "domain", "code", 0.05, 0.00, 0.25),
    (2, 0, "domain", "prose", 0.01, -0.02, 0.04),
    (3, None, "all", "all", -0.001, -0.004, 0.002),
]
CAUSAL_VERDICTS = {("all", "all"): "no effect beyond noise", ("domain", "code"): "effect",
                   ("domain", "prose"): "no effect beyond noise"}  # by hand: lo > 0 and lo > the controls' highest hi


def _plant_interventions(db):
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO intervention_runs SELECT 'iv', model, dataset, 'complete', now(), 'test', '{}' FROM runs"
                " WHERE run_id = 'tiny'")
    for iid, control_for, kind, value, d, lo, hi in CAUSAL:
        experts = [2] if iid == 0 else [iid + 3]
        con.execute("INSERT INTO interventions (irun_id, intervention_id, kind, layer, experts, spec, description,"
                    " control, control_for, label_kind, label_value, n_docs, n_tokens, base_loss, d_loss, d_loss_lo,"
                    " d_loss_hi, kl, kl_lo, kl_hi, top1_agree, top1_lo, top1_hi) VALUES ('iv', ?, 'ablate', 1, ?, '{}', ?, ?, ?,"
                    " ?, ?, 3, 40, 5.0, ?, ?, ?, 0.01, 0.0, 0.02, 0.9, 0.85, 0.95)",
                    [iid, experts, f"ablate L1:E{experts[0]}", control_for is not None, control_for, kind, value, d, lo, hi])
    con.close()


def sql(db, query, params=None):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(query, params or []).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@dataclass
class Session:
    page: object
    site_dir: Path
    requests: list = field(default_factory=list)
    console: list = field(default_factory=list)
    dialogs: list = field(default_factory=list)

    def open(self, hash_: str, ready: str | None = None):
        self.page.goto((self.site_dir / "index.html").as_uri() + "#" + hash_, wait_until="domcontentloaded")
        view = dict(p.split("=", 1) for p in hash_.split("&"))["view"]
        self.page.wait_for_selector(f'#main[data-view="{view}"]')
        if view == "tokens":
            self.page.wait_for_selector("#token-text, #main .card p.muted")
        if ready:
            self.page.wait_for_selector(ready)

    def shot(self, name: str, tmp_path: Path) -> Path:
        path = tmp_path / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        if os.environ.get("MOELENS_ARTIFACTS"):
            target = Path(os.environ["MOELENS_ARTIFACTS"])
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / path.name)
        assert path.stat().st_size > 10_000
        return path

    def assert_clean(self):
        """No request left the site folder, nothing was logged as an error, no dialog opened, and the
        DOM holds no image and no script other than the site's own."""
        site_uri = self.site_dir.as_uri()
        assert self.requests and all(u.startswith(site_uri + "/") for u in self.requests), self.requests
        assert not [c for c in self.console if c[0] in ("error", "pageerror")], self.console
        assert self.dialogs == []
        assert self.page.evaluate("document.querySelectorAll('img, iframe, object, embed').length") == 0
        scripts = self.page.evaluate("[...document.scripts].map(s => s.getAttribute('src'))")
        allowed = {"vendor/vega.js", "data/index.js", "core.js", "palette.js", "tokentext.js", "glossary.js", "overview.js",
                   "heatmaps.js", "tokens.js", "card.js", "serving.js", "causal.js", "app.js"}
        data = re.compile(r"data/run-\d+(-docs-\d+|-search)?\.js")
        assert all(s in allowed or data.fullmatch(s) for s in scripts), scripts


@pytest.fixture
def session(browser, site):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(60_000)  # a shared 2-core machine can be slow; nothing here waits on a timer
    page = context.new_page()
    s = Session(page, site[1].parent)
    page.on("request", lambda r: s.requests.append(r.url))
    page.on("console", lambda m: s.console.append((m.type, m.text)))
    page.on("pageerror", lambda e: s.console.append(("pageerror", str(e))))
    page.on("dialog", lambda d: (s.dialogs.append(d.message), d.dismiss()))
    yield s
    context.close()


def cells(page, chart: str) -> list:
    return page.query_selector_all(f"#{chart} svg g.mark-rect.role-mark path")


def visible(text: str) -> str:
    """What a token shows in "bytes" mode: text as is, the bytes of a cut character in hex."""
    from moelens.tokentext import parts

    return "".join(p if isinstance(p, str) else " ".join(f"{b:02x}" for b in p) for p in parts(text))


def unisolate(text: str) -> str:
    return text.replace("\u2068", "").replace("\u2069", "")


def test_heatmaps_have_one_cell_per_layer_expert_and_value(session, site, tmp_path):
    db, _ = site
    (E,), = sql(db, "SELECT num_experts FROM runs WHERE run_id = 'tiny'")
    layers = [r[0] for r in sql(db, "SELECT layer FROM sites WHERE run_id = 'tiny' AND is_primary ORDER BY layer")]
    session.open("view=load&run=0", "#load-heatmap[data-rendered=true]")
    assert len(cells(session.page, "load-heatmap")) == len(layers) * E
    # flagged experts: dead = under 10 % of a fair share, overloaded = at least twice (counted in SQL)
    counts = {(layer, e): n for layer, e, n in sql(
        db, "SELECT layer, expert, count(*) FROM routes WHERE run_id = 'tiny' AND expert >= 0 GROUP BY ALL")}
    for row in session.page.query_selector_all("#flag-table tbody tr"):
        layer = int(row.get_attribute("data-layer"))
        c = np.array([counts.get((layer, e), 0) for e in range(E)])
        util = c / (c.sum() / E)
        never, dead, over = ([int(x.get_attribute("data-expert")) for x in td.query_selector_all(".chip")]
                             for td in row.query_selector_all("td")[1:])
        assert never == [e for e in range(E) if c[e] == 0]
        assert dead == [e for e in range(E) if 0 < c[e] and util[e] < 0.1]
        assert over == [e for e in range(E) if util[e] >= 2.0]
    session.shot("load-heatmap", tmp_path)

    values = [r[0] for r in sql(db, "SELECT DISTINCT domain FROM documents WHERE run_id = 'tiny'")]
    layer = layers[1]
    session.open(f"view=specialization&run=0&label=domain&layer={layer}", "#label-heatmap[data-rendered=true]")
    shown = cells(session.page, "label-heatmap")
    assert len(shown) == len(values) * E
    with moelens.open(db) as t:
        tests = t.specialization("domain", run="tiny", layers=[layer])
    muted = [c for c in shown if c.get_attribute("opacity") == "0.22"]
    assert len(muted) == tests.filter(tests["tested"] & ~tests["significant"]).height
    session.shot("label-heatmap", tmp_path)
    session.assert_clean()


def test_hovering_a_token_shows_its_route_through_every_layer(session, site, tmp_path):
    db, _ = site
    session.open("view=tokens&run=0&doc=2", "#token-text")
    doc_id = int(session.page.get_attribute("#token-text", "data-doc"))
    tokens = session.page.query_selector_all("#token-text .tok")
    texts = [t for _, t in sql(db, "SELECT pos, token FROM tokens WHERE run_id = 'tiny' AND doc_id = ? ORDER BY pos",
                               [doc_id])]
    assert [t.text_content() for t in tokens] == [visible(t) for t in texts]
    for pos in (0, 3, len(tokens) - 1):
        tokens[pos].hover()
        session.page.wait_for_selector(f'#route-table[data-pos="{pos}"]')
        shown = {}
        for row in session.page.query_selector_all("#route-table tr[data-layer]"):
            picks = row.query_selector_all(".route-pick")
            shown[int(row.get_attribute("data-layer"))] = [(int(p.get_attribute("data-expert")),
                                                            float(p.get_attribute("data-weight"))) for p in picks]
        expected = {}
        for layer, expert, weight in sql(db, "SELECT layer, expert, weight FROM routes WHERE run_id = 'tiny' AND "
                                             "doc_id = ? AND pos = ? ORDER BY layer, rank", [doc_id, pos]):
            expected.setdefault(layer, []).append((expert, weight))
        assert sorted(shown) == sorted(expected)
        for layer, picks in expected.items():
            assert [e for e, _ in shown[layer]] == [e for e, _ in picks]
            assert [w for _, w in shown[layer]] == pytest.approx([w for _, w in picks], abs=6e-4)
    session.shot("token-view", tmp_path)
    session.assert_clean()


def test_clicking_a_heatmap_cell_opens_the_expert_card(session, site, tmp_path):
    db, _ = site
    session.open("view=load&run=0", "#load-heatmap[data-rendered=true]")
    layer, expert, count = sql(db, "SELECT layer, expert, count(*) AS n FROM routes WHERE run_id = 'tiny' "
                                   "GROUP BY ALL ORDER BY n DESC, layer, expert LIMIT 1")[0]
    target = [c for c in cells(session.page, "load-heatmap")
              if c.get_attribute("aria-label").startswith(f"expert: {expert}; layer: {layer};")]
    assert len(target) == 1
    target[0].click()
    card = session.page.wait_for_selector("#expert-card")
    assert (card.get_attribute("data-layer"), card.get_attribute("data-expert")) == (str(layer), str(expert))
    assert card.query_selector("dl.facts dd").text_content() == f"{count:,}"
    assert card.query_selector_all(".flag")
    partner = card.query_selector(".partners .chip")
    assert partner is not None
    partner_id = partner.get_attribute("data-expert")
    session.shot("expert-card", tmp_path)
    partner.click()
    session.page.wait_for_selector(f'#expert-card[data-expert="{partner_id}"]')
    session.assert_clean()


def test_every_view_of_every_run_renders_offline(session, site, tmp_path):
    db, _ = site
    for run in RUNS.values():
        for view in ("overview", "load", "specialization", "tokens", "expert", "serving", "causal", "glossary"):
            session.open(f"view={view}&run={run}")
            session.page.wait_for_timeout(50)
            for chart in session.page.query_selector_all("#main .chart"):
                session.page.wait_for_selector(f'[data-chart="{chart.get_attribute("data-chart")}"][data-rendered=true]')
        assert session.page.eval_on_selector("#run-select", "s => s.value") == str(run)
    session.open("view=overview&run=1", "#balance-chart[data-rendered=true]")
    assert [unisolate(o.text_content()).split("  (")[0] for o in session.page.query_selector_all("#run-select option")] == \
        [r[0] for r in sql(db, "SELECT run_id FROM runs ORDER BY created_at, run_id")]
    session.shot("overview", tmp_path)
    session.assert_clean()


def test_payloads_render_as_literal_text_and_execute_nothing(session, site, tmp_path):
    db, _ = site
    page = session.page
    # the traced payload document: its tokens spell the payload, as text
    session.open("view=tokens&run=0", "#doc-select")
    index = next(o.get_attribute("value") for o in page.query_selector_all("#doc-select option") if BAD_DOMAIN in o.text_content())
    session.open(f"view=tokens&run=0&doc={index}", "#token-text")
    assert page.text_content("#token-text") == PAYLOAD
    assert page.query_selector_all("#token-text .tok")[0].text_content() == \
        sql(db, "SELECT token FROM tokens WHERE run_id = 'tiny' AND doc_id = 20 AND pos = 0")[0][0]
    # label values that are payloads: the picker, the heatmap axis and its tooltip show them as text
    session.open("view=specialization&run=0&label=domain&layer=all", "#label-heatmap[data-rendered=true]")
    assert BAD_DOMAIN in page.text_content("#label-heatmap svg")
    bad_cell = next(c for c in cells(page, "label-heatmap") if BAD_DOMAIN in c.get_attribute("aria-label"))
    bad_cell.hover()
    page.wait_for_selector("#vg-tooltip-element.visible")
    assert BAD_DOMAIN in page.text_content("#vg-tooltip-element")
    session.open("view=specialization&run=0&label=language", "#label-heatmap[data-rendered=true]")
    assert any(BAD_LANGUAGE in c.get_attribute("aria-label") for c in cells(page, "label-heatmap"))
    # the hand-made run: whole payloads as token text and as the run id
    session.open("view=tokens&run=1&doc=0", "#token-text")
    assert [t.text_content() for t in page.query_selector_all("#token-text .tok")] == BAD_TOKENS[:3]
    assert unisolate(page.eval_on_selector("#run-select", "s => s.options[s.selectedIndex].textContent")) == BAD_RUN
    page.query_selector_all("#token-text .tok")[1].hover()
    assert page.text_content(".route-token") == BAD_TOKENS[1].replace(" ", "·")
    session.shot("payloads", tmp_path)
    session.open("view=expert&run=1&layer=0&expert=0", "#expert-card")
    assert BAD_TOKENS[0] in page.text_content("#expert-card .tokens-list")
    assert page.text_content("#expert-card .context-text") == "".join(BAD_TOKENS[:3])  # expert 0 takes token 0 first
    assert page.text_content("#expert-card .context-token") == BAD_TOKENS[0]
    session.open("view=overview&run=1", "#balance-chart[data-rendered=true]")
    assert BAD_RUN in page.text_content("#main")
    assert page.evaluate("document.querySelectorAll('b, div[onerror], [onmouseover], [onerror]').length") == 0
    session.assert_clean()


# ---- token text: cut characters, bidi, long tokens ------------------------------------------------------

def test_every_token_of_a_chinese_document_is_visible_and_hoverable(session, site, tmp_path):
    db, _ = site
    page = session.page
    session.open("view=tokens&run=0", "#doc-select")
    index = next(o.get_attribute("value") for o in page.query_selector_all("#doc-select option") if "zh" in o.text_content())
    session.open(f"view=tokens&run=0&doc={index}&cut=bytes", "#token-text")
    doc_id = int(page.get_attribute("#token-text", "data-doc"))
    texts = [t for (t,) in sql(db, "SELECT token FROM tokens WHERE run_id = 'tiny' AND doc_id = ? ORDER BY pos", [doc_id])]
    spans = page.query_selector_all("#token-text .tok")
    assert len(spans) == len(texts) and all(texts)
    assert [s.text_content() for s in spans] == [visible(t) for t in texts]
    boxes = [s.bounding_box() for s in spans]
    assert all(b and b["width"] > 2 and b["height"] > 2 for b in boxes)  # every token can be seen and hovered
    cut = [i for i, t in enumerate(texts) if "<0x" in t]
    assert cut
    for i in cut[:3]:  # hover names the whole character
        title = spans[i].get_attribute("title")
        assert any(ch in title for ch in CHINESE) and "byte" in title
        spans[i].hover()
        page.wait_for_selector(f'#route-table[data-pos="{i}"]')
        assert any(ch in page.text_content(".frag-note") for ch in CHINESE)
    # character mode (the default): the character on the token holding its first byte, ◌ on the others
    session.open(f"view=tokens&run=0&doc={index}", "#token-text")
    shown = page.text_content("#token-text")
    assert shown.replace("◌", "") == CHINESE * 2 and shown.count("◌") == sum(t.startswith("<0x") and
                                                                              not t.startswith(("<0xE", "<0xF")) for t in texts)
    session.shot("token-view-chinese", tmp_path)
    session.assert_clean()


def test_a_bidi_override_stays_inside_its_token_and_long_tokens_are_cut(session, site, tmp_path):
    page = session.page
    session.open(f"view=tokens&run={RUNS['text']}&doc=0", "#token-text")
    spans = page.query_selector_all("#token-text .tok")
    assert [s.text_content() for s in spans] == BIDI_TOKENS
    xs = [s.bounding_box()["x"] for s in spans]
    # left to right in reading order: the override reverses its own token only, never the tokens after it
    assert xs == sorted(xs), xs
    # the same in the expert card's context line (expert 0 takes token 0 first: "left " then the rest)
    session.open(f"view=expert&run={RUNS['text']}&layer=0&expert=0", "#expert-card")
    line = page.query_selector("#expert-card .context-text")
    parts = line.query_selector_all(".tokn")
    assert [p.text_content() for p in parts][:5] == BIDI_TOKENS
    xs = [p.bounding_box()["x"] for p in parts[:5]]
    assert xs == sorted(xs), xs
    # a 300-character token: cut with "…", the whole text on hover, nothing overflows its box
    session.open(f"view=tokens&run={RUNS['text']}&doc=1", "#token-text")
    long = page.query_selector_all("#token-text .tok")[0]
    assert long.get_attribute("title") == LONG_TOKEN
    assert long.text_content() == LONG_TOKEN[:39] + "…" and "cut" in long.get_attribute("class")
    text_box = page.query_selector("#token-text").bounding_box()
    assert long.bounding_box()["width"] < text_box["width"]
    session.open(f"view=expert&run={RUNS['text']}&layer=0&expert=1", "#expert-card")
    assert page.evaluate("[...document.querySelectorAll('#main .card')].every(c => c.scrollWidth <= c.clientWidth + 1)")
    boxes = [b for b in page.query_selector_all("#expert-card .token-box") if b.get_attribute("title") == LONG_TOKEN]
    assert boxes and all(b.bounding_box()["width"] < 600 for b in boxes)
    session.shot("bidi-and-long-token", tmp_path)
    session.assert_clean()


# ---- expert colours ------------------------------------------------------------------------------------

def _lab(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (x / 255 for x in rgb)]
    x = 0.4124564 * lin[0] + 0.3575761 * lin[1] + 0.1804375 * lin[2]
    y = 0.2126729 * lin[0] + 0.7151522 * lin[1] + 0.0721750 * lin[2]
    z = 0.0193339 * lin[0] + 0.1191920 * lin[1] + 0.9503041 * lin[2]

    def f(t):
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    fx, fy, fz = f(x / 0.95047), f(y), f(z / 1.08883)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def ciede2000(lab1, lab2) -> float:
    """CIEDE2000 colour difference (Sharma, Wu & Dalal 2005)."""
    (L1, a1, b1), (L2, a2, b2) = lab1, lab2
    cb = (math.hypot(a1, b1) + math.hypot(a2, b2)) / 2
    g = 0.5 * (1 - math.sqrt(cb ** 7 / (cb ** 7 + 25 ** 7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1, c2 = math.hypot(a1p, b1), math.hypot(a2p, b2)
    h1 = math.degrees(math.atan2(b1, a1p)) % 360 if c1 else 0.0
    h2 = math.degrees(math.atan2(b2, a2p)) % 360 if c2 else 0.0
    dh = 0.0 if c1 * c2 == 0 else h2 - h1 - 360 if h2 - h1 > 180 else h2 - h1 + 360 if h2 - h1 < -180 else h2 - h1
    dH = 2 * math.sqrt(c1 * c2) * math.sin(math.radians(dh / 2))
    lm, cm = (L1 + L2) / 2, (c1 + c2) / 2
    hm = h1 + h2 if c1 * c2 == 0 else (h1 + h2) / 2 if abs(h1 - h2) <= 180 else \
        (h1 + h2 + 360) / 2 if h1 + h2 < 360 else (h1 + h2 - 360) / 2
    t = 1 - 0.17 * math.cos(math.radians(hm - 30)) + 0.24 * math.cos(math.radians(2 * hm)) + \
        0.32 * math.cos(math.radians(3 * hm + 6)) - 0.20 * math.cos(math.radians(4 * hm - 63))
    rt = -math.sin(math.radians(60 * math.exp(-((hm - 275) / 25) ** 2))) * 2 * math.sqrt(cm ** 7 / (cm ** 7 + 25 ** 7))
    sl = 1 + 0.015 * (lm - 50) ** 2 / math.sqrt(20 + (lm - 50) ** 2)
    sc, sh = 1 + 0.045 * cm, 1 + 0.015 * cm * t
    dl, dc = (L2 - L1) / sl, (c2 - c1) / sc
    return math.sqrt(dl ** 2 + dc ** 2 + (dH / sh) ** 2 + rt * dc * (dH / sh))


def test_ciede2000_matches_sharmas_published_pairs():
    for lab1, lab2, expected in [((50, 2.6772, -79.7751), (50, 0, -82.7485), 2.0425),
                                 ((50, 0, 0), (50, -1, 2), 2.3669), ((50, 2.5, 0), (73, 25, -18), 27.1492),
                                 ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
                                 ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082)]:
        assert ciede2000(lab1, lab2) == pytest.approx(expected, abs=1e-4)
    assert _lab((255, 255, 255)) == pytest.approx((100, 0, 0), abs=0.01)


MIN_DELTA_E = 15  # "clearly different" on a text background; the palette measures >= 18


def _colors(page, selector: str) -> dict[int, tuple[int, int, int]]:
    rows = page.evaluate(f"[...document.querySelectorAll('{selector}')].map(s => [Number(s.dataset.expert), "
                         "getComputedStyle(s).backgroundColor])")
    out = {}
    for expert, css in rows:
        rgb = tuple(int(v) for v in re.findall(r"\d+", css)[:3])
        assert out.setdefault(expert, rgb) == rgb  # one colour per expert on the page
    return out


def _min_distance(colors) -> float:
    labs = [_lab(c) for c in colors]
    return min(ciede2000(a, b) for i, a in enumerate(labs) for b in labs[i + 1:])


def test_sixteen_expert_colours_are_distinguishable(session, site, tmp_path):
    session.open(f"view=tokens&run={RUNS['palette-16']}&doc=0&layer=0", "#token-text")
    colors = _colors(session.page, "#token-text .tok")
    assert sorted(colors) == list(range(16))
    assert _min_distance(colors.values()) >= MIN_DELTA_E
    grey = _lab((230, 230, 230))
    assert min(ciede2000(_lab(c), grey) for c in colors.values()) >= MIN_DELTA_E
    # the golden-angle hues this palette replaced fail the same measure (E1/E6/E14 were all green)
    import colorsys

    old = [tuple(round(255 * v) for v in colorsys.hls_to_rgb((e * 137.508 % 360) / 360, (80 - 8 * (e // 12 % 2)) / 100, 0.7))
           for e in range(16)]
    assert _min_distance(old) < MIN_DELTA_E / 2
    session.shot("palette-16", tmp_path)
    session.assert_clean()


def test_with_64_experts_only_the_documents_top_experts_are_coloured(session, site, tmp_path):
    db, _ = site
    page = session.page
    session.open(f"view=tokens&run={RUNS['palette-64']}&doc=0&layer=0", "#token-text")
    first = np.array([e for (e,) in sql(db, "SELECT expert FROM routes WHERE run_id = 'palette-64' AND layer = 0 "
                                            "AND rank = 0 ORDER BY pos")])
    top = expected_top(first)
    assert top == list(range(16))
    colors = _colors(page, "#token-text .tok")
    grey = (230, 230, 230)
    coloured = {e for e, c in colors.items() if c != grey}
    assert coloured == set(top)
    assert _min_distance([colors[e] for e in top]) >= MIN_DELTA_E
    # the others are grey, named in the legend, and marked on the token
    others = [int(c.get_attribute("data-expert")) for c in page.query_selector_all("#token-legend .legend-others .chip")]
    assert sorted(others) == sorted(set(first.tolist()) - set(top))
    assert all("other" in s.get_attribute("class") for s in page.query_selector_all("#token-text .tok")
               if int(s.get_attribute("data-expert")) not in coloured)
    session.shot("palette-64", tmp_path)
    session.assert_clean()


# ---- untested, scales, search ---------------------------------------------------------------------------

def test_untested_is_said_with_its_reason_and_not_shown_as_no_effect(session, site, tmp_path):
    page = session.page
    run = RUNS["palette-16"]
    # every language has one document: nothing tested, and the page says so and why
    session.open(f"view=specialization&run={run}&label=language&layer=0", "#label-heatmap[data-rendered=true]")
    note = page.text_content("#untested-note")
    assert note.startswith("Not tested.") and "1 document < 5 needed" in note and "beyond noise" not in note
    shown = cells(page, "label-heatmap")
    assert len(shown) == 12 * 16 and all(c.get_attribute("fill") == "#e4e4e4" for c in shown)
    assert all(c.get_attribute("opacity") in (None, "1") for c in shown)  # grey and opaque, not faded
    assert "l0 (untested)" in page.text_content("#label-heatmap svg")
    shown[0].hover()
    page.wait_for_selector("#vg-tooltip-element.visible")
    assert "untested: 1 document < 5 needed" in page.text_content("#vg-tooltip-element")
    session.shot("untested", tmp_path)
    # domain: a and b tested (5 documents each), c untested (2)
    session.open(f"view=specialization&run={run}&label=domain&layer=0", "#label-heatmap[data-rendered=true]")
    assert "c (untested)" in page.text_content("#label-heatmap svg")
    assert "2 documents < 5 needed" in page.text_content("#main")
    # the expert card: the untested row says why; lift 0 (domain b never reaches expert 15) is not drawn as lift 1
    session.open(f"view=expert&run={run}&layer=0&expert=15", "#expert-card")
    rows = {r.get_attribute("data-value"): r for r in page.query_selector_all('.profile[data-label="domain"] tbody tr')}
    assert rows["c"].get_attribute("data-state") == "untested" and "2 documents < 5 needed" in rows["c"].text_content()
    assert rows["b"].query_selector(".lift-bar.zero") is not None and "×0.00" in rows["b"].text_content()
    from moelens.viz.site import read_data_file

    label = next(lab for lab in read_data_file(site[1].parent / "data" / f"run-{run}.js")["labels"] if lab["name"] == "domain")
    c = label["cells"]
    i = min((i for i in range(len(c["lift"])) if c["layer"][i] == 0 and c["lift"][i]), key=lambda i: abs(c["lift"][i] - 1))
    assert abs(c["lift"][i] - 1) < 0.1
    session.open(f"view=expert&run={run}&layer=0&expert={c['expert'][i]}", "#expert-card")
    row = page.query_selector(f'.profile[data-label="domain"] tbody tr[data-value="{label["values"][c["value"][i]]}"]')
    bar = row.query_selector(".lift-bar")
    assert "zero" not in bar.get_attribute("class") and bar.bounding_box()["width"] <= 36 * abs(math.log2(c["lift"][i])) / 3 + 1
    session.assert_clean()


def test_scales_say_where_the_colour_is_clipped(session, site, tmp_path):
    page = session.page
    session.open("view=load&run=0", "#load-heatmap[data-rendered=true]")
    legend = page.text_content("#load-heatmap svg .role-legend")
    assert "≥ 8" in legend and "≤ ⅛" in legend and "clipped" in legend
    session.open("view=specialization&run=0&label=domain&layer=all", "#label-heatmap[data-rendered=true]")
    legend = page.text_content("#label-heatmap svg .role-legend")
    assert "≥ 4" in legend and "≤ ¼" in legend
    assert "the largest tested lift here is" in page.text_content("#main")
    # a compact tooltip: four rows, not one per field
    cells(page, "label-heatmap")[0].hover()
    page.wait_for_selector("#vg-tooltip-element.visible")
    assert len(page.query_selector_all("#vg-tooltip-element tr")) == 4
    session.assert_clean()


def test_search_finds_a_token_in_every_document_loaded_on_demand(session, site, tmp_path):
    db, _ = site
    page = session.page
    session.open("view=tokens&run=0&doc=0", "#token-text")
    assert not any("-search.js" in u for u in session.requests)  # the index loads only when searching
    # the most widespread token of three or more letters; search for its text
    token_id, text, n_docs = sql(db, "SELECT token_id, any_value(token), count(DISTINCT doc_id) AS n FROM tokens "
                                     "WHERE run_id = 'tiny' AND regexp_full_match(trim(token), '[A-Za-z]{3,}') "
                                     "GROUP BY ALL ORDER BY n DESC, token_id LIMIT 1")[0]
    query = text.strip()
    page.fill("#token-search", query)
    page.wait_for_selector(f'#search-results li[data-token-id="{token_id}"]')
    expected = {i for (i,) in sql(db, "SELECT DISTINCT token_id FROM tokens WHERE run_id = 'tiny' AND "
                                      "contains(lower(token), lower(?))", [query])}
    shown = {int(li.get_attribute("data-token-id")) for li in page.query_selector_all("#search-results li[data-token-id]")}
    assert shown == expected
    page.click(f'#search-results li[data-token-id="{token_id}"] button')
    page.wait_for_selector("#search-docs")
    links = page.query_selector_all("#search-docs .doc-links a")
    assert len(links) == n_docs
    # open the last document holding it: its chunk file loads then, and its occurrences are highlighted
    last = links[-1]
    target = int(last.get_attribute("data-doc"))
    last.click()
    page.wait_for_selector(f'#token-text .tok.found')
    doc_id = int(page.get_attribute("#token-text", "data-doc"))
    positions = [p for (p,) in sql(db, "SELECT pos FROM tokens WHERE run_id = 'tiny' AND doc_id = ? AND token_id = ? "
                                       "ORDER BY pos", [doc_id, token_id])]
    assert [int(s.get_attribute("data-i")) for s in page.query_selector_all("#token-text .tok.found")] == positions
    assert page.eval_on_selector("#doc-select", "s => s.value") == str(target)
    assert any(u.endswith("data/run-0-search.js") for u in session.requests)
    session.shot("token-search", tmp_path)
    # by id
    page.fill("#token-search", f"#{token_id}")
    page.wait_for_selector(f'#search-results li[data-token-id="{token_id}"]')
    assert page.query_selector_all("#search-results li[data-token-id]")[0].get_attribute("data-token-id") == str(token_id)
    session.assert_clean()


def _table(page, selector: str) -> list[list[str]]:
    return page.eval_on_selector_all(f"{selector} tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")


def test_serving_view_shows_the_exported_numbers(session, site, tmp_path):
    from moelens.viz.site import read_data_file

    data = read_data_file(site[1].parent / "data" / "run-0.js")["serving"]
    session.open("view=serving&run=0", "#serving-cache[data-rendered=true]")
    for chart in ("serving-placement", "serving-drops", "serving-cache", "serving-coverage"):
        session.page.wait_for_selector(f"#{chart}[data-rendered=true]")
        assert session.page.eval_on_selector_all(f"#{chart} svg .role-mark path", "p => p.length") > 0, chart
    shown = _table(session.page, "#serving-placement-table")
    assert [(int(r[0]), unisolate(r[1]), r[2]) for r in shown] == \
        [(p["ep"], p["series"], f"{p['vllm_balancedness']:.3f}") for p in data["placement"]]
    cache = {int(r[0]): r[1:4] for r in _table(session.page, "#serving-cache-table")}
    for row in data["cache"]:
        column = {"lru": 0, "lfu": 1, "belady": 2}[row["policy"]]
        assert cache[row["cache_size"]][column] == f"{100 * row['hit_rate']:.1f}%"
    for size in cache:  # Belady is the bound, also as the page shows it
        lru, lfu, belady = (float(x.rstrip("%")) for x in cache[size])
        assert belady >= lru and belady >= lfu
    full = cache[data["num_experts"]]  # every expert fits: only the first use of each misses, under any policy
    assert len(set(full)) == 1
    session.shot("dashboard-serving", tmp_path)
    session.assert_clean()


def test_causal_view_shows_the_measured_interventions_and_their_verdicts(session, site, tmp_path):
    session.open("view=causal&run=0", "#causal-chart[data-rendered=true]")
    rows = _table(session.page, "#causal-table")
    mine = [c for c in CAUSAL if c[0] == 0]
    assert [(unisolate(r[0]), unisolate(r[1])) for r in rows] == [(k, v) for _, _, k, v, *_ in mine]
    for r, (_, _, kind, value, d, lo, hi) in zip(rows, mine):
        assert r[3] == f"{d:+.4f}" and r[4] == f"[{lo:+.4f}, {hi:+.4f}]"
        assert r[8] == CAUSAL_VERDICTS[kind, value]
    assert rows[1][7] == "+0.2500"  # the controls' highest upper bound on code
    # the control band: one grey bar per label value that has controls
    assert session.page.eval_on_selector_all("#causal-chart svg .mark-rect path", "p => p.length") == 3
    session.page.select_option("#causal-select", "iv|3")
    session.page.wait_for_function("document.querySelectorAll('#causal-table tbody tr').length === 1")
    assert _table(session.page, "#causal-table")[0][8] == "no effect beyond noise"
    session.open("view=causal&run=1")
    assert "No interventions were measured" in session.page.text_content("#main")
    session.open("view=causal&run=0&iv=iv|0", "#causal-chart[data-rendered=true]")
    session.shot("dashboard-causal", tmp_path)
    session.assert_clean()
