/* moelens dashboard - the token view: a document's text coloured by expert at one layer; hovering a
 * token shows its route through every layer (experts and gate weights). Token text is set with
 * textContent only: it is untrusted input. */
(function () {
  "use strict";
  const M = window.Moelens;
  const {el, fmt} = M;
  M.views = M.views || {};

  /** experts[l][t][r] and weights of a sampled document (flattened [layer][token][rank]). */
  function route(run, doc, t) {
    const k = run.run.top_k;
    const T = doc.shown_tokens;
    return run.run.layers.map((layer, li) => {
      const picks = [];
      for (let r = 0; r < k; r++) {
        const at = (li * T + t) * k + r;
        if (doc.experts[at] >= 0) picks.push({expert: doc.experts[at], weight: doc.weights ? doc.weights[at] / 1000 : null, rank: r});
      }
      return {layer, picks};
    });
  }

  function routePanel(run, doc, t, layer) {
    const token = doc.tokens[t];
    const rows = route(run, doc, t).map((r) => el("tr", {class: r.layer === layer ? "current" : null, dataset: {layer: r.layer}},
      el("td", null, `layer ${r.layer}`),
      el("td", null, r.picks.map((p) => el("span", {class: "route-pick", dataset: {expert: p.expert, weight: p.weight === null ? "" : p.weight.toFixed(3), rank: p.rank}},
        M.chip(p.expert, fmt.num(p.weight, 3), () => M.openExpert(r.layer, p.expert)))))));
    return [
      el("div", {class: "route-head"}, el("span", {class: "route-token"}, M.showToken(token)),
         el("span", {class: "small muted"}, ` position ${t} · token id ${doc.token_ids[t]}`)),
      M.table(["layer", "experts (gate weight)"], rows, {id: "route-table", dataset: {pos: t, doc: doc.doc_id}}),
    ];
  }

  M.views.tokens = function tokens(run, st, main) {
    const docs = run.documents;
    if (!docs.length) {
      main.append(M.section("Tokens", el("p", {class: "muted"}, "No document sampled.")));
      return;
    }
    const layers = run.run.layers;
    const di = Math.min(Math.max(Number(st.doc) || 0, 0), docs.length - 1);
    const doc = docs[di];
    const layer = layers.includes(Number(st.layer)) ? Number(st.layer) : layers[0];
    const li = layers.indexOf(layer);
    const k = run.run.top_k;
    const T = doc.shown_tokens;

    const docSelect = el("select", {id: "doc-select", "aria-label": "document", on: {change: (ev) => M.go({doc: ev.target.value})}},
      docs.map((d, i) => el("option", {value: i, selected: i === di},
        `#${d.doc_id} · ${d.domain || "–"} · ${d.language || "–"} · ${d.n_tokens} tokens`)));
    const layerSelect = el("select", {id: "layer-select", "aria-label": "layer", on: {change: (ev) => M.go({layer: ev.target.value})}},
      layers.map((l) => el("option", {value: l, selected: l === layer}, `layer ${l}`)));

    const counts = new Map();
    const text = el("div", {id: "token-text", class: "token-text", dir: "auto", dataset: {doc: doc.doc_id, layer}});
    for (let t = 0; t < T; t++) {
      const first = doc.experts[(li * T + t) * k];
      counts.set(first, (counts.get(first) || 0) + 1);
      const span = el("span", {class: "tok" + (doc.tokens[t].includes("\n") ? " has-nl" : ""), tabindex: 0,
                               dataset: {i: t, expert: first}, style: {"background-color": M.expertColor(first)}});
      span.textContent = doc.tokens[t];
      text.append(span);
    }
    const panel = el("div", {id: "route", class: "route"}, el("p", {class: "muted"}, "Hover a token to see its route through every layer; click to pin it."));
    let pinned = null;
    const show = (target) => {
      if (!target || !target.classList || !target.classList.contains("tok")) return;
      M.clear(panel).append(...routePanel(run, doc, Number(target.dataset.i), layer));
      for (const s of text.querySelectorAll(".tok.hover")) s.classList.remove("hover");
      target.classList.add("hover");
    };
    text.addEventListener("mouseover", (ev) => { if (pinned === null) show(ev.target); });
    text.addEventListener("focusin", (ev) => { if (pinned === null) show(ev.target); });
    text.addEventListener("click", (ev) => {
      if (!ev.target.classList.contains("tok")) return;
      pinned = pinned === ev.target ? null : ev.target;
      show(ev.target);
      for (const s of text.querySelectorAll(".tok.pinned")) s.classList.remove("pinned");
      if (pinned) pinned.classList.add("pinned");
    });

    const legend = el("div", {class: "legend", id: "token-legend"},
      el("span", {class: "small muted"}, `first-choice experts at layer ${layer}: `),
      [...counts.entries()].sort((a, b) => b[1] - a[1]).map(([e, n]) => M.chip(e, `${n}`, () => M.openExpert(layer, e))));
    main.append(M.section("Token view",
      el("div", {class: "controls"}, el("label", null, "document ", docSelect), el("label", null, "colour by layer ", layerSelect)),
      el("p", {class: "small muted"},
        `${doc.domain || "–"} · ${doc.language || "–"} · source ${doc.source || "–"} · showing ${T} of ${doc.n_tokens} tokens` +
        (T < doc.n_tokens ? ` (the site keeps at most ${run.caps.max_doc_tokens} per document)` : "") +
        `. Colour: the token's first-choice expert at layer ${layer}. Sampled: ${docs.length} of ${fmt.int(run.run.documents)} documents.`),
      legend,
      el("div", {class: "token-layout"}, text, panel)));
  };
})();
