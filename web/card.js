/* moelens dashboard - the expert card of one (layer, expert): load and flags, gate weights, top tokens,
 * example contexts, label profile and co-activated partners (a Neuronpedia-style page per expert). */
(function () {
  "use strict";
  const M = window.Moelens;
  const {el, fmt} = M;
  M.views = M.views || {};

  function flags(x) {
    const out = [];
    if (x.never_routed) out.push(el("span", {class: "badge bad flag"}, "never routed"));
    else if (x.dead) out.push(el("span", {class: "badge bad flag"}, "dead"));
    if (x.overloaded) out.push(el("span", {class: "badge warn flag"}, "overloaded"));
    if (!out.length) out.push(el("span", {class: "badge ok flag"}, "normal load"));
    return out;
  }

  function histogram(hist) {
    if (!hist) return el("p", {class: "muted small"}, "unavailable: this run's source records no gate weights");
    const max = Math.max(1, ...hist);
    return el("div", {class: "hist", role: "img", "aria-label": "gate-weight histogram"},
      hist.map((n, i) => el("div", {class: "hist-col", title: `${(i / hist.length).toFixed(1)}–${((i + 1) / hist.length).toFixed(1)}: ${n}`},
        el("div", {class: "hist-bar", style: {height: `${(100 * n / max).toFixed(1)}%`}}),
        el("div", {class: "hist-label"}, (i / hist.length).toFixed(1)))));
  }

  function tokenList(items, extra) {
    if (!items.length) return el("p", {class: "muted small"}, "none");
    return el("ol", {class: "tokens-list"}, items.map((t) => el("li", null,
      el("span", {class: "token-box"}, M.showToken(t.token)), " ", el("bdi", {class: "small muted"}, extra(t)))));
  }

  function contexts(run, x) {
    if (!x.contexts.length) return el("p", {class: "muted small"}, "no tokens were routed to this expert");
    const sampled = new Map(run.documents.map((d, i) => [d.doc_id, i]));
    return el("div", {class: "contexts"}, x.contexts.map((c) => {
      const line = el("div", {class: "context-text", dir: "auto"});
      for (const t of c.before) line.append(el("span", null, t));
      line.append(el("mark", {class: "context-token", style: {"background-color": M.expertColor(x.expert)}}, c.token));
      for (const t of c.after) line.append(el("span", null, t));
      const open = sampled.has(c.doc_id)
        ? el("a", {href: "#", on: {click: (ev) => { ev.preventDefault(); M.go({view: "tokens", doc: sampled.get(c.doc_id), layer: x.layer}); }}}, "token view")
        : null;
      return el("div", {class: "context"}, line,
        el("div", {class: "small muted"}, `document #${c.doc_id}, position ${c.pos} · weight ${fmt.num(c.weight, 3)} (choice ${c.rank + 1}) `, open));
    }));
  }

  function labelProfile(run, x) {
    const blocks = [];
    for (const lab of run.labels) {
      const rows = M.labelCells(lab, x.layer).filter((c) => c.expert === x.expert && c.tested);
      if (!rows.length) continue;
      rows.sort((a, b) => (b.lift || 0) - (a.lift || 0));
      const shown = rows.slice(0, 8);
      blocks.push(el("div", {class: "profile", dataset: {label: lab.name}}, el("h4", null, lab.name),
        el("table", {class: "grid small"}, el("tbody", null, shown.map((c) => el("tr", {class: c.significant ? "sig" : "muted-row"},
          el("td", {class: "value"}, c.value), el("td", {class: "num"}, fmt.pct(c.share)),
          el("td", {class: "num"}, `×${fmt.num(c.lift)}`),
          el("td", null, el("span", {class: "lift-bar", style: {width: `${Math.min(60, 15 * Math.max(0, Math.log2(c.lift || 1) + 2)).toFixed(0)}px`}})),
          el("td", null, c.significant ? el("span", {class: "badge ok"}, "significant") : "n.s.")))))));
    }
    return blocks.length ? el("div", {class: "profiles"}, blocks) : el("p", {class: "muted small"}, "No tested label.");
  }

  M.views.expert = function expert(run, st, main) {
    const layers = run.run.layers;
    const E = run.run.num_experts;
    const layer = layers.includes(Number(st.layer)) ? Number(st.layer) : layers[0];
    const e = Math.min(Math.max(Number.isInteger(Number(st.expert)) ? Number(st.expert) : 0, 0), E - 1);
    const x = M.expert(run, layer, e);
    const layerSelect = el("select", {id: "card-layer", "aria-label": "layer", on: {change: (ev) => M.openExpert(ev.target.value, e)}},
      layers.map((l) => el("option", {value: l, selected: l === layer}, `layer ${l}`)));
    const expertSelect = el("select", {id: "card-expert", "aria-label": "expert", on: {change: (ev) => M.openExpert(layer, ev.target.value)}},
      Array.from({length: E}, (_, i) => el("option", {value: i, selected: i === e}, `expert ${i}`)));
    const nav = el("div", {class: "controls"}, el("label", null, "", layerSelect), el("label", null, "", expertSelect),
      el("button", {type: "button", disabled: e === 0, on: {click: () => M.openExpert(layer, e - 1)}}, "◀ previous"),
      el("button", {type: "button", disabled: e === E - 1, on: {click: () => M.openExpert(layer, e + 1)}}, "next ▶"));
    if (!x) {
      main.append(M.section("Expert card", nav, el("p", {class: "muted"}, "No data for this expert.")));
      return;
    }
    const base = run.baselines || {};
    const stats = el("dl", {class: "facts"},
      el("dt", null, "tokens routed"), el("dd", null, fmt.int(x.count)),
      el("dt", null, "share of the layer"), el("dd", null, `${fmt.pct(x.share, 2)} (fair share ${fmt.pct(base.share, 2)})`),
      el("dt", null, "utilization"), el("dd", null, `${fmt.num(x.utilization)} × a fair share`),
      el("dt", null, "as first choice"), el("dd", null, fmt.int(x.first_choice)),
      el("dt", null, "mean gate weight"), el("dd", null, fmt.num(x.weight_mean, 3)));
    const partners = x.partners.length
      ? el("div", {class: "partners"}, x.partners.map((p) => M.chip(p.expert, `${fmt.pct(p.conditional, 0)}`, () => M.openExpert(layer, p.expert))),
           el("p", {class: "small muted"}, `P(partner also chosen | this expert chosen); uniform ${fmt.pct(base.coactivation, 1)}.`))
      : el("p", {class: "muted small"}, run.run.top_k < 2 ? "top-1 routing: no partners" : "none");
    const card = el("article", {id: "expert-card", class: "expert-card", dataset: {layer, expert: e}},
      el("header", {class: "card-head"}, el("span", {class: "swatch", style: {"background-color": M.expertColor(e)}}),
         el("h2", null, `Layer ${layer} · Expert ${e}`), flags(x)),
      el("div", {class: "cols"},
        el("section", null, el("h3", null, "Load"), stats, el("h3", null, "Gate weights"), histogram(x.weight_hist)),
        el("section", null, el("h3", null, "Characteristic tokens (lift)"),
           tokenList(x.top_tokens, (t) => `×${fmt.num(t.lift, 1)} · ${fmt.int(t.count)} here (${fmt.pct(t.share, 0)} of the token's uses)`),
           el("h3", null, "Most frequent tokens"), tokenList(x.frequent_tokens, (t) => `${fmt.int(t.count)} (${fmt.pct(t.share, 1)})`)),
        el("section", null, el("h3", null, "Co-activated partners"), partners)),
      el("h3", null, "Label profile (share of each value's tokens routed here, lift over the expert's overall share)"),
      labelProfile(run, x),
      el("h3", null, "Example contexts (highest gate weight, one per document)"), contexts(run, x));
    main.append(el("section", {class: "card"}, nav, card));
  };
})();
