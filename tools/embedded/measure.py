"""Measure the embedded checkpoints on the shipped evaluation split.

``python -m tools.embedded.measure --out moelens/embedded/models/moelens-mini/moelens_card.json``

For every checkpoint it runs each evaluation document (``<|endoftext|>`` + text, at most 512
tokens) through the model with forward hooks on the routers (``mlp.gate`` of Qwen3-MoE returns
``(logits, top_k_weights, top_k_index)``), keeps per-document, per-layer expert counts of the
top-k choices, and derives from them (definitions as in OLMoE, arXiv 2409.02060, §5):

* load: expert share of a layer = N(expert in top-k) / N(tokens); uniform share is k/E.
  max/mean load, effective experts exp(H) of the share distribution normalised to sum 1, and
  dead experts: share < 10 % of the uniform share k/E;
* specialisation: share of language L (domain D) tokens whose top-k holds the expert,
  N(e in top-k, L) / N(L); the most specialised expert per layer and label, its ratio to k/E,
  and a bootstrap over documents (resample the label's documents with replacement, 1,000
  times, 95 % percentile interval) for that expert;
* router diagnostics: median top-1 minus top-2 logit, the share of tokens whose last top-k slot
  has weight exactly 0 (softmax underflow; the slot is then filled by ``torch.topk``'s tie-breaking
  among zero-probability experts, which is still what the model dispatches) and the effective
  experts when the slots are ranked by logits instead;
* router saturation of the early checkpoint: mean |topk_early ∩ topk_final| / k per token;
* lift: that share divided by the expert's share of all evaluation tokens (a router that sends
  everything to one expert has share 1 for every label but lift 1); the same figures for a
  never-trained copy (``random-init``, seed 0) are the control;
* validation loss per language and domain (nats / token) against a unigram baseline: the cross
  entropy of the same tokens under the training corpus' token distribution (add-one smoothed,
  counts in ``moelens-mini/unigram.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

MAX_TOKENS = 512
DEAD_FRACTION = 0.10
BOOTSTRAP = 1000


def load_eval(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def encode(tok, docs: list[dict]) -> list[list[int]]:
    eos = tok.convert_tokens_to_ids(tok.eos_token)
    return [[eos] + tok(d["text"], add_special_tokens=False)["input_ids"][: MAX_TOKENS - 1]
            for d in docs]


def load(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def random_init(folder: Path, seed: int = 0):
    """Control: the same architecture with freshly initialised weights (seed 0), never trained."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(folder)),
                                            dtype=torch.float32).eval()


def trace(model, ids: list[list[int]]):
    """Run each document; per document return the routers' top-k indices [layers, T, k]
    (T = doc tokens, BOS excluded), the CE per token, and router diagnostics [layers, T, 3]:
    top-1 minus top-2 logit, whether the renormalised weight of the last slot is exactly 0, and
    (columns 3..) the top-k by logit ranking."""
    import torch

    gates = [layer.mlp.gate for layer in model.model.layers if hasattr(layer.mlp, "gate")]
    captured: list = []
    handles = [g.register_forward_hook(lambda m, i, o: captured.append((o[0].detach(), o[1].detach(), o[2].detach())))
               for g in gates]
    topk, ce, diag = [], [], []
    try:
        with torch.no_grad():
            for seq in ids:
                captured.clear()
                x = torch.tensor([seq])
                logits = model(input_ids=x).logits[0, :-1].float()
                ce.append(torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="none").numpy())
                topk.append(torch.stack([c[2] for c in captured])[:, 1:].numpy())
                rows = []
                for router_logits, weights, _ in captured:
                    lg = router_logits[1:].float()
                    top = lg.topk(weights.shape[-1], dim=-1)
                    gap = top.values[:, 0] - top.values[:, 1]
                    zero = (weights[1:, -1] == 0).float()
                    rows.append(torch.cat([gap[:, None], zero[:, None], top.indices.float()], dim=1))
                diag.append(torch.stack(rows).numpy())
    finally:
        for h in handles:
            h.remove()
    return model.config, topk, ce, diag


def router_diagnostics(diag: list[np.ndarray], num_experts: int) -> list[dict]:
    """Per layer: median top-1/top-2 logit gap, share of tokens whose last top-k slot has weight
    exactly 0 (softmax underflow: the slot is then filled by topk's tie-breaking), and the
    effective experts when slots are ranked by logits instead (ties impossible)."""
    d = np.concatenate(diag, axis=1)  # [layers, tokens, 2 + k]
    out = []
    for layer in d:
        share = np.bincount(layer[:, 2:].astype(int).ravel(), minlength=num_experts).astype(float)
        p = share / share.sum()
        nz = p[p > 0]
        out.append({"median_logit_gap": float(np.median(layer[:, 0])),
                    "last_slot_zero_weight": float(layer[:, 1].mean()),
                    "effective_experts_logit_rank": float(math.exp(-(nz * np.log(nz)).sum()))})
    return out


def counts(topk: list[np.ndarray], num_experts: int) -> np.ndarray:
    """[docs, layers, experts] number of doc tokens whose top-k holds the expert."""
    out = np.zeros((len(topk), topk[0].shape[0], num_experts), dtype=np.int64)
    for d, idx in enumerate(topk):
        for layer in range(idx.shape[0]):
            out[d, layer] = np.bincount(idx[layer].ravel(), minlength=num_experts)
    return out


def load_figures(c: np.ndarray, n_tokens: np.ndarray, k: int) -> list[dict]:
    total = c.sum(axis=0)  # [layers, E]
    E = c.shape[2]
    out = []
    for layer, row in enumerate(total):
        share = row / n_tokens.sum()
        p = row / row.sum()
        nz = p[p > 0]
        out.append({
            "layer": layer, "max_over_mean": float(share.max() / share.mean()),
            "effective_experts": float(math.exp(-(nz * np.log(nz)).sum())),
            "dead_experts": int((share < DEAD_FRACTION * k / E).sum()),
            "min_share": float(share.min()), "max_share": float(share.max()),
            "shares": [round(float(s), 5) for s in share],
        })
    return out


def specialisation(c: np.ndarray, n_tokens: np.ndarray, labels: list[str], k: int,
                   seed: int = 0) -> list[dict]:
    """Most specialised expert per (layer, label), with a bootstrap CI over documents."""
    rng = np.random.default_rng(seed)
    E = c.shape[2]
    overall = c.sum(0) / n_tokens.sum()  # [layers, E]
    out = []
    labels_arr = np.asarray(labels)
    for label in sorted(set(labels)):
        docs = np.flatnonzero(labels_arr == label)
        sub, toks = c[docs], n_tokens[docs]
        draws = rng.integers(0, len(docs), size=(BOOTSTRAP, len(docs)))
        for layer in range(c.shape[1]):
            share = sub[:, layer].sum(0) / toks.sum()
            e = int(share.argmax())
            boot = sub[draws, layer, e].sum(1) / toks[draws].sum(1)
            lo, hi = np.percentile(boot, [2.5, 97.5])
            out.append({"label": label, "layer": layer, "expert": e, "share": float(share[e]),
                        "ratio_to_uniform": float(share[e] / (k / E)), "ci95": [float(lo), float(hi)],
                        "overall_share": float(overall[layer, e]),
                        "lift": float(share[e] / overall[layer, e]),
                        "docs": int(len(docs)), "tokens": int(toks.sum())})
    return out


def saturation(early: list[np.ndarray], final: list[np.ndarray], k: int) -> list[float]:
    a = np.concatenate(early, axis=1)  # [layers, tokens, k]; ids within a row are distinct
    b = np.concatenate(final, axis=1)
    overlap = (a[:, :, :, None] == b[:, :, None, :]).sum(axis=(2, 3))
    return [float(x) for x in overlap.mean(axis=1) / k]


def unigram_logprobs(counts_: list[int]) -> np.ndarray:
    c = np.asarray(counts_, dtype=np.float64) + 1.0
    return np.log(c / c.sum())


def losses(docs: list[dict], ids: list[list[int]], ce: list[np.ndarray], logp: np.ndarray) -> dict:
    rows: dict[str, dict[str, list[float]]] = {"language": {}, "domain": {}, "all": {}}
    for doc, seq, c in zip(docs, ids, ce):
        uni = float(-logp[np.asarray(seq[1:])].sum())
        for kind, label in (("language", doc["language"]), ("domain", doc["domain"]), ("all", "all")):
            acc = rows[kind].setdefault(label, [0.0, 0.0, 0])
            acc[0] += float(c.sum())
            acc[1] += uni
            acc[2] += len(c)
    return {kind: {label: {"model": a / n, "unigram": u / n, "tokens": n}
                   for label, (a, u, n) in sorted(table.items())}
            for kind, table in rows.items()}


def measure(models: dict[str, Path], eval_path: Path, unigram: list[int],
            control: bool = True) -> dict:
    from transformers import AutoTokenizer

    docs = load_eval(eval_path)
    tok = AutoTokenizer.from_pretrained(str(models["moelens-mini"]))
    ids = encode(tok, docs)
    n_tokens = np.asarray([len(s) - 1 for s in ids])
    logp = unigram_logprobs(unigram)
    result: dict = {"eval": {"path": eval_path.name, "docs": len(docs), "tokens": int(n_tokens.sum())},
                    "dead_threshold": f"share < {DEAD_FRACTION:g} x k/E", "bootstrap": BOOTSTRAP,
                    "checkpoints": {}}
    traces = {}
    runs = [(name, lambda f=folder: load(f)) for name, folder in models.items()]
    if control:
        runs.append(("random-init", lambda: random_init(models["moelens-mini"])))
    for name, make in runs:
        config, topk, ce, diag = trace(make(), ids)
        k, E = config.num_experts_per_tok, config.num_experts
        c = counts(topk, E)
        traces[name] = topk
        result["checkpoints"][name] = {
            "num_experts": E, "top_k": k, "uniform_share": k / E,
            "load": [dict(row, **extra) for row, extra in zip(
                load_figures(c, n_tokens, k), router_diagnostics(diag, E))],
            "loss": losses(docs, ids, ce, logp),
            "specialisation": {
                "language": specialisation(c, n_tokens, [d["language"] for d in docs], k),
                "domain": specialisation(c, n_tokens, [d["domain"] for d in docs], k)},
        }
    if "moelens-mini-early" in traces and "moelens-mini" in traces:
        k = result["checkpoints"]["moelens-mini"]["top_k"]
        result["router_saturation_early_vs_final"] = saturation(
            traces["moelens-mini-early"], traces["moelens-mini"], k)
    return result


def acceptance(result: dict) -> dict:
    """The two acceptance checks of the embedded default."""
    bal = result["checkpoints"]["moelens-mini"]
    u = bal["uniform_share"]
    best = max(bal["specialisation"]["language"], key=lambda r: r["ratio_to_uniform"])
    passing = [r for r in bal["specialisation"]["language"]
               if r["share"] >= 2 * u and r["ci95"][0] > u]
    eff_b = [r["effective_experts"] for r in bal["load"]]
    eff_c = [r["effective_experts"] for r in result["checkpoints"]["moelens-mini-collapsed"]["load"]]
    halved = [c <= b / 2 for b, c in zip(eff_b, eff_c)]
    ranked = [c["effective_experts_logit_rank"] <= b / 2 for b, c in zip(
        eff_b, result["checkpoints"]["moelens-mini-collapsed"]["load"])]
    return {"collapse_layers_halved_logit_rank": int(sum(ranked)),"specialisation_pass": bool(passing), "specialised_pairs": len(passing),
            "best_language_expert": best, "collapse_layers_halved": int(sum(halved)),
            "collapse_pass": sum(halved) > len(halved) / 2}


def main(argv: list[str] | None = None) -> int:
    from moelens.embedded import MODELS, eval_split_path

    ap = argparse.ArgumentParser(prog="python -m tools.embedded.measure",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="write the figures (JSON) here")
    ap.add_argument("--eval", type=Path, default=eval_split_path())
    ap.add_argument("--unigram-from", type=Path,
                    help="tokens.npy of the training run: (re)write moelens-mini/unigram.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=FOLDER",
                    help="also measure this checkpoint (e.g. a rejected training attempt)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    uni_path = MODELS["moelens-mini"] / "unigram.json"
    if args.unigram_from:
        stream = np.load(args.unigram_from)
        vocab = json.loads((MODELS["moelens-mini"] / "config.json").read_text())["vocab_size"]
        cnt = np.bincount(stream, minlength=vocab).tolist()
        uni_path.write_text(json.dumps({"source": "training token stream", "tokens": len(stream),
                                        "counts": cnt}) + "\n")
    unigram = json.loads(uni_path.read_text())["counts"]
    models = dict(MODELS)
    for spec in args.extra:
        name, _, folder = spec.partition("=")
        models[name] = Path(folder)
    result = measure(models, args.eval, unigram)
    result["acceptance"] = acceptance(result)
    result["command"] = "python -m tools.embedded.measure " + " ".join(
        sys.argv[1:] if argv is None else argv)
    text = json.dumps(result, indent=1, ensure_ascii=False)
    if args.out:
        args.out.write_text(text + "\n")
    acc = result["acceptance"]
    for name, ck in result["checkpoints"].items():
        eff = " ".join(f"{r['effective_experts']:.2f}" for r in ck["load"])
        dead = " ".join(str(r["dead_experts"]) for r in ck["load"])
        mm = " ".join(f"{r['max_over_mean']:.2f}" for r in ck["load"])
        a = ck["loss"]["all"]["all"]
        print(f"{name}: loss {a['model']:.3f} (unigram {a['unigram']:.3f}) | exp(H) {eff} | "
              f"max/mean {mm} | dead {dead}")
    b = acc["best_language_expert"]
    print(f"best language expert: {b['label']} layer {b['layer']} expert {b['expert']} share "
          f"{b['share']:.3f} ({b['ratio_to_uniform']:.2f}x uniform) CI95 {b['ci95'][0]:.3f}-"
          f"{b['ci95'][1]:.3f}")
    print(f"acceptance: specialisation {acc['specialisation_pass']} ({acc['specialised_pairs']} "
          f"pairs), collapse {acc['collapse_pass']} ({acc['collapse_layers_halved']} layers halved)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
