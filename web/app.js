/* moelens dashboard - navigation: the run picker, the tabs and the #hash state (view, run, layer, ...). */
(function () {
  "use strict";
  const M = window.Moelens;
  const site = window.MOELENS_SITE;

  /** The page state lives in the hash (#view=expert&run=0&layer=1&expert=5), so links can be shared. */
  M.state = function state() {
    const params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    const out = {};
    for (const [key, value] of params) out[key] = value;
    return out;
  };

  M.go = function go(changes) {
    const params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    for (const [key, value] of Object.entries(changes)) {
      if (value === null || value === undefined) params.delete(key);
      else params.set(key, String(value));
    }
    const hash = "#" + params.toString();
    if (hash === window.location.hash) render();
    else window.location.hash = hash;
  };

  M.openExpert = (layer, expert) => M.go({view: "expert", layer, expert});

  const VIEWS = {
    overview: (run, st, main) => M.views.overview(run, st, main),
    load: (run, st, main) => M.views.load(run, st, main),
    specialization: (run, st, main) => M.views.specialization(run, st, main),
    tokens: (run, st, main) => M.views.tokens(run, st, main),
    expert: (run, st, main) => M.views.expert(run, st, main),
    serving: (run, st, main) => M.views.serving(run, st, main),
    causal: (run, st, main) => M.views.causal(run, st, main),
    glossary: (run, st, main) => M.views.glossary(run, st, main),
  };

  function runIndex(st) {
    const i = Number(st.run);
    return Number.isInteger(i) && i >= 0 && i < site.runs.length ? i : site.default_run;
  }

  function header(i, run) {
    const select = document.getElementById("run-select");
    select.value = String(i);
    const r = run.run;
    M.clear(document.getElementById("run-meta")).append(M.el("span", null,
      M.bdi(r.model || "?"), " · ", M.bdi(r.dataset || "?"), " · ",
      `${r.num_experts} experts, top-${r.top_k}, ${r.layers.length} MoE layers, ${M.fmt.int(r.tokens)} tokens `,
      r.status && r.status !== "complete" ? M.el("span", {class: "badge warn"}, M.bdi(r.status)) : null));
  }

  M.generation = 0;  // bumped on every render; asynchronous views drop stale results
  function render() {
    const st = M.state();
    const view = VIEWS[st.view] ? st.view : "overview";
    const i = runIndex(st);
    for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.view === view);
    const mine = ++M.generation;
    M.loadRun(i).then((run) => {
      if (mine !== M.generation) return;
      M.releaseCharts();
      M.numExperts = run.run.num_experts;
      header(i, run);
      const main = M.clear(document.getElementById("main"));
      main.dataset.view = view;
      main.dataset.run = String(i);
      VIEWS[view](run, st, main);
    }).catch((err) => M.error(err.message || String(err)));
  }

  function init() {
    if (!site || !Array.isArray(site.runs) || !site.runs.length) {
      M.error("data/index.js is missing or holds no runs: export the site again with `moelens export DB --site DIR`.");
      return;
    }
    const select = document.getElementById("run-select");
    site.runs.forEach((r, i) => select.append(M.el("option", {value: i, dataset: {runId: r.run_id}},
      `${M.isolate(r.run_id)}${r.collapsed_layers ? "  (collapsed layers: " + r.collapsed_layers + ")" : ""}`)));
    select.addEventListener("change", () => M.go({run: select.value, expert: null, doc: null, find: null, q: null}));
    for (const a of document.querySelectorAll("#tabs a")) {
      a.addEventListener("click", (ev) => { ev.preventDefault(); M.go({view: a.dataset.view}); });
    }
    window.addEventListener("hashchange", render);
    render();
  }

  M.views = M.views || {};
  init();
})();
