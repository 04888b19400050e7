/* moelens dashboard - the run overview: model and data, per-layer imbalance and collapse, all runs side by side. */
(function () {
  "use strict";
  const M = window.Moelens;
  const {el, fmt} = M;
  M.views = M.views || {};

  function facts(run) {
    const r = run.run;
    const items = [
      ["run", r.run_id], ["model", r.model], ["family", r.family], ["dataset", r.dataset],
      ["status", r.status], ["created", r.created_at ? String(r.created_at).replace("T", " ").slice(0, 16) : null], ["experts (E)", r.num_experts], ["top-k", r.top_k],
      ["shared experts", r.num_shared_experts], ["scoring", r.scoring], ["MoE layers", r.layers.join(", ")],
      ["documents", fmt.int(r.documents)], ["tokens", fmt.int(r.tokens)], ["moelens", r.moelens_version],
    ];
    return el("dl", {class: "facts"}, items.map(([k, v]) => [el("dt", null, k), el("dd", null, v === null || v === undefined ? "–" : v)]));
  }

  function layerTable(run) {
    const o = run.options;
    const rows = run.layers.map((l) => el("tr", {class: l.collapsed ? "bad" : null, dataset: {layer: l.layer}},
      el("td", null, l.layer), el("td", null, fmt.int(l.tokens)), el("td", null, fmt.num(l.max_over_mean)),
      el("td", null, fmt.num(l.cv)), el("td", null, fmt.num(l.gini)), el("td", null, fmt.num(l.entropy_norm)),
      el("td", null, `${fmt.num(l.effective_experts, 1)} of ${run.run.num_experts}`),
      el("td", null, l.dead_experts.length ? l.dead_experts.map((e) => M.chip(e, null, () => M.openExpert(l.layer, e))) : "none"),
      el("td", null, l.collapsed ? el("span", {class: "badge bad", title: l.collapse_reason || ""}, "collapsed")
                                 : el("span", {class: "badge ok"}, "ok"),
         l.collapse_reason ? el("div", {class: "small"}, l.collapse_reason) : null)));
    return [
      M.table(["layer", "tokens", "max/mean", "CV", "Gini", "entropy/ln E", "effective experts", "dead experts", "collapse"],
              rows, {id: "layer-table"}),
      el("p", {class: "small muted"},
         `Uniform routing: max/mean 1, CV 0, Gini 0, entropy/ln E 1, effective experts E. Dead: utilization < ${o.dead_threshold}` +
         ` of a fair share. Collapsed: effective experts < ${fmt.pct(o.collapse_effective, 0)} of E or ≥ ${fmt.pct(o.collapse_dead, 0)} of experts dead.`),
    ];
  }

  function labelSummary(run) {
    if (!run.labels.length) return el("p", {class: "muted"}, "No label was tested (too few labelled documents).");
    const rows = run.labels.map((lab) => {
      const best = (lab.nmi || []).reduce((a, b) => (b.nmi > (a ? a.nmi : -1) ? b : a), null);
      return el("tr", null,
        el("td", null, el("a", {href: "#", on: {click: (ev) => { ev.preventDefault(); M.go({view: "specialization", label: lab.name}); }}}, lab.name)),
        el("td", null, lab.kind), el("td", null, lab.values.length), el("td", null, fmt.int(lab.tested)),
        el("td", null, fmt.int(lab.significant)),
        el("td", null, best ? `${fmt.num(best.nmi, 3)} (layer ${best.layer})` : "–"));
    });
    return M.table(["label", "kind", "values", "cells tested", "significant", "max NMI"], rows);
  }

  function allRuns(site, current) {
    const values = [];
    for (const r of site.runs) for (const l of r.layer_balance) values.push(Object.assign({run: r.run_id}, l));
    const chart = el("div", {id: "balance-chart"});
    M.chart(chart, "layer_balance", values);
    const rows = site.runs.map((r, i) => el("tr", {class: i === current ? "current" : null},
      el("td", null, el("a", {href: "#", on: {click: (ev) => { ev.preventDefault(); M.go({run: i}); }}}, r.run_id)),
      el("td", null, r.model), el("td", null, fmt.int(r.tokens)),
      el("td", null, r.layer_balance.map((l) => fmt.num(l.effective_experts, 1)).join(" · ")),
      el("td", null, r.collapsed_layers ? el("span", {class: "badge bad"}, `${r.collapsed_layers} of ${r.layers.length}`) : el("span", {class: "badge ok"}, "none"))));
    return [chart, M.table(["run", "model", "tokens", "effective experts per layer", "collapsed layers"], rows)];
  }

  function comparisons(site) {
    const values = [];
    for (const c of site.comparisons) {
      const pair = `${c.run_a} → ${c.run_b}`;
      for (const l of c.layers) {
        values.push({pair, layer: l.layer, metric: "saturation", value: l.saturation, baseline: l.baseline_saturation});
        values.push({pair, layer: l.layer, metric: "top1_agreement", value: l.top1_agreement, baseline: l.baseline_top1});
      }
    }
    const chart = el("div", {id: "comparison-chart"});
    M.chart(chart, "comparison", values);
    const rows = site.comparisons.map((c) => el("tr", null, el("td", null, c.run_a), el("td", null, c.run_b),
      el("td", null, fmt.int(c.tokens)),
      el("td", null, c.layers.map((l) => fmt.num(l.saturation)).join(" · ")),
      el("td", null, c.layers.map((l) => fmt.num(l.load_tv)).join(" · "))));
    return [el("p", {class: "small muted"}, "Router saturation: mean |top-k(a) ∩ top-k(b)| / k over the same tokens (OLMoE); " +
                                             "dashed: uniform routing (k/E, 1/E). Load TV: ½ Σ |share a − share b|."),
            chart, M.table(["run a", "run b", "matched tokens", "saturation per layer", "load TV per layer"], rows)];
  }

  M.views.overview = function overview(run, st, main) {
    const site = window.MOELENS_SITE;
    const current = Number(main.dataset.run);
    main.append(
      el("div", {class: "cols"}, M.section("Run", facts(run)), M.section("Specialization tested", labelSummary(run),
        el("p", {class: "small muted"}, `Significant: q ≤ ${run.options.alpha} (Benjamini-Hochberg), 95% bootstrap CI of the lift above 1, ` +
                                        `lift ≥ ${run.options.min_lift}, ≥ ${run.options.min_count} tokens.`))),
      M.section("Load balance per layer", layerTable(run)),
      M.section(site.runs.length > 1 ? `All runs (${site.runs.length})` : "Balance by layer", allRuns(site, current)));
    if (site.comparisons && site.comparisons.length) main.append(M.section("Run comparison (same tokens)", comparisons(site)));
    if (site.skipped && site.skipped.length) {
      main.append(M.section("Runs not shown", el("ul", null, site.skipped.map((s) => el("li", null, `${s.run_id}: ${s.reason}`)))));
    }
  };
})();
