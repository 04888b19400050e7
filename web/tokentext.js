/* moelens dashboard - how a token's text is shown.
 *
 * A token's view (docs/site-data.md) is its stored text, or - where a byte-level token holds only
 * some bytes of a character - a list of text parts and fragments [hex bytes, whole character or null,
 * first byte index, bytes in the character]. Every token gets visible text: a fragment shows, in "chars"
 * mode (the default), the character on the token holding its first byte and ◌ on the others, dashed
 * as partial; in "bytes" mode its bytes in hex; hovering gives the whole character, its code point and
 * bytes. Tokens are bidi-isolated
 * (an unterminated RIGHT-TO-LEFT OVERRIDE cannot reorder what follows) and long ones cut (…) with the
 * full text on hover.
 */
(function () {
  "use strict";
  const M = window.Moelens;

  M.MAX_TOKEN_CHARS = 40;
  M.cutMode = "chars";  // "chars" | "bytes"; the token view's switch sets it (#cut=...)

  const codePoints = (s) => Array.from(String(s));
  const utf8hex = (ch) => Array.from(new TextEncoder().encode(ch), (b) => b.toString(16).padStart(2, "0")).join(" ");
  const uplus = (ch) => "U+" + ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0");

  /** Words for a fragment [hex, char, first, size]. */
  M.fragmentText = function fragmentText(f) {
    const [hex, ch, first, size] = f;
    const n = hex.split(" ").length;
    const which = n === 1 ? `byte ${first + 1}` : `bytes ${first + 1}–${first + n}`;
    return ch ? `${which} of ${size} of “${ch}” (${uplus(ch)}, ${utf8hex(ch)})`
              : `${which} (${hex}) of a character the neighbouring tokens do not complete`;
  };

  const fragmentShown = (p, mode) => (mode === "chars" ? (p[2] === 0 ? (p[1] || "\ufffd") : "◌") : p[0]);

  /** The full text of a view, for hover and search: text as it is, fragments described in brackets. */
  M.tokenTitle = function tokenTitle(view) {
    if (typeof view === "string") return view;
    return view.map((p) => (typeof p === "string" ? p : `[${M.fragmentText(p)}]`)).join("");
  };

  /** What a view shows before any cut. */
  M.tokenVisible = function tokenVisible(view, mode, visible) {
    const show = visible || ((t) => t);
    if (typeof view === "string") return show(view);
    return view.map((p) => (typeof p === "string" ? show(p) : fragmentShown(p, mode || M.cutMode))).join("");
  };

  /** Whitespace made visible (for token boxes and lists). */
  M.showToken = function showToken(text) {
    if (text === null || text === undefined || text === "") return "∅";
    return String(text).replace(/\n/g, "↵").replace(/\t/g, "⇥").replace(/ /g, "·");
  };

  /** An element for a token view. ``opts``: tag ("span"), cls, visible (text -> shown text, e.g.
   * M.showToken), max (characters before the cut), mode ("bytes" | "chars"), attrs. */
  M.tokenNode = function tokenNode(view, opts) {
    const o = Object.assign({tag: "span", cls: "", visible: null, max: M.MAX_TOKEN_CHARS, mode: M.cutMode}, opts || {});
    const node = M.el(o.tag, Object.assign({class: ("tokn " + o.cls).trim()}, o.attrs || {}));
    const parts = typeof view === "string" ? [view] : view;
    let budget = o.max;
    let cut = false;
    for (const p of parts) {
      if (budget <= 0) { cut = true; break; }
      if (typeof p === "string") {
        let cps = codePoints(o.visible ? o.visible(p) : p);
        if (cps.length > budget) { cps = cps.slice(0, Math.max(budget - 1, 1)); cut = true; }
        budget -= cps.length;
        node.append(document.createTextNode(cps.join("")));
      } else {
        const shown = fragmentShown(p, o.mode);
        const cls = "frag" + (o.mode === "chars" ? (p[2] === 0 ? " frag-lead" : " frag-cont") : "");
        node.append(M.el("span", {class: cls, dataset: {bytes: p[0]}}, shown));
        budget -= codePoints(shown).length;
      }
    }
    if (cut) {
      node.append(M.el("span", {class: "cut-mark", "aria-hidden": "true"}, "…"));
      node.classList.add("cut");
    }
    if (cut || typeof view !== "string") node.title = M.tokenTitle(view);
    return node;
  };
})();
