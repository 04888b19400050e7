/* moelens dashboard - the glossary: one word per concept, the same words as the CLI report and the docs
 * (docs/glossary.md holds the same terms; tests/test_site.py keeps the two in step). */
(function () {
  "use strict";
  const M = window.Moelens;
  const {el} = M;
  M.views = M.views || {};

  /** Routing conventions of the family table (how a family's router output is read). */
  M.CONVENTIONS = {
    "A": "the router returns (logits, weights, indices)",
    "A+": "as A, with extra outputs",
    "B": "a bare linear router; ids and weights come from the experts call",
    "C": "the router returns (dense scores, logits) (llama4)",
    "D": "a sorted dispatch plus a second router for attention experts (jetmoe)",
    "E": "a capacity router with one-hot masks; dropped choices recorded as -1",
    "F": "no router module; product-key routing inline (doge)",
  };

  /** Scoring-rule groups (how a router turns logits into the chosen experts and their weights). */
  M.SCORING_GROUPS = {
    "S1": "softmax over all experts → top-k (→ renormalised over the k)",
    "S2": "top-k on the raw logits → softmax over the k",
    "S3": "sigmoid → selection-only bias → top-k → renormalise → × scale",
    "S4": "DeepSeek-V3: sigmoid + selection bias, group-limited top-k → renormalise → × routed_scaling_factor",
    "S5": "softmax, group-limited top-k, no bias (DeepSeek-V2, Mistral 4)",
    "S6": "softmax + selection-only bias (ERNIE, LongCat zero experts, ZAYA skip class)",
    "S7": "special: llama4 sigmoid of the top-k logits, PhiMoE sparsemixer, doge product keys",
    "S8": "capacity-based token choice (Switch top-1, NLLB top-2): tokens dropped when an expert is full",
  };

  /** [section, [[term, definition], ...]] - the terms of docs/glossary.md, in its order. */
  M.GLOSSARY = [
    ["Routing", [
      ["routed choice", "One token sent to one expert at one layer: a top-k router makes k routed choices per token."],
      ["slot", "The position of a routed choice in the router's top-k, counted from 0: slot 0 is the first choice. (Not “rank”; the routes table's column is still called rank.)"],
      ["first choice", "The routed choice in slot 0."],
      ["gate weight", "The weight the router gives a chosen expert (its output is scaled by it). Unavailable for sources that record none."],
      ["shared expert", "An expert every token goes through, outside the routing; not counted in loads."],
    ]],
    ["Load", [
      ["load", "An expert's fraction of a layer's routed choices. The loads of a layer sum to 1."],
      ["fair load", "1/E: every expert's load under uniform routing."],
      ["utilization", "Load / fair load: 1 = a fair load, 2 = twice it."],
      ["dead expert", "Utilization below the dead threshold (0.1 by default)."],
      ["never routed", "An expert with no routed choice at all at a layer."],
      ["overloaded", "Utilization at or above 2 (by default)."],
      ["max/mean", "The largest load over the mean load (1 = uniform)."],
      ["CV", "Coefficient of variation of the loads (0 = uniform)."],
      ["Gini", "Gini coefficient of the loads (0 = uniform)."],
      ["entropy/ln E", "Entropy of the loads over its maximum ln E (1 = uniform)."],
      ["effective experts", "exp(entropy of the loads): E under uniform routing, 1 when everything goes to one expert."],
      ["collapsed", "A layer whose effective experts fall below 30 % of E, or with at least half of its experts dead."],
      ["EP balancedness", "Expert-parallel balancedness (“EP bal.” in the CLI report): mean GPU load / max GPU load when the experts are packed on N GPUs (contiguous, or greedy as DeepSeek EPLB); 1 = perfect."],
    ]],
    ["Specialization", [
      ["label", "A way to split tokens: a document label (domain, language) or a token label (position)."],
      ["share", "N(e, v) / N(v): the fraction of the tokens of label value v routed to expert e (OLMoE). With top-k routing the shares of a value sum to k."],
      ["overall share", "The expert's share over all tokens; k/E under uniform routing."],
      ["lift", "Share / overall share: 1 = no preference, 2 = twice as often as overall."],
      ["significant", "A tested cell with q ≤ 0.01, a 95 % bootstrap interval of the lift above 1, lift ≥ 1.25 and at least 5 tokens."],
      ["not significant", "A tested cell that fails that rule: no preference beyond noise."],
      ["untested", "A cell with too little data to test - the value has fewer than 5 documents or 20 tokens, or the expert was never routed. It says nothing either way; the reason gives what was missing."],
      ["q-value", "Benjamini-Hochberg false-discovery rate over all tested cells of a label."],
      ["95% CI", "Percentile interval of the lift from a bootstrap over documents."],
      ["NMI", "Normalized mutual information between the chosen expert and a label (0 = independent)."],
      ["position bucket", "Token label of the position in the document: 0, 1, 2-3, 4-7, ..."],
      ["ranking", "An ordering of results (e.g. tokens ranked by lift)."],
    ]],
    ["Across tokens and runs", [
      ["repeat rate", "How often consecutive tokens get the same first choice (Mixtral); uniform 1/E."],
      ["reuse gap", "Tokens between two uses of the same first-choice expert within a document (“reuse gap” in the CLI report: the median)."],
      ["router saturation", "Mean |top-k(a) ∩ top-k(b)| / k over the same tokens in two runs (OLMoE); 1 = the same experts."],
      ["top-1 agreement", "Fraction of tokens with the same first choice in two runs; uniform 1/E."],
      ["load TV", "Total-variation distance between two runs' loads: ½ Σ |load a − load b|."],
      ["co-activation", "P(partner also chosen | this expert chosen) for top-k routing."],
    ]],
    ["Token text", [
      ["token text", "The text a token holds. Byte-level tokenizers cut some characters into several tokens; each such token holds some bytes of the character."],
      ["<0xE7>", "Stored text of a byte a token holds of a cut character (the byte-fallback notation). The dashboard shows the character on the token holding its first byte and ◌ on the others, dashed as partial, or (switch “cut characters”) the bytes in hex (e7 8e); hover for the whole character."],
      ["⟨id⟩", "A token shown by its id: the run's source recorded no token text."],
      ["…", "A long token cut for display; hover for the full text."],
    ]],
    ["Codes", [
      ["routing convention A-F", "How a family's router output is read: " + Object.entries(M.CONVENTIONS).map(([k, v]) => `${k}: ${v}`).join("; ") + "."],
      ["scoring group S1-S8", "How a router turns logits into choices and weights: " + Object.entries(M.SCORING_GROUPS).map(([k, v]) => `${k}: ${v}`).join("; ") + "."],
    ]],
  ];

  M.views.glossary = function glossary(run, st, main) {
    main.append(M.section("Glossary",
      el("p", {class: "small muted"}, "One word per concept, the same in the dashboard, the CLI report and the docs (docs/glossary.md)."),
      M.GLOSSARY.map(([section, terms]) => [el("h3", null, section),
        el("dl", {class: "glossary"}, terms.map(([term, text]) => [el("dt", {id: "g-" + term.replace(/[^a-z0-9]+/gi, "-")}, term), el("dd", null, text)]))])));
  };
})();
