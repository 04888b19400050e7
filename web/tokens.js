/* moelens dashboard - the token view: a document's text coloured by expert at one layer; hovering a
 * token shows its route through every layer (experts and gate weights); a search finds a token by
 * text or id in every exported document. Documents load on demand (data/run-<i>-docs-<c>.js), the
 * search index when a search is typed (data/run-<i>-search.js). Token text is untrusted input: it is
 * set with textContent only and bidi-isolated. */
(function () {
  "use strict";
  const M = window.Moelens;
  const {el, fmt} = M;
  M.views = M.views || {};
  const MAX_RESULTS = 50;
  const MAX_DOC_LINKS = 200;

  /** Experts and weights of token t (flattened [layer][token][slot]). */
  function route(run, doc, t) {
    const k = run.run.top_k;
    const T = doc.shown_tokens;
    return run.run.layers.map((layer, li) => {
      const picks = [];
      for (let s = 0; s < k; s++) {
        const at = (li * T + t) * k + s;
        if (doc.experts[at] >= 0) picks.push({expert: doc.experts[at], weight: doc.weights ? doc.weights[at] / 1000 : null, slot: s});
      }
      return {layer, picks};
    });
  }

  function routePanel(run, doc, t, layer, colors) {
    const weights = run.run.has_weights && Boolean(doc.weights);
    const rows = route(run, doc, t).map((r) => el("tr", {class: r.layer === layer ? "current" : null, dataset: {layer: r.layer}},
      el("td", null, `layer ${r.layer}`),
      el("td", null, r.picks.map((p) => el("span", {class: "route-pick", dataset: {expert: p.expert, weight: p.weight === null ? "" : p.weight.toFixed(3), slot: p.slot}},
        M.chip(p.expert, weights ? fmt.num(p.weight, 3) : null, () => M.openExpert(r.layer, p.expert), r.layer === layer ? colors : null))))));
    const view = doc.tokens[t];
    return [
      el("div", {class: "route-head"},
         M.tokenNode(view, {cls: "route-token", visible: M.showToken, max: 200}),
         el("div", {class: "small muted"}, `position ${t} · token id ${doc.token_ids[t]}`),
         typeof view === "string" ? null : el("div", {class: "small frag-note"}, M.tokenTitle(view))),
      M.table(["layer", weights ? "experts by slot (gate weight)" : "experts by slot"], rows,
              {id: "route-table", dataset: {pos: t, doc: doc.doc_id}}),
      weights ? null : el("p", {class: "small muted"}, M.unavailable(run, "weights")),
    ];
  }

  function docOptions(run, di) {
    const groups = new Map();
    run.documents.forEach((d, i) => {
      const key = `${d.domain || "–"} · ${d.language || "–"}`;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push([d, i]);
    });
    return [...groups.entries()].map(([key, docs]) => el("optgroup", {label: M.isolate(key)},
      docs.map(([d, i]) => el("option", {value: i, selected: i === di},
        `#${d.doc_id} · ${M.isolate(d.domain || "–")} · ${M.isolate(d.language || "–")} · ${d.n_tokens} tokens`))));
  }

  /** The search box and its results (token ids and the documents that hold them). */
  function searchPanel(run, runIndex, st, di) {
    const input = el("input", {id: "token-search", type: "search", placeholder: "token text or id (#42)", value: st.q || "",
                               "aria-label": "search tokens by text or id", autocomplete: "off", spellcheck: "false"});
    const results = el("div", {id: "search-results", class: "search-results"});
    const find = st.find !== undefined && st.find !== "" ? Number(st.find) : null;

    function docLinks(index, j) {
      const post = index.docs[j];
      const items = [];
      for (let p = 0; p < post.length && items.length < MAX_DOC_LINKS; p += 2) {
        const d = run.documents[post[p]];
        items.push(el("li", null, el("a", {href: "#", class: post[p] === di ? "current" : null, dataset: {doc: post[p]},
          on: {click: (ev) => { ev.preventDefault(); M.go({doc: post[p], find: index.ids[j]}); }}},
          `#${d.doc_id}`), " ", M.bdi(`${d.domain || "–"} · ${d.language || "–"}`, {class: "muted"}), ` · ${post[p + 1]}×`));
      }
      const total = post.length / 2;
      return el("div", {id: "search-docs"},
        el("p", {class: "small"}, `Token id ${index.ids[j]}: ${fmt.int(index.count[j])} occurrences in ${fmt.int(total)} of `,
           `${fmt.int(run.documents.length)} documents`, total > MAX_DOC_LINKS ? ` (first ${MAX_DOC_LINKS} listed)` : "", "."),
        el("ol", {class: "doc-links"}, items));
    }

    function show(index, query) {
      M.clear(results);
      const q = query.trim();
      const picked = find !== null ? index.ids.indexOf(find) : -1;
      if (q) {
        const idQuery = /^#?\d+$/.test(q) ? Number(q.replace("#", "")) : null;
        const lower = q.toLowerCase();
        const hits = [];
        for (let j = 0; j < index.ids.length; j++) {
          if (index.ids[j] === idQuery || index.match[j].includes(q) || index.match[j].toLowerCase().includes(lower)) hits.push(j);
        }
        hits.sort((a, b) => (index.ids[b] === idQuery) - (index.ids[a] === idQuery) || index.count[b] - index.count[a] || index.ids[a] - index.ids[b]);
        results.append(el("p", {class: "small muted"}, `${fmt.int(hits.length)} token${hits.length === 1 ? "" : "s"} match`,
          hits.length > MAX_RESULTS ? ` (the ${MAX_RESULTS} most frequent shown)` : "", ". Pick one to see its documents."));
        results.append(el("ol", {class: "search-hits"}, hits.slice(0, MAX_RESULTS).map((j) => el("li", {dataset: {tokenId: index.ids[j]}},
          el("button", {type: "button", class: "hit" + (index.ids[j] === find ? " on" : ""),
                        on: {click: () => M.go({find: index.ids[j], q: null})}},
            M.tokenNode(index.views[j], {cls: "token-box", visible: M.showToken}),
            el("span", {class: "small muted"}, ` id ${index.ids[j]} · ${fmt.int(index.count[j])}× in ${fmt.int(index.docs[j].length / 2)} docs`))))));
      }
      if (picked >= 0) results.append(docLinks(index, picked));
    }

    let timer = null;
    const run_ = () => M.loadSearch(runIndex).then((index) => {
      show(index, input.value);
      const params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
      if (input.value) params.set("q", input.value); else params.delete("q");
      history.replaceState(null, "", "#" + params.toString());
    }).catch((err) => M.error(err.message || String(err)));
    input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(run_, 120); });
    if (st.q || find !== null) run_();
    return el("div", {class: "search"}, el("div", {class: "controls"}, el("label", null, "find ", input),
      find !== null ? el("button", {type: "button", on: {click: () => M.go({find: null})}}, "clear highlight") : null), results);
  }

  function legend(run, layer, counts, colors) {
    const ranked = [...counts.entries()].filter(([e]) => e >= 0).sort((a, b) => b[1] - a[1] || a[0] - b[0]);
    const colored = colors ? ranked.filter(([e]) => colors.has(e)) : ranked;
    const others = colors ? ranked.filter(([e]) => !colors.has(e)) : [];
    return el("div", {class: "legend", id: "token-legend"},
      el("span", {class: "small muted"}, `first-choice (slot 0) experts at layer ${layer}: `),
      colored.map(([e, n]) => M.chip(e, `${n}`, () => M.openExpert(layer, e), colors)),
      others.length ? el("div", {class: "legend-others small"},
        el("span", {class: "muted"}, `grey: ${others.length} other expert${others.length === 1 ? "" : "s"} (${run.run.num_experts} experts are too many ` +
           `to tell apart by colour; the ${colors.size} most frequent here are coloured) - `),
        others.map(([e, n]) => M.chip(e, `${n}`, () => M.openExpert(layer, e), colors))) : null,
      counts.has(-1) ? el("span", {class: "small muted"}, ` · ${counts.get(-1)} tokens without a choice (white)`) : null);
  }

  function renderDocument(run, runIndex, st, main, di, doc) {
    const layers = run.run.layers;
    const layer = layers.includes(Number(st.layer)) ? Number(st.layer) : layers[0];
    const li = layers.indexOf(layer);
    const k = run.run.top_k;
    const T = doc.shown_tokens;
    const docs = run.documents;
    const find = st.find !== undefined && st.find !== "" ? Number(st.find) : null;

    const docSelect = el("select", {id: "doc-select", "aria-label": "document", on: {change: (ev) => M.go({doc: ev.target.value})}},
      docOptions(run, di));
    const layerSelect = el("select", {id: "layer-select", "aria-label": "layer", on: {change: (ev) => M.go({layer: ev.target.value})}},
      layers.map((l) => el("option", {value: l, selected: l === layer}, `layer ${l}`)));
    const cutSelect = el("select", {id: "cut-select", "aria-label": "cut characters", on: {change: (ev) => M.go({cut: ev.target.value})}},
      el("option", {value: "chars", selected: M.cutMode === "chars"}, "the character, then ◌"),
      el("option", {value: "bytes", selected: M.cutMode === "bytes"}, "their bytes (e7 8e)"));

    const counts = new Map();
    for (let t = 0; t < T; t++) {
      const first = doc.experts[(li * T + t) * k];
      counts.set(first, (counts.get(first) || 0) + 1);
    }
    const colors = M.topExpertColors(counts);
    const text = el("div", {id: "token-text", class: "token-text", dir: "auto", dataset: {doc: doc.doc_id, layer}});
    let found = 0;
    for (let t = 0; t < T; t++) {
      const first = doc.experts[(li * T + t) * k];
      const view = doc.tokens[t];
      const hit = find !== null && doc.token_ids[t] === find;
      found += hit;
      const raw = typeof view === "string" ? view : "";
      const span = M.tokenNode(view, {cls: "tok" + (raw.includes("\n") ? " has-nl" : "") + (hit ? " found" : "") +
                                           (colors && !colors.has(first) ? " other" : ""),
                                      attrs: {tabindex: 0, dataset: {i: t, expert: first}}});
      span.style.setProperty("background-color", M.expertColor(first, colors));
      if (view === "") { span.textContent = "∅"; span.classList.add("empty"); span.title = "empty token text"; }
      text.append(span);
    }
    const panel = el("div", {id: "route", class: "route"}, el("p", {class: "muted"}, "Hover a token to see its route through every layer; click to pin it."));
    let pinned = null;
    const show = (target) => {
      const tok = target && target.closest ? target.closest(".tok") : null;
      if (!tok || !text.contains(tok)) return;
      M.clear(panel).append(...routePanel(run, doc, Number(tok.dataset.i), layer, colors));
      for (const s of text.querySelectorAll(".tok.hover")) s.classList.remove("hover");
      tok.classList.add("hover");
    };
    text.addEventListener("mouseover", (ev) => { if (pinned === null) show(ev.target); });
    text.addEventListener("focusin", (ev) => { if (pinned === null) show(ev.target); });
    text.addEventListener("click", (ev) => {
      const tok = ev.target.closest(".tok");
      if (!tok) return;
      pinned = pinned === tok ? null : tok;
      show(tok);
      for (const s of text.querySelectorAll(".tok.pinned")) s.classList.remove("pinned");
      if (pinned) pinned.classList.add("pinned");
    });

    const nav = (d) => el("button", {type: "button", disabled: di + d < 0 || di + d >= docs.length,
                                     on: {click: () => M.go({doc: di + d})}}, d < 0 ? "◀" : "▶");
    const fragments = doc.tokens.filter((v) => typeof v !== "string").length;
    main.append(M.section("Token view",
      el("div", {class: "controls"}, el("label", null, "document ", docSelect), nav(-1), nav(1),
         el("label", null, "colour by layer ", layerSelect), el("label", null, "cut characters ", cutSelect)),
      searchPanel(run, runIndex, st, di),
      el("p", {class: "small muted", id: "doc-meta"},
        M.bdi(doc.domain || "–"), " · ", M.bdi(doc.language || "–"), " · source ", M.bdi(doc.source || "–"),
        ` · showing ${T} of ${doc.n_tokens} tokens` + (T < doc.n_tokens ? ` (the site keeps at most ${run.caps.max_doc_tokens} per document)` : "") +
        `. Colour: the token's first-choice (slot 0) expert at layer ${layer}. Documents: ${fmt.int(docs.length)} of ${fmt.int(run.run.documents)} exported` +
        (docs.length < run.run.documents ? ` (at most ${run.caps.max_docs})` : "") + "." +
        (fragments ? ` ${fragments} tokens hold part of a character (dashed; hover for the character).` : "") +
        (find !== null ? ` Highlighted: ${found} occurrence${found === 1 ? "" : "s"} of token id ${find}.` : "")),
      legend(run, layer, counts, colors),
      el("div", {class: "token-layout"}, text, panel)));
    if (find !== null) {
      const first = text.querySelector(".tok.found");
      if (first) first.scrollIntoView({block: "nearest"});
    }
  }

  M.views.tokens = function tokens(run, st, main) {
    const docs = run.documents;
    if (!docs.length) {
      main.append(M.section("Tokens", el("p", {class: "muted"}, "No document exported.")));
      return;
    }
    if (!run.run.has_token_text) {
      main.append(el("p", {class: "small muted"}, M.unavailable(run, "token_text") + " Tokens are shown by id (⟨id⟩)."));
    }
    M.cutMode = st.cut === "bytes" ? "bytes" : "chars";
    const runIndex = Number(main.dataset.run);
    const di = Math.min(Math.max(Number(st.doc) || 0, 0), docs.length - 1);
    const mine = M.generation;
    main.append(el("p", {class: "muted", id: "doc-loading"}, `Loading document #${docs[di].doc_id}…`));
    return M.loadDocument(runIndex, run, di).then((doc) => {
      if (mine !== M.generation) return;
      const loading = document.getElementById("doc-loading");
      if (loading) loading.remove();
      renderDocument(run, runIndex, st, main, di, doc);
    }).catch((err) => M.error(err.message || String(err)));
  };
})();
