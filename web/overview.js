/* moelens dashboard - the run overview: model and data, per-layer imbalance and collapse, all runs side by side. */
(function () {
  "use strict";
  const M = window.Moelens;
  const {el, fmt} = M;
  M.views = M.views || {};

  function facts(run) {
    const r = run.run;
    const g = r.routing || {};
    const src = r.source || {kind: "transformers"};
    const recorded = ["weights", "token_text", "token_ids"].filter((k) => src[k] === false);
    const items = [
      ["run", M.bdi(r.run_id)], ["model", M.bdi(r.model)], ["family", r.family], ["dataset", M.bdi(r.dataset)],
      ["source", [src.kind, recorded.length ? el("div", {class: "small muted"}, recorded.map((k) => M.unavailable(run, k)).join("; ")) : null]],
      ["status", r.status], ["created", r.created_at ? String(r.created_at).replace("T", " ").slice(0, 16) : null],
      ["experts (E)", r.num_experts], ["top-k", r.top_k], ["shared experts", r.num_shared_experts],
      ["routing convention", g.convention ? [el("code", null, g.convention), " ", el("span", {class: "small muted"}, M.CONVENTIONS[g.convention] || "")] : null],
      ["scoring", [r.scoring, g.scoring_group ? [" · group ", el("code", null, g.scoring_group)] : null,
                   g.scoring_rule ? el("div", {class: "small muted"}, g.scoring_rule) : null]],
      ["MoE layers", r.layers.join(", ")], ["documents", fmt.int(r.documents)], ["tokens", fmt.int(r.tokens)],
      ["moelens", r.moelens_version],
    ];
    return el("dl", {class: "facts"}, items.map(([k, v]) => [el("dt", null, k), el("dd", null, v === null || v === undefined ? "–" : v)]),
      el("dt", null, ""), el("dd", {class: "small"}, el("a", {href: "#view=glossary"}, "what the codes and words mean (glossary)")));
  }

  function layerTable(run) {
    const o = run.options;
    const devices = (o.devices || [])[0];
    const rows = run.layers.map((l) => el("tr", {class: l.collapsed ? "bad" : null, dataset: {layer: l.layer}},
      el("td", null, l.layer), el("td", null, fmt.int(l.tokens)), el("td", null, fmt.num(l.max_over_mean)),
      el("td", null, fmt.num(l.cv)), el("td", null, fmt.num(l.gini)), el("td", null, fmt.num(l.entropy_norm)),
      el("td", null, `${fmt.num(l.effective_experts, 1)} of ${run.run.num_experts}`),
      el("td", null, balancedness(l, devices)),
      el("td", null, l.dead_experts.length ? l.dead_experts.map((e) => M.chip(e, null, () => M.openExpert(l.layer, e))) : "none"),
      el("td", null, l.collapsed ? el("span", {class: "badge bad", title: l.collapse_reason || ""}, "collapsed")
                                 : el("span", {class: "badge ok"}, "ok"),
         l.collapse_reason ? el("div", {class: "small"}, l.collapse_reason) : null)));
    return [
      M.table(["layer", ["tokens", "tokens routed at this layer"], ["max/mean", "largest load / mean load; 1 = uniform"],
               ["CV", "coefficient of variation of the loads; 0 = uniform"], ["Gini", "Gini coefficient of the loads; 0 = uniform"],
               ["entropy/ln E", "entropy of the loads / its maximum ln E; 1 = uniform"],
               ["effective experts", "exp(entropy of the loads); E = uniform"],
               [`EP balancedness (${devices || "–"} GPUs)`, "expert-parallel balancedness: mean GPU load / max GPU load with " +
                 "greedy (DeepSeek EPLB) packing of the experts; 1 = perfect"],
               ["dead experts", `utilization < ${o.dead_threshold} of the fair load`], "collapse"],
              rows, {id: "layer-table"}),
      el("p", {class: "small muted"},
         `Uniform routing: max/mean 1, CV 0, Gini 0, entropy/ln E 1, effective experts E, EP balancedness 1. Dead: utilization < ${o.dead_threshold}` +
         ` of the fair load. Collapsed: effective experts < ${fmt.pct(o.collapse_effective, 0)} of E or ≥ ${fmt.pct(o.collapse_dead, 0)} of experts dead.`),
    ];
  }

  function balancedness(l, devices) {
    const b = l.balancedness;
    if (!b || typeof b !== "object") return "–";
    const value = b[`greedy_${devices}`] !== undefined ? b[`greedy_${devices}`] : Object.values(b)[0];
    return typeof value === "number" ? fmt.num(value) : "–";
  }

  function labelSummary(run) {
    if (!run.labels.length) return el("p", {class: "muted"}, "No label to test: the documents carry no domain or language.");
    const rows = run.labels.map((lab) => {
      const best = (lab.nmi || []).reduce((a, b) => (b.nmi > (a ? a.nmi : -1) ? b : a), null);
      const untestedValues = (lab.value_untested || []).filter((x) => x).length;
      return el("tr", {dataset: {label: lab.name}},
        el("td", null, el("a", {href: "#", on: {click: (ev) => { ev.preventDefault(); M.go({view: "specialization", label: lab.name}); }}}, lab.name)),
        el("td", null, lab.kind), el("td", null, lab.values.length),
        el("td", null, fmt.int(lab.tested)), el("td", null, fmt.int(lab.significant)),
        el("td", {class: lab.untested ? "untested-count" : null},
           fmt.int(lab.untested), untestedValues ? el("span", {class: "small muted"}, ` (${untestedValues} value${untestedValues === 1 ? "" : "s"} with too few documents or tokens)`) : null),
        el("td", null, best ? `${fmt.num(best.nmi, 3)} (layer ${best.layer})` : "–"));
    });
    return M.table(["label", "kind", "values", ["cells tested", "(layer, value, expert) cells with enough data to test"],
                    ["significant", "tested cells that pass the significance rule"],
                    ["cells untested", "cells not tested: the value has too few documents or tokens, or the expert was never routed"],
                    ["max NMI", "largest normalized mutual information between expert and label over the layers"]], rows, {id: "label-summary"});
  }

  function allRuns(site, current) {
    const values = [];
    for (const r of site.runs) for (const l of r.layer_balance) values.push(Object.assign({run: r.run_id}, l));
    const chart = el("div", {id: "balance-chart"});
    M.chart(chart, "layer_balance", values);
    const rows = site.runs.map((r, i) => el("tr", {class: i === current ? "current" : null},
      el("td", null, el("a", {href: "#", on: {click: (ev) => { ev.preventDefault(); M.go({run: i}); }}}, M.bdi(r.run_id))),
      el("td", null, M.bdi(r.model)), el("td", null, fmt.int(r.tokens)),
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
    const rows = site.comparisons.map((c) => el("tr", null, el("td", null, M.bdi(c.run_a)), el("td", null, M.bdi(c.run_b)),
      el("td", null, fmt.int(c.tokens)),
      el("td", null, c.layers.map((l) => fmt.num(l.saturation)).join(" · ")),
      el("td", null, c.layers.map((l) => fmt.num(l.load_tv)).join(" · "))));
    return [el("p", {class: "small muted"}, "Router saturation: mean |top-k(a) ∩ top-k(b)| / k over the same tokens (OLMoE); " +
                                             "dashed: uniform routing (k/E, 1/E). Load TV: ½ Σ |load a − load b| over the experts."),
            chart, M.table(["run a", "run b", "matched tokens", "saturation per layer", "load TV per layer"], rows)];
  }

  M.views.overview = function overview(run, st, main) {
    const site = window.MOELENS_SITE;
    const current = Number(main.dataset.run);
    main.append(
      el("div", {class: "cols"}, M.section("Run", facts(run)), M.section("Specialization tested", labelSummary(run),
        el("p", {class: "small muted"}, `Significant: q ≤ ${run.options.alpha} (Benjamini-Hochberg), 95% bootstrap CI of the lift above 1, ` +
                                        `lift ≥ ${run.options.min_lift}, ≥ ${run.options.min_count} tokens. Untested: a value needs ≥ ${run.options.min_docs} ` +
                                        `documents and ≥ ${run.options.min_tokens} tokens.`))),
      M.section("Load balance per layer", layerTable(run)),
      M.section(site.runs.length > 1 ? `All runs (${site.runs.length})` : "Balance by layer", allRuns(site, current)));
    if (site.comparisons && site.comparisons.length) main.append(M.section("Run comparison (same tokens)", comparisons(site)));
    if (site.skipped && site.skipped.length) {
      main.append(M.section("Runs not shown", el("ul", null, site.skipped.map((s) => el("li", null, M.bdi(s.run_id), `: ${s.reason}`)))));
    }
  };
})();
