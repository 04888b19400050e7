/* moelens dashboard - shared helpers: DOM building (text only), formatting, colours, run loading, charts.
 *
 * Everything from the data files is untrusted text (token text comes from user documents): the
 * page builds its DOM with createElement + textContent and never assigns data to innerHTML.
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
  };

  /** A light, distinct background colour per expert id (golden-angle hues), dark text on it. */
  M.expertColor = function expertColor(expert) {
    if (expert === null || expert === undefined || expert < 0) return "#f0f0f0";
    const hue = (expert * 137.508) % 360;
    const light = 80 - 8 * (Math.floor(expert / 12) % 2);
    return `hsl(${hue.toFixed(1)}, 70%, ${light}%)`;
  };

  M.chip = function chip(expert, extra, onClick) {
    return M.el("button", {class: "chip", type: "button", dataset: {expert},
                            style: {"background-color": M.expertColor(expert)}, on: onClick ? {click: onClick} : null,
                            title: onClick ? "open the expert card" : null},
                `E${expert}`, extra ? M.el("span", {class: "chip-extra"}, extra) : null);
  };

  /** Visible form of a token: whitespace made visible (the raw text stays in the DOM title). */
  M.showToken = function showToken(text) {
    if (text === null || text === undefined) return "∅";
    if (text === "") return "∅";
    return String(text).replace(/\n/g, "↵").replace(/\t/g, "⇥").replace(/ /g, "·");
  };

  M.error = function error(message) {
    const box = document.getElementById("error");
    box.hidden = false;
    box.textContent = String(message);
  };

  // ---- runs ------------------------------------------------------------------------------------
  window.MOELENS_RUNS = window.MOELENS_RUNS || {};
  const pending = {};

  /** The data of run ``index`` (loads data/run-<index>.js by a script element once). */
  M.loadRun = function loadRun(index) {
    const i = Number(index);
    if (!Number.isInteger(i) || i < 0) return Promise.reject(new Error(`no run ${index}`));
    if (window.MOELENS_RUNS[i]) return Promise.resolve(window.MOELENS_RUNS[i]);
    if (pending[i]) return pending[i];
    pending[i] = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = `data/run-${i}.js`;
      script.onload = () => (window.MOELENS_RUNS[i] ? resolve(window.MOELENS_RUNS[i])
                                                     : reject(new Error(`data/run-${i}.js holds no run`)));
      script.onerror = () => reject(new Error(`cannot load data/run-${i}.js (was the site copied completely?)`));
      document.head.appendChild(script);
    });
    return pending[i];
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

  /** Free the Vega views of the previous page. */
  M.releaseCharts = function releaseCharts() {
    while (views.length) views.pop().finalize();
  };

  M.section = function section(title, ...children) {
    return M.el("section", {class: "card"}, M.el("h2", null, title), ...children);
  };

  M.table = function table(headers, rows, attrs) {
    return M.el("table", Object.assign({class: "grid"}, attrs || {}),
      M.el("thead", null, M.el("tr", null, headers.map((h) => M.el("th", null, h)))),
      M.el("tbody", null, rows));
  };
})();
