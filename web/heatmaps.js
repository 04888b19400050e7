/* moelens dashboard - the layer x expert load heatmap and the expert x label (domain, language, position, ...) heatmaps. */
(function () {
  "use strict";
  const M = window.Moelens;
  const {el, fmt} = M;
  M.views = M.views || {};

  const stepFor = (n, width) => Math.max(7, Math.min(30, Math.floor(width / Math.max(n, 1))));
  /** Expert ids on narrow columns: label even ids only (as moelens.viz.specs does). */
  function expertAxis(encoding, step) {
    if (step < 18) encoding.x.axis.labelExpr = "datum.value % 2 == 0 ? datum.label : ''";
    else delete encoding.x.axis.labelExpr;
  }

  M.views.load = function load(run, st, main) {
    const E = run.run.num_experts;
    const values = run.experts.map((x) => ({layer: x.layer, expert: x.expert, count: x.count, share: x.share,
                                            utilization: x.utilization, dead: x.dead}));
    const chart = el("div", {id: "load-heatmap", dataset: {cells: values.length}});
    M.chart(chart, "load_heatmap", values, (spec) => {
      spec.width = {step: stepFor(E, 900)};
      spec.height = {step: Math.max(12, Math.min(24, stepFor(run.layers.length, 600)))};
      expertAxis(spec.encoding, spec.width.step);
    }, (d) => M.openExpert(d.layer, d.expert));
    const flagged = run.experts.filter((x) => x.dead || x.overloaded);
    const chips = (xs) => (xs.length ? xs.map((x) => M.chip(x.expert, fmt.num(x.utilization), () => M.openExpert(x.layer, x.expert))) : "–");
    const rows = run.layers.map((l) => {
      const mine = run.experts.filter((x) => x.layer === l.layer);
      return el("tr", {dataset: {layer: l.layer}}, el("td", null, l.layer),
        el("td", null, chips(mine.filter((x) => x.never_routed))),
        el("td", null, chips(mine.filter((x) => x.dead && !x.never_routed))),
        el("td", null, chips(mine.filter((x) => x.overloaded))));
    });
    main.append(M.section("Layer × expert load",
      el("p", {class: "small muted"}, `Colour: utilization = the expert's share of the layer's routed choices / (1/E); ` +
        `1 (white) = a fair share, blue = under-used, orange = over-used (log scale, clipped to 1/8…8). Click a cell for the expert card.`),
      chart));
    main.append(M.section(`Flagged experts (${flagged.length} of ${run.experts.length})`,
      M.table(["layer", "never routed", "dead", "overloaded"], rows, {id: "flag-table"}),
      el("p", {class: "small muted"}, `Chips show the utilization. Dead: utilization < ${run.options.dead_threshold}; ` +
        `overloaded: utilization ≥ ${run.options.overloaded}.`)));
  };

  /** Heatmap rows of one label (all layers, or one). */
  M.labelCells = function labelCells(lab, layer) {
    const out = [];
    const c = lab.cells;
    for (let i = 0; i < c.layer.length; i++) {
      if (layer !== null && c.layer[i] !== layer) continue;
      out.push({layer: c.layer[i], value: lab.values[c.value[i]], value_index: c.value[i], expert: c.expert[i],
                count: c.count[i], share: c.share[i], lift: c.lift[i], ci_low: c.ci_low[i], ci_high: c.ci_high[i],
                q_value: c.q_value[i], tested: c.tested[i] === 1, significant: c.significant[i] === 1});
    }
    return out;
  };

  function picker(name, options, current, onPick) {
    return el("div", {class: "picker", role: "group", "aria-label": name}, el("span", {class: "picker-name"}, name),
      options.map(([value, text]) => el("button", {type: "button", class: String(value) === String(current) ? "on" : null,
                                                   dataset: {value}, on: {click: () => onPick(value)}}, text)));
  }

  M.views.specialization = function specialization(run, st, main) {
    if (!run.labels.length) {
      main.append(M.section("Specialization", el("p", {class: "muted"}, "No label was tested in this run.")));
      return;
    }
    const lab = run.labels.find((l) => l.name === st.label) || run.labels[0];
    const layers = run.run.layers;
    const all = st.layer === "all" || (st.layer === undefined && layers.length <= 4);
    const layer = all ? null : (layers.includes(Number(st.layer)) ? Number(st.layer) : layers[0]);
    const values = M.labelCells(lab, layer);
    const o = run.options;
    const chart = el("div", {id: "label-heatmap", dataset: {label: lab.name, layer: all ? "all" : layer, cells: values.length}});
    M.chart(chart, all ? "lift_heatmap_layers" : "lift_heatmap", values, (spec) => {
      const inner = spec.spec || spec;
      inner.encoding.y.title = lab.name;
      inner.encoding.tooltip[1].title = lab.name;
      inner.width = {step: stepFor(run.run.num_experts, all ? 900 / layers.length : 900)};
      expertAxis(inner.encoding, inner.width.step);
      inner.height = {step: Math.max(10, Math.min(20, Math.floor(520 / Math.max(lab.values.length, 1))))};
    }, (d) => M.openExpert(d.layer, d.expert));
    const sig = ((run.report.specialization || {})[lab.name] || []).filter((r) => layer === null || r.layer === layer);
    const rows = sig.map((r) => el("tr", null, el("td", null, r.value), el("td", null, r.layer),
      el("td", null, M.chip(r.expert, null, () => M.openExpert(r.layer, r.expert))), el("td", null, fmt.pct(r.share)),
      el("td", null, fmt.num(r.lift)), el("td", null, `[${fmt.num(r.ci_low)}, ${fmt.num(r.ci_high)}]`),
      el("td", null, fmt.sci(r.q_value)), el("td", null, fmt.int(r.count))));
    main.append(M.section(`Expert × ${lab.name}`,
      picker("label", run.labels.map((l) => [l.name, `${l.name} (${l.significant})`]), lab.name, (v) => M.go({label: v})),
      picker("layer", [["all", "all layers"], ...layers.map((l) => [l, `layer ${l}`])], all ? "all" : layer, (v) => M.go({layer: v})),
      el("p", {class: "small muted"}, `Colour: lift = share of the ${lab.name} value's tokens routed to the expert / the expert's overall share ` +
        `(1 = no preference; orange above, blue below; log scale). Opaque with an outline: significant (q ≤ ${o.alpha}, CI above 1, ` +
        `lift ≥ ${o.min_lift}, ≥ ${o.min_count} tokens). Faded: tested, not significant. Grey: not tested ` +
        `(fewer than ${o.min_tokens} tokens in ${o.min_docs} documents).`),
      el("div", {class: "key small"}, el("span", {class: "key-cell sig"}), "significant",
         el("span", {class: "key-cell muted-cell"}), "tested, not significant", el("span", {class: "key-cell untested"}), "not tested"),
      chart));
    main.append(M.section(`Significant ${lab.name} specialization${layer === null ? "" : " at layer " + layer} (top ${o.top} per value and layer)`,
      sig.length ? el("div", {class: "scroll"}, M.table([lab.name, "layer", "expert", "share", "lift", "95% CI", "q", "tokens"], rows, {id: "significant-table"}))
                 : el("p", {class: "muted"}, "None: no expert prefers a value of this label beyond noise.")));
    const nmiValues = [];
    for (const l of run.labels) for (const r of l.nmi || []) nmiValues.push(Object.assign({label: l.name}, r));
    const nmi = el("div", {id: "nmi-chart"});
    M.chart(nmi, "nmi", nmiValues);
    main.append(M.section("Normalized mutual information between expert and label", nmi,
      el("p", {class: "small muted"}, "Dashed: the same after shuffling the label across documents (the chance level of document labels).")));
  };
})();
