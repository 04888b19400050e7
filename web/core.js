/* moelens dashboard - shared helpers: DOM building (text only), formatting, run loading, charts.
 *
 * Everything from the data files is untrusted text (token text comes from user documents): the
 * page builds its DOM with createElement + textContent and never assigns data to innerHTML.
 * Expert colours and token rendering live in tokens-core.js.
 */
(function () {
  "use strict";
  const M = (window.Moelens = window.Moelens || {});

  /** el("div", {class: "x", dataset: {layer: 1}, on: {click: f}}, child, "text", ...) */
  M.el = function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") for (const [d, v] of Object.entries(value)) node.dataset[d] = String(v);
      else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
      else if (key === "style") for (const [p, v] of Object.entries(value)) node.style.setProperty(p, v);
      else if (key === "text") node.textContent = String(value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  };

  M.clear = function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  };

  const isNum = (x) => typeof x === "number" && Number.isFinite(x);
  M.fmt = {
    int: (x) => (isNum(x) ? Math.round(x).toLocaleString("en-US") : "–"),
    num: (x, d = 2) => (isNum(x) ? x.toFixed(d) : "–"),
    pct: (x, d = 1) => (isNum(x) ? (100 * x).toFixed(d) + "%" : "–"),
    sci: (x) => (isNum(x) ? (x !== 0 && Math.abs(x) < 1e-3 ? x.toExponential(1) : x.toPrecision(2)) : "–"),
    /** utilization: two decimals, but a small non-zero value never reads as 0.00 */
    util: (x) => (isNum(x) ? (x > 0 && x < 0.005 ? "<0.01" : x.toFixed(2)) : "–"),
  };

  // ---- untrusted text --------------------------------------------------------------------------
  /** Plain-text contexts (option labels, title attributes): wrap in FIRST STRONG ISOLATE ... POP
   * DIRECTIONAL ISOLATE so that bidi controls inside cannot reorder the text around it. In the DOM
   * the page uses <bdi> (unicode-bidi: isolate) instead. */
  M.isolate = (text) => "\u2068" + String(text === null || text === undefined ? "–" : text) + "\u2069";
  M.bdi = (text, attrs) => M.el("bdi", attrs || null, text === null || text === undefined ? "–" : String(text));

  /** "unavailable: <reason>" for what a run's source did not record (runs.config.source). */
  M.unavailable = function unavailable(run, what) {
    const words = {weights: "gate weights", token_text: "token text", token_ids: "token ids", vocabulary: "token ids"};
    const reason = (run.run.unavailable || {})[what];  // the report's words where it has them
    const kind = (run.run.source || {}).kind || "transformers";
    return `${words[what] || what}: unavailable: ${reason || `this run's source (${kind}) did not record them`}`;
  };

  M.error = function error(message) {
    const box = document.getElementById("error");
    box.hidden = false;
    box.textContent = String(message);
  };

  // ---- data files (scripts: fetch() of local files is blocked under file://) ---------------------
  const pending = {};

  /** Load ``src`` once by a script element; resolve with ``get()`` (the global the file assigns). */
  M.loadScript = function loadScript(src, get) {
    const have = get();
    if (have) return Promise.resolve(have);
    if (pending[src]) return pending[src];
    pending[src] = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = () => {
        const value = get();
        if (value) resolve(value);
        else { delete pending[src]; reject(new Error(`${src} holds no data`)); }
      };
      script.onerror = () => { delete pending[src]; reject(new Error(`cannot load ${src} (was the site copied completely?)`)); };
      document.head.appendChild(script);
    });
    return pending[src];
  };

  const index = (i, what) => {
    const n = Number(i);
    if (!Number.isInteger(n) || n < 0) throw new Error(`no ${what} ${i}`);
    return n;
  };

  /** The data of run ``i`` (data/run-<i>.js). */
  M.loadRun = function loadRun(i) {
    try { i = index(i, "run"); } catch (err) { return Promise.reject(err); }
    return M.loadScript(`data/run-${i}.js`, () => (window.MOELENS_RUNS || {})[i]);
  };

  /** Chunk ``c`` of run ``i``'s documents (data/run-<i>-docs-<c>.js): a list of documents. */
  M.loadDocs = function loadDocs(i, c) {
    return M.loadScript(`data/run-${index(i, "run")}-docs-${index(c, "chunk")}.js`,
                        () => ((window.MOELENS_DOCS || {})[`${i}/${c}`] || {}).documents);
  };

  /** The token search index of run ``i`` (data/run-<i>-search.js). */
  M.loadSearch = function loadSearch(i) {
    return M.loadScript(`data/run-${index(i, "run")}-search.js`, () => (window.MOELENS_SEARCH || {})[i]);
  };

  /** Document ``di`` (index into run.documents) with its tokens and routes. */
  M.loadDocument = function loadDocument(runIndex, run, di) {
    const meta = run.documents[di];
    return M.loadDocs(runIndex, meta.chunk).then((docs) => {
      const doc = docs.find((d) => d.doc_id === meta.doc_id);
      if (!doc) throw new Error(`document #${meta.doc_id} is missing from its data file`);
      return Object.assign({}, meta, doc);
    });
  };

  /** Rows of a columnar object {col: [..]} as objects. */
  M.rows = function rows(columns) {
    const names = Object.keys(columns);
    const n = names.length ? columns[names[0]].length : 0;
    const out = new Array(n);
    for (let i = 0; i < n; i++) {
      const row = {};
      for (const name of names) row[name] = columns[name][i];
      out[i] = row;
    }
    return out;
  };

  M.expert = function expert(run, layer, e) {
    return run.experts.find((x) => x.layer === layer && x.expert === e) || null;
  };

  // ---- charts (Vega-Lite templates from data/index.js, the same specs as moelens.viz.charts) ------
  const views = [];
  M.chart = function chart(container, name, values, patch, onClick) {
    const template = window.MOELENS_SITE.specs[name];
    const spec = JSON.parse(JSON.stringify(template));
    spec.data = {values};
    if (patch) patch(spec);
    container.classList.add("chart");
    container.dataset.chart = name;
    return window.vegaEmbed(container, spec, {actions: false, renderer: "svg", hover: true})
      .then((result) => {
        views.push(result);
        container.dataset.rendered = "true";
        if (onClick) {
          result.view.addEventListener("click", (event, item) => {
            if (item && item.datum && item.mark && item.mark.marktype !== "group") onClick(item.datum);
          });
        }
        return result;
      })
      .catch((err) => M.error(`chart ${name}: ${err && err.message ? err.message : err}`));
  };

  /** A chart from an inline Vega-Lite spec (views whose charts are not templates of moelens.viz.specs). */
  M.chartSpec = function chartSpec(container, name, spec) {
    container.classList.add("chart");
    container.dataset.chart = name;
    return window.vegaEmbed(container, spec, {actions: false, renderer: "svg", hover: true})
      .then((result) => { views.push(result); container.dataset.rendered = "true"; return result; })
      .catch((err) => M.error(`chart ${name}: ${err && err.message ? err.message : err}`));
  };

  /** Free the Vega views of the previous page. */
  M.releaseCharts = function releaseCharts() {
    while (views.length) views.pop().finalize();
  };

  M.section = function section(title, ...children) {
    return M.el("section", {class: "card"}, M.el("h2", null, title), ...children);
  };

  /** A table; ``headers``: strings or [text, title] pairs (the title explains the column). */
  M.table = function table(headers, rows, attrs) {
    return M.el("table", Object.assign({class: "grid"}, attrs || {}),
      M.el("thead", null, M.el("tr", null, headers.map((h) => (Array.isArray(h)
        ? M.el("th", {title: h[1]}, h[0], M.el("span", {class: "help", "aria-hidden": "true"}, "?"))
        : M.el("th", null, h))))),
      M.el("tbody", null, rows));
  };

  /** A one-line key of symbols: [[cssClass, text], ...]. */
  M.key = function key(items, attrs) {
    return M.el("div", Object.assign({class: "key small"}, attrs || {}),
      items.map(([cls, text]) => M.el("span", {class: "key-item"}, M.el("span", {class: "key-cell " + cls}), text)));
  };
})();
