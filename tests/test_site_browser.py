"""The exported dashboard in a real browser: headless Debian Chromium driven by Playwright, from file://.

A tiny random MoE is traced over a labelled corpus that includes a document of HTML and script
payloads (also used as label values), and a second, hand-made run has whole payloads as token
text and as its run id. The tests compare what the page shows with the database's SQL views
(cells per heatmap, the route of a hovered token, the expert card), record every request (only
file:// may appear), every console message and every dialog, and save screenshots (copied to
``$MOELENS_ARTIFACTS`` when set).
"""

from __future__ import annotations

import json
import os
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


@pytest.fixture(scope="module")
def site(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    rows = [{"text": TEXTS[i % 4] * (1 + i % 3), "domain": ["prose", "prose", "code", "legal"][i % 4],
             "language": ["en", "de", "python", "en"][i % 4]} for i in range(20)]
    rows += [{"text": PAYLOAD, "domain": BAD_DOMAIN, "language": BAD_LANGUAGE}] * 5  # >= 5 docs: a tested value
    data = root / "docs.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    db = root / "t.duckdb"
    moelens.trace(str(tiny_model_dir), str(data), out=str(db), run_id="tiny", batch_size=4, progress=False)
    # a hand-made run whose token text and run id are whole payloads
    experts = np.array([[[0, 1], [2, 3], [1, 2], [3, 0], [0, 2], [1, 3]]] * 2)
    routing = from_arrays(experts, num_experts=4, token_id=[1, 2, 3, 4, 5, 6], doc_id=[0, 0, 0, 1, 1, 1],
                          documents=[{"doc_id": 0, "domain": BAD_DOMAIN}, {"doc_id": 1, "domain": "ok"}],
                          layers=[0, 1], weights=np.full(experts.shape, 0.5, np.float32))
    routing.tokens = BAD_TOKENS
    save_routing(routing, db, run_id=BAD_RUN)
    return db, export_site(db, root / "site")


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
        self.page.goto((self.site_dir / "index.html").as_uri() + "#" + hash_)
        self.page.wait_for_selector(f'#main[data-view="{dict(p.split("=") for p in hash_.split("&"))["view"]}"]')
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
        allowed = {"vendor/vega.js", "data/index.js", "core.js", "overview.js", "heatmaps.js", "tokens.js", "card.js",
                   "app.js", "data/run-0.js", "data/run-1.js"}
        assert set(scripts) <= allowed, scripts


@pytest.fixture
def session(browser, site):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
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
    assert [t.text_content() for t in tokens] == texts
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
    for run in (0, 1):
        for view in ("overview", "load", "specialization", "tokens", "expert"):
            session.open(f"view={view}&run={run}")
            session.page.wait_for_timeout(50)
            for chart in session.page.query_selector_all("#main .chart"):
                session.page.wait_for_selector(f'[data-chart="{chart.get_attribute("data-chart")}"][data-rendered=true]')
        assert session.page.eval_on_selector("#run-select", "s => s.value") == str(run)
    session.open("view=overview&run=1", "#balance-chart[data-rendered=true]")
    assert [o.text_content().split("  (")[0] for o in session.page.query_selector_all("#run-select option")] == \
        [r[0] for r in sql(db, "SELECT run_id FROM runs ORDER BY created_at, run_id")]
    session.shot("overview", tmp_path)
    session.assert_clean()


def test_payloads_render_as_literal_text_and_execute_nothing(session, site, tmp_path):
    db, _ = site
    page = session.page
    # the traced payload document: its tokens spell the payload, as text
    session.open("view=tokens&run=0", "#doc-select")
    options = [o.text_content() for o in page.query_selector_all("#doc-select option")]
    index = next(i for i, o in enumerate(options) if BAD_DOMAIN in o)
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
    assert page.eval_on_selector("#run-select", "s => s.options[s.selectedIndex].textContent") == BAD_RUN
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
