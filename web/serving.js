/* moelens dashboard - the Serving view: expert-parallel balancedness, capacity drops, expert caches
 * with Belady's bound, batch coverage and prefetch, from run.serving (moelens.analysis.serving.view). */
(function () {
  "use strict";
  const M = window.Moelens;
  const {el, fmt} = M;
  M.views = M.views || {};

  function line(values, x, y, color, titles, extra) {
    return Object.assign({
      $schema: "https://vega.github.io/schema/vega-lite/v6.json", width: 380, height: 220,
      data: {values},
      mark: {type: "line", point: true},
      encoding: {
        x: {field: x, type: "quantitative", title: titles[0]},
        y: {field: y, type: "quantitative", title: titles[1], scale: {zero: false}},
        color: {field: color, type: "nominal", title: titles[2] || null},
        tooltip: [{field: color, type: "nominal"}, {field: x, type: "quantitative"}, {field: y, type: "quantitative", format: ".4f"}],
      },
    }, extra || {});
  }

  function chartBox(id) { return el("div", {id, class: "chart-box"}); }

  M.views.serving = function serving(run, st, main) {
    const s = run.serving;
    if (!s || !(s.placement || []).length && !(s.cache || []).length) {
      main.append(M.section("Serving what-ifs", el("p", {class: "muted"},
        "No serving what-ifs for this run", s && s.notes && s.notes.length ? ": " + s.notes.join("; ") : ".")));
      return;
    }
    const E = s.num_experts;
    // -- placement ------------------------------------------------------------------------------
    const place = chartBox("serving-placement");
    main.append(M.section("Expert-parallel placement",
      el("p", {class: "small muted"}, "Balancedness = mean GPU load / max GPU load (vLLM's definition, summed over layers; 1 = every " +
        "GPU equally busy). Contiguous is the engines' default layout; EPLB is DeepSeek's algorithm, alone and with redundant copies."),
      place,
      M.table(["EP (GPUs)", "placement", ["vLLM balancedness", "mean / max GPU load, summed over layers"],
               ["SGLang balancedness", "per layer, averaged"], ["TRT-LLM imbalance", "max / mean - 1"]],
        s.placement.map((r) => el("tr", null, el("td", null, r.ep), el("td", null, M.bdi(r.series)),
          el("td", null, fmt.num(r.vllm_balancedness, 3)), el("td", null, fmt.num(r.sglang_balancedness, 3)),
          el("td", null, fmt.num(r.trtllm_imbalance, 3)))), {id: "serving-placement-table"})));
    M.chartSpec(place, "serving-placement", line(s.placement, "ep", "vllm_balancedness", "series",
      ["GPUs (expert parallelism)", "balancedness (vLLM)", "placement"]));
    // -- capacity drops ------------------------------------------------------------------------
    if ((s.drops || []).length) {
      const drops = chartBox("serving-drops");
      const values = s.drops.map((r) => Object.assign({}, r, {batch: `${fmt.int(r.batch_tokens)} tokens per batch`}));
      main.append(M.section("Capacity factor: dropped assignments",
        el("p", {class: "small muted"}, "Capacity per expert ceil(CF · T · k / E) for a batch of T tokens; the share of token-expert " +
          "assignments over capacity (GShard / Switch drop them)."),
        drops,
        M.table(["capacity factor", "tokens per batch", "dropped"], s.drops.map((r) => el("tr", null,
          el("td", null, fmt.num(r.capacity_factor)), el("td", null, fmt.int(r.batch_tokens)), el("td", null, fmt.pct(r.drop_rate, 2)))),
          {id: "serving-drops-table"})));
      M.chartSpec(drops, "serving-drops", line(values, "capacity_factor", "drop_rate", "batch",
        ["capacity factor", "dropped assignments", null]));
    }
    // -- expert cache --------------------------------------------------------------------------
    if ((s.cache || []).length) {
      const cache = chartBox("serving-cache");
      const spec = line(s.cache, "cache_size", "hit_rate", "policy", [`experts kept per layer (of ${E})`, "hit rate", "policy"]);
      spec.encoding.strokeDash = {field: "policy", type: "nominal", legend: null,
        scale: {domain: ["belady", "lru", "lfu"], range: [[4, 3], [1, 0], [1, 0]]}};
      const sizes = [...new Set(s.cache.map((r) => r.cache_size))].sort((a, b) => a - b);
      const at = (p, c) => s.cache.find((r) => r.policy === p && r.cache_size === c) || {};
      main.append(M.section("Offloading: an expert cache per layer",
        el("p", {class: "small muted"}, "Decoding one document at a time, each layer keeps C experts on the GPU. LRU and LFU are online " +
          "policies; Belady's offline optimum (dashed) is the bound no policy beats."),
        cache,
        M.table(["cache size", "LRU", "LFU", ["Belady (bound)", "the offline optimum"], ["bytes / token (LRU)", "expert weights moved per decoded token"]],
          sizes.map((c) => el("tr", {dataset: {cache: c}}, el("td", null, c), el("td", null, fmt.pct(at("lru", c).hit_rate)),
            el("td", null, fmt.pct(at("lfu", c).hit_rate)), el("td", null, fmt.pct(at("belady", c).hit_rate)),
            el("td", null, fmt.int(at("lru", c).bytes_per_token)))), {id: "serving-cache-table"})));
      M.chartSpec(cache, "serving-cache", spec);
    }
    // -- coverage and prefetch ------------------------------------------------------------------
    if ((s.coverage || []).length) {
      const cov = chartBox("serving-coverage");
      const values = s.coverage.flatMap((r) => [{batch: r.batch, experts: r.distinct, series: "measured"},
                                                 {batch: r.batch, experts: r.uniform, series: "uniform routing"}]);
      const spec = line(values, "batch", "experts", "series", ["decode batch size", "distinct experts per step", null]);
      spec.encoding.x.scale = {type: "log"};
      main.append(M.section("Batch coverage",
        el("p", {class: "small muted"}, `Distinct experts a decode step touches at batch B, against uniform routing E(1 - (1 - k/E)^B).`),
        cov,
        M.table(["batch", "distinct experts", "uniform", "activation ratio"], s.coverage.map((r) => el("tr", null,
          el("td", null, r.batch), el("td", null, fmt.num(r.distinct, 2)), el("td", null, fmt.num(r.uniform, 2)),
          el("td", null, fmt.pct(r.activation)))), {id: "serving-coverage-table"})));
      M.chartSpec(cov, "serving-coverage", spec);
    }
    if ((s.prefetch || []).length) {
      main.append(M.section("Prefetch",
        M.table(["predictor", "accuracy", "most popular", "uniform"], s.prefetch.map((r) => el("tr", null,
          el("td", null, M.bdi(r.predictor)), el("td", null, fmt.pct(r.accuracy)), el("td", null, fmt.pct(r.popular)),
          el("td", null, fmt.pct(r.uniform)))), {id: "serving-prefetch-table"})));
    }
    if ((s.notes || []).length) main.append(el("p", {class: "small muted"}, s.notes.join(" ")));
  };
})();
