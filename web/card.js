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
      M.tokenNode(t.token, {cls: "token-box", visible: M.showToken}), " ", el("bdi", {class: "small muted"}, extra(t)))));
  }

  function contexts(run, x, runIndex) {
    if (!x.contexts.length) return el("p", {class: "muted small"}, "no tokens were routed to this expert");
    const exported = new Map(run.documents.map((d, i) => [d.doc_id, i]));
    return el("div", {class: "contexts"}, x.contexts.map((c) => {
      const line = el("div", {class: "context-text", dir: "auto"});
      for (const t of c.before) line.append(M.tokenNode(t, {cls: "ctx"}));
      const mark = M.tokenNode(c.token, {tag: "mark", cls: "context-token"});
      mark.style.setProperty("background-color", M.fixedColors() ? M.expertColor(x.expert) : "#ffe58a");
      line.append(mark);
      for (const t of c.after) line.append(M.tokenNode(t, {cls: "ctx"}));
      const open = exported.has(c.doc_id)
        ? el("a", {href: "#", on: {click: (ev) => { ev.preventDefault(); M.go({view: "tokens", doc: exported.get(c.doc_id), layer: x.layer}); }}}, "token view")
        : null;
      return el("div", {class: "context"}, line,
        el("div", {class: "small muted"}, `document #${c.doc_id}, position ${c.pos} · ` +
          (run.run.has_weights && c.weight !== null ? `gate weight ${fmt.num(c.weight, 3)}, ` : "") + `slot ${c.slot} `, open));
    }));
  }

  /** A diverging bar on a log2 scale around lift 1 (the centre line), clipped at ⅛ and 8; lift 0 (no
   * token of the value went here) is drawn hatched to the left end, so 0 never looks like 1. */
  M.liftBar = function liftBar(lift) {
    const half = 36;  // px per side = 3 doublings
    const axis = el("span", {class: "lift-axis", role: "img"});
    if (typeof lift !== "number") {
      axis.classList.add("lift-none");
      axis.setAttribute("aria-label", "lift unknown");
      return axis;
    }
    let bar;
    if (lift === 0) {
      bar = el("span", {class: "lift-bar zero", style: {left: "0px", width: `${half}px`}});
      axis.setAttribute("aria-label", "lift 0: none of the value's tokens went here");
    } else {
      const x = Math.max(-3, Math.min(3, Math.log2(lift)));
      const w = Math.abs(x) / 3 * half;
      bar = el("span", {class: "lift-bar " + (x >= 0 ? "up" : "down") + (Math.abs(Math.log2(lift)) > 3 ? " clipped" : ""),
                        style: {left: `${x >= 0 ? half : half - w}px`, width: `${w.toFixed(1)}px`}});
      axis.setAttribute("aria-label", `lift ${lift}`);
    }
    axis.title = "log scale around 1 (centre line), clipped at ⅛ and 8; hatched: lift 0";
    axis.append(bar);
    return axis;
  };

  const STATE_ORDER = {significant: 0, not_significant: 1, untested: 2};
  function labelProfile(run, x) {
    const blocks = [];
    for (const lab of run.labels) {
      const rows = M.labelCells(lab, x.layer).filter((c) => c.expert === x.expert);
      if (!rows.length) continue;
      rows.sort((a, b) => STATE_ORDER[a.state] - STATE_ORDER[b.state] || (b.lift || 0) - (a.lift || 0));
      const shown = rows.slice(0, 8);
      const untested = rows.filter((c) => c.state === "untested").length;
      blocks.push(el("div", {class: "profile", dataset: {label: lab.name}}, el("h4", null, lab.name),
        el("table", {class: "grid small"},
          el("thead", null, el("tr", null, el("th", null, "value"), el("th", {class: "num", title: "share: fraction of the value's tokens routed here"}, "share"),
                                el("th", {class: "num", title: "lift: share / this expert's overall share"}, "lift"), el("th", null, ""), el("th", null, "test"))),
          el("tbody", null, shown.map((c) => el("tr", {class: c.state === "significant" ? "sig" : c.state === "untested" ? "untested-row" : "muted-row",
                                                       dataset: {state: c.state, value: c.value}},
            el("td", {class: "value", title: M.isolate(c.value)}, M.bdi(c.value)), el("td", {class: "num"}, fmt.pct(c.share)),
            el("td", {class: "num"}, typeof c.lift === "number" ? `×${fmt.num(c.lift)}` : "–"),
            el("td", null, M.liftBar(c.lift)),
            el("td", null, c.state === "significant" ? el("span", {class: "badge ok"}, "significant")
              : c.state === "untested" ? el("span", {class: "badge untested", title: c.untested_reason}, "untested", el("span", {class: "why"}, `: ${c.untested_reason}`))
                : "not significant"))))),
        rows.length > shown.length ? el("p", {class: "small muted"}, `${rows.length - shown.length} more values` +
          (untested ? `; ${untested} untested` : "") + " (Specialization view).") : null));
    }
    return blocks.length ? el("div", {class: "profiles"}, blocks) : el("p", {class: "muted small"}, "No label.");
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
    const weights = run.run.has_weights;
    const stats = el("dl", {class: "facts"},
      el("dt", null, "routed choices"), el("dd", null, fmt.int(x.count)),
      el("dt", {title: "load: the expert's fraction of the layer's routed choices"}, "load"),
      el("dd", null, `${fmt.pct(x.load, 2)} of the layer (fair load 1/E = ${fmt.pct(base.share, 2)})`),
      el("dt", {title: "utilization: load / fair load"}, "utilization"), el("dd", null, `${fmt.util(x.utilization)} × the fair load`),
      el("dt", {title: "routed choices in slot 0 (the router's first choice)"}, "first choices (slot 0)"), el("dd", null, fmt.int(x.first_choice)),
      el("dt", null, "mean gate weight"), el("dd", null, weights ? fmt.num(x.weight_mean, 3) : M.unavailable(run, "weights")));
    const partners = x.partners.length
      ? el("div", {class: "partners"}, x.partners.map((p) => M.chip(p.expert, `${fmt.pct(p.conditional, 0)}`, () => M.openExpert(layer, p.expert))),
           el("p", {class: "small muted"}, `P(partner also chosen | this expert chosen); uniform ${fmt.pct(base.coactivation, 1)}.`))
      : el("p", {class: "muted small"}, run.run.top_k < 2 ? "top-1 routing: no partners" : "none");
    const card = el("article", {id: "expert-card", class: "expert-card", dataset: {layer, expert: e}},
      el("header", {class: "card-head"}, el("span", {class: "swatch", style: {"background-color": M.fixedColors() ? M.expertColor(e) : M.OTHER_COLOR}}),
         el("h2", null, `Layer ${layer} · Expert ${e}`), flags(x)),
      el("div", {class: "cols"},
        el("section", null, el("h3", null, "Load"), stats,
           el("h3", null, "Gate weights"), weights ? histogram(x.weight_hist) : el("p", {class: "small muted"}, M.unavailable(run, "weights"))),
        el("section", null, el("h3", null, "Characteristic tokens (lift)"),
           tokenList(x.top_tokens, (t) => `×${fmt.num(t.lift, 1)} · ${fmt.int(t.count)} here (${fmt.pct(t.share, 0)} of the token's occurrences)`),
           el("h3", null, "Most frequent tokens"), tokenList(x.frequent_tokens, (t) => `${fmt.int(t.count)} (${fmt.pct(t.share, 1)} of its routed choices)`)),
        el("section", null, el("h3", null, "Co-activated partners"), partners)),
      el("h3", null, "Label profile: share of each value's tokens routed here, lift over this expert's overall share"),
      labelProfile(run, x),
      el("h3", null, weights ? "Example contexts (highest gate weight, one per document)" : "Example contexts (earliest slot, one per document)"),
      contexts(run, x));
    main.append(el("section", {class: "card"}, nav, card));
  };
})();
