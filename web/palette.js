/* moelens dashboard - expert colours: a categorical palette that stays distinguishable.
 *
 * With E <= 16 every expert keeps its own colour everywhere (E5 is always the same colour). With more
 * experts no palette can keep 64-256 colours apart, so only the experts that matter on the page (a
 * document's most frequent first choices) get a colour; every other expert is grey and named in the
 * legend and on hover.
 */
(function () {
  "use strict";
  const M = window.Moelens;

  /** 16 light colours, pairwise CIEDE2000 >= 18, contrast >= 7:1 with the dark text drawn on them and
   * apart from the grey of the uncoloured experts (a farthest-point search over sRGB; the browser test
   * measures the colours the page actually uses). */
  M.PALETTE = ["#bbaa22", "#ee77ff", "#11aaee", "#ff7755", "#22eeaa", "#ffccdd", "#66bb22", "#aaaa99",
               "#aaeeff", "#aaaacc", "#eeffcc", "#ee9933", "#ffddbb", "#ff7799", "#ccff11", "#66aaaa"];
  M.OTHER_COLOR = "#e6e6e6";   // experts left uncoloured (E > 16 and not among the page's top experts)
  M.NONE_COLOR = "#ffffff";    // no choice (a dropped token)
  M.numExperts = 0;            // E of the run shown (set by app.js)

  /** True when every expert of the run has its own colour. */
  M.fixedColors = () => M.numExperts <= M.PALETTE.length;

  /** Colour of ``expert``: its own with E <= 16; with more experts, its colour in ``assigned`` (a Map
   * expert -> colour from M.topExpertColors) or grey. */
  M.expertColor = function expertColor(expert, assigned) {
    if (expert === null || expert === undefined || expert < 0) return M.NONE_COLOR;
    if (M.fixedColors()) return M.PALETTE[expert];
    return (assigned && assigned.get(expert)) || M.OTHER_COLOR;
  };

  /** For E > 16: the 16 experts with the largest ``counts`` (Map expert -> n) get the palette, in order. */
  M.topExpertColors = function topExpertColors(counts) {
    if (M.fixedColors()) return null;
    const ranked = [...counts.entries()].filter(([e]) => e >= 0).sort((a, b) => b[1] - a[1] || a[0] - b[0]);
    return new Map(ranked.slice(0, M.PALETTE.length).map(([e], i) => [e, M.PALETTE[i]]));
  };

  M.chip = function chip(expert, extra, onClick, assigned) {
    return M.el("button", {class: "chip", type: "button", dataset: {expert},
                            style: {"background-color": M.expertColor(expert, assigned)}, on: onClick ? {click: onClick} : null,
                            title: onClick ? "open the expert card" : null},
                `E${expert}`, extra ? M.el("span", {class: "chip-extra"}, extra) : null);
  };
})();
