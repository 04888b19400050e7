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
  const UNTESTED_MARK = " (untested)";  // as moelens.viz.states.UNTESTED_MARK

  M.views.load = function load(run, st, main) {
    const E = run.run.num_experts;
    const values = run.experts.map((x) => ({layer: x.layer, expert: x.expert, count: x.count, load: x.load,
                                            utilization: x.utilization, dead: x.dead}));
    const chart = el("div", {id: "load-heatmap", dataset: {cells: values.length}});
    M.chart(chart, "load_heatmap", values, (spec) => {
      spec.width = {step: stepFor(E, 900)};
      spec.height = {step: Math.max(12, Math.min(24, stepFor(run.layers.length, 600)))};
      expertAxis(spec.encoding, spec.width.step);
    }, (d) => M.openExpert(d.layer, d.expert));
    const utils = run.experts.map((x) => x.utilization).filter((u) => typeof u === "number");
    const hi = Math.max(...utils), lo = Math.min(...utils);
    const clipped = run.experts.filter((x) => x.utilization > 8 || x.utilization < 0.125).length;
    const flagged = run.experts.filter((x) => x.dead || x.overloaded);
    const chips = (xs) => (xs.length ? xs.map((x) => M.chip(x.expert, fmt.util(x.utilization), () => M.openExpert(x.layer, x.expert))) : "–");
    const rows = run.layers.map((l) => {
      const mine = run.experts.filter((x) => x.layer === l.layer);
      return el("tr", {dataset: {layer: l.layer}}, el("td", null, l.layer),
        el("td", null, chips(mine.filter((x) => x.never_routed))),
        el("td", null, chips(mine.filter((x) => x.dead && !x.never_routed))),
        el("td", null, chips(mine.filter((x) => x.overloaded))));
    });
    main.append(M.section("Layer × expert load",
      el("p", {class: "small muted"}, `Colour: utilization = the expert's load (its fraction of the layer's routed choices) / the fair load 1/E; ` +
        `1 (white) = fair, blue = under-used, orange = over-used, log scale. The colour stops at ⅛ and 8 (legend: ≤ ⅛, ≥ 8); ` +
        `utilization here runs from ${fmt.util(lo)} to ${fmt.util(hi)}` + (clipped ? `, ${clipped} cell${clipped === 1 ? "" : "s"} beyond the clip` : "") +
        `. Click a cell for the expert card.`),
      chart));
    main.append(M.section(`Flagged experts (${flagged.length} of ${run.experts.length})`,
      M.table(["layer", ["never routed", "no routed choice at all"], ["dead", `utilization < ${run.options.dead_threshold}`],
               ["overloaded", `utilization ≥ ${run.options.overloaded}`]], rows, {id: "flag-table"}),
      el("p", {class: "small muted"}, `Chips show the utilization. Dead: utilization < ${run.options.dead_threshold}; ` +
        `overloaded: utilization ≥ ${run.options.overloaded}.`)));
  };

  /** Heatmap rows of one label (all layers, or one). */
  M.labelCells = function labelCells(lab, layer) {
    const out = [];
    const c = lab.cells;
    for (let i = 0; i < c.layer.length; i++) {
      if (layer !== null && c.layer[i] !== layer) continue;
      const value = lab.values[c.value[i]];
      out.push({layer: c.layer[i], value, value_index: c.value[i], expert: c.expert[i],
                value_label: value + (lab.value_untested && lab.value_untested[c.value[i]] ? UNTESTED_MARK : ""),
                count: c.count[i], share: c.share[i], lift: c.lift[i], ci_low: c.ci_low[i], ci_high: c.ci_high[i],
                q_value: c.q_value[i], state: c.state[i], untested_reason: c.untested_reason[i],
                tested: c.tested[i] === 1, significant: c.significant[i] === 1});
    }
    return out;
  };

  /** What to say when a label has no significant cell: untested (and why) is not "no effect". */
  M.untestedSummary = function untestedSummary(run, lab) {
    const o = run.options;
    const untested = lab.values.map((v, i) => [v, lab.value_untested ? lab.value_untested[i] : null]).filter(([, why]) => why);
    return {untested, all: untested.length === lab.values.length,
            needs: `a value is tested with ≥ ${o.min_docs} documents and ≥ ${o.min_tokens} tokens`};
  };

  function picker(name, options, current, onPick) {
    return el("div", {class: "picker", role: "group", "aria-label": name}, el("span", {class: "picker-name"}, name),
      options.map(([value, text]) => el("button", {type: "button", class: String(value) === String(current) ? "on" : null,
                                                   dataset: {value}, on: {click: () => onPick(value)}}, M.bdi(text))));
  }

  M.views.specialization = function specialization(run, st, main) {
    if (!run.labels.length) {
      main.append(M.section("Specialization", el("p", {class: "muted"}, "No label to test: the run's documents carry no domain or language, " +
        "and position needs tokens.")));
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
      inner.width = {step: stepFor(run.run.num_experts, all ? 900 / layers.length : 900)};
      expertAxis(inner.encoding, inner.width.step);
      inner.height = {step: Math.max(10, Math.min(20, Math.floor(520 / Math.max(lab.values.length, 1))))};
    }, (d) => M.openExpert(d.layer, d.expert));
    const lifts = values.filter((v) => v.state !== "untested" && typeof v.lift === "number").map((v) => v.lift);
    const maxLift = lifts.length ? Math.max(...lifts) : null;
    const beyond = lifts.filter((x) => x > 4 || x < 0.25).length;
    const sig = ((run.report.specialization || {})[lab.name] || []).filter((r) => layer === null || r.layer === layer);
    const rows = sig.map((r) => el("tr", null, el("td", null, M.bdi(r.value)), el("td", null, r.layer),
      el("td", null, M.chip(r.expert, null, () => M.openExpert(r.layer, r.expert))), el("td", null, fmt.pct(r.share)),
      el("td", null, fmt.num(r.lift)), el("td", null, `[${fmt.num(r.ci_low)}, ${fmt.num(r.ci_high)}]`),
      el("td", null, fmt.sci(r.q_value)), el("td", null, fmt.int(r.count))));
    const summary = M.untestedSummary(run, lab);
    const tested = values.filter((v) => v.state !== "untested").length;
    let none;
    if (summary.all) {
      none = el("p", {class: "untested-note", id: "untested-note"}, el("strong", null, "Not tested. "),
        `No value of ${lab.name} has enough data for the test (${summary.needs}): `,
        summary.untested.map(([v, why], i) => [i ? "; " : "", M.bdi(v), `: ${why}`]), ". This says nothing about specialization either way.");
    } else {
      none = el("p", {class: "muted", id: "untested-note"},
        `None significant: no expert prefers a value of ${lab.name} beyond noise in the ${fmt.int(tested)} tested cells` +
        (layer === null ? "" : ` at layer ${layer}`) + ".",
        summary.untested.length ? [" Untested values: ", summary.untested.map(([v, why], i) => [i ? "; " : "", M.bdi(v), ` (${why})`]), "."] : null);
    }
    main.append(M.section(`Expert × ${lab.name}`,
      picker("label", run.labels.map((l) => [l.name, `${l.name} (${l.significant})`]), lab.name, (v) => M.go({label: v})),
      picker("layer", [["all", "all layers"], ...layers.map((l) => [l, `layer ${l}`])], all ? "all" : layer, (v) => M.go({layer: v})),
      el("p", {class: "small muted"}, `Colour: lift = share (the fraction of the ${lab.name} value's tokens routed to the expert) / the expert's ` +
        `overall share; 1 = no preference, orange above, blue below, log scale. The colour stops at ¼ and 4 (legend: ≤ ¼, ≥ 4)` +
        (maxLift !== null ? `; the largest tested lift here is ${fmt.num(maxLift)}` + (beyond ? ` (${beyond} cell${beyond === 1 ? "" : "s"} beyond the clip)` : "") : "") + ". " +
        `Significant: q ≤ ${o.alpha}, 95% CI above 1, lift ≥ ${o.min_lift}, ≥ ${o.min_count} tokens. ` +
        `Untested: the value has fewer than ${o.min_docs} documents or ${o.min_tokens} tokens, or the expert was never routed (hover for the reason).`),
      M.key([["sig", "significant"], ["muted-cell", "tested, not significant"], ["untested", "untested (grey; axis: “(untested)”)"]], {id: "heatmap-key"}),
      chart));
    main.append(M.section(`Significant ${lab.name} specialization${layer === null ? "" : " at layer " + layer} (top ${o.top} per value and layer)`,
      sig.length ? el("div", {class: "scroll"}, M.table([lab.name, "layer", "expert", "share", "lift", "95% CI", "q", "tokens"], rows, {id: "significant-table"}))
                 : none,
      sig.length && summary.untested.length ? el("p", {class: "small muted", id: "untested-values"}, "Untested values: ",
        summary.untested.map(([v, why], i) => [i ? "; " : "", M.bdi(v), ` (${why})`]), ".") : null));
    const nmiValues = [];
    for (const l of run.labels) for (const r of l.nmi || []) nmiValues.push(Object.assign({label: l.name}, r));
    const nmi = el("div", {id: "nmi-chart"});
    M.chart(nmi, "nmi", nmiValues);
    main.append(M.section("Normalized mutual information between expert and label", nmi,
      el("p", {class: "small muted"}, "Dashed: the same after shuffling the label across documents (the chance level of document labels).")));
  };
})();
