/* moelens dashboard - the Causal view: what ablating experts did to the model, per label value, with the
 * band of usage-matched random ablations (run.causal, from the interventions table of `moelens intervene`). */
(function () {
  "use strict";
  const M = window.Moelens;
  const {el, fmt} = M;
  M.views = M.views || {};

  const signed = (x) => (typeof x === "number" ? (x >= 0 ? "+" : "") + x.toFixed(4) : "–");

  M.views.causal = function causal(run, st, main) {
    const c = run.causal || {rows: []};
    if (!c.rows.length) {
      main.append(M.section("Causal experts", el("p", {class: "muted"},
        "No interventions were measured on this run's model. ", el("code", null,
          "moelens intervene MODEL DATA --out DB --sweep top-specialists --label language=ar --random-baseline 3"),
        " measures them into the database; export the site again to see them here.")));
      return;
    }
    const ids = [...new Map(c.rows.map((r) => [`${r.irun_id}|${r.intervention_id}`, r])).values()];
    const key = st.iv && ids.some((r) => `${r.irun_id}|${r.intervention_id}` === st.iv) ? st.iv
      : `${ids[0].irun_id}|${ids[0].intervention_id}`;
    const select = el("select", {id: "causal-select", "aria-label": "intervention"},
      ids.map((r) => el("option", {value: `${r.irun_id}|${r.intervention_id}`}, M.isolate(r.description))));
    select.value = key;
    select.addEventListener("change", () => M.go({iv: select.value}));
    const [irun, iid] = [key.slice(0, key.lastIndexOf("|")), Number(key.slice(key.lastIndexOf("|") + 1))];
    const rows = c.rows.filter((r) => r.irun_id === irun && r.intervention_id === iid);
    const controls = c.controls.filter((r) => r.irun_id === irun && r.control_for === iid);
    const band = (r) => {
      const mine = controls.filter((x) => x.label_kind === r.label_kind && x.label_value === r.label_value);
      return mine.length ? {lo: Math.min(...mine.map((x) => x.d_loss_lo)), hi: Math.max(...mine.map((x) => x.d_loss_hi))} : null;
    };
    const values = rows.map((r) => Object.assign({label: `${r.label_kind}: ${r.label_value}`}, r,
      band(r) ? {band_lo: band(r).lo, band_hi: band(r).hi} : {}));
    const chart = el("div", {id: "causal-chart", class: "chart-box"});
    main.append(M.section("Causal experts",
      el("p", {class: "small muted"}, "Change in next-token loss (nats) when the intervention is applied, against the unmodified model " +
        "on the same tokens, per label value, with 95% intervals that resample documents. Grey: the range of the usage-matched " +
        "random ablations (the control). Effect = the interval lies above 0 and above every control's interval."),
      el("label", null, "intervention ", select), chart,
      M.table(["label", "value", "tokens", ["loss change", "nats; positive = worse"], "95% interval",
               ["KL", "KL(base || intervened) of the next-token distribution"], ["top-1 same", "most likely next token unchanged"],
               ["control (max)", "highest upper bound of the random controls"], "verdict"],
        rows.map((r) => el("tr", {dataset: {kind: r.label_kind}},
          el("td", null, M.bdi(r.label_kind)), el("td", null, M.bdi(r.label_value)), el("td", null, fmt.int(r.n_tokens)),
          el("td", {class: "num"}, signed(r.d_loss)), el("td", null, `[${signed(r.d_loss_lo)}, ${signed(r.d_loss_hi)}]`),
          el("td", null, fmt.num(r.kl, 4)), el("td", null, fmt.pct(r.top1_agree)),
          el("td", null, r.control_hi === null || r.control_hi === undefined ? "–" : signed(r.control_hi)),
          el("td", null, el("span", {class: r.verdict === "effect" ? "badge ok" : "badge"}, r.verdict)))),
        {id: "causal-table"}),
      c.truncated ? el("p", {class: "small muted"}, "Only the first rows of the interventions table are shown.") : null));
    const spec = {
      $schema: "https://vega.github.io/schema/vega-lite/v6.json", width: 520, height: {step: 16},
      data: {values},
      encoding: {y: {field: "label", type: "nominal", sort: null, title: null}},
      layer: [
        {mark: {type: "bar", color: "#d0d0d0", height: 10}, encoding: {x: {field: "band_lo", type: "quantitative"}, x2: {field: "band_hi"}}},
        {mark: {type: "rule", color: "#444"}, encoding: {x: {field: "d_loss_lo", type: "quantitative", title: "loss change (nats)"},
                                                        x2: {field: "d_loss_hi"}}},
        {mark: {type: "point", filled: true, size: 50}, encoding: {
          x: {field: "d_loss", type: "quantitative"},
          color: {field: "verdict", type: "nominal", scale: {domain: ["effect", "no effect beyond noise"], range: ["#c0392b", "#7f8c8d"]}},
          tooltip: [{field: "label", type: "nominal"}, {field: "d_loss", type: "quantitative", format: "+.4f"},
                    {field: "d_loss_lo", type: "quantitative", format: "+.4f"}, {field: "d_loss_hi", type: "quantitative", format: "+.4f"},
                    {field: "verdict", type: "nominal"}]}},
        {mark: {type: "rule", strokeDash: [2, 2], color: "#000"}, encoding: {x: {datum: 0}}},
      ],
    };
    M.chartSpec(chart, "causal", spec);
  };
})();
