"""Measure the embedded checkpoints on the shipped evaluation split with moelens itself.

``python -m tools.embedded.measure --out moelens/embedded/models/moelens-mini/moelens_card.json``

Each checkpoint is traced with :func:`moelens.trace` into one DuckDB file (run id = checkpoint
name; settings in :data:`TRACE`, router logits kept) and every routing figure is read back with
:func:`moelens.open` (:mod:`tools.embedded.figures`): the card quotes what a user of moelens gets.
A never-trained copy of the architecture (``random-init``, seed 0) is traced too, as the control
for specialization.

The validation loss is the one figure moelens does not compute (it analyses routing, not
language modelling): each document is run as ``<|endoftext|>`` + text (at most 512 tokens) and
its cross entropy per token is compared with a unigram baseline, the cross entropy of the same
tokens under the training corpus' token distribution (add-one smoothed; counts in
``moelens-mini/unigram.json``, rewritten from the training token stream with ``--unigram-from``).

Keys of an existing ``--out`` that measuring does not produce (``corpus``, ``training``,
``parameters``, ``rejected_attempts``) are kept; :mod:`tools.embedded.card` renders the cards.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from tools.embedded import figures

MAX_TOKENS = 512
# moelens.trace settings of every measured checkpoint (pinned: the same figures on any machine)
TRACE = {"device": "cpu", "dtype": "float32", "batch_size": 8, "max_length": MAX_TOKENS, "logits": True}
SHIPPED = ("moelens-mini", "moelens-mini-early", "moelens-mini-collapsed")
KEPT = ("corpus", "training", "parameters", "rejected_attempts")


def load_eval(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def trace_all(checkpoints: dict[str, str], eval_path: Path, db: Path) -> None:
    """``moelens.trace`` each checkpoint (short name or folder) into ``db``, run id = checkpoint name."""
    import moelens

    for name, model in checkpoints.items():
        moelens.trace(model, str(eval_path), out=str(db), run_id=name, overwrite=True, **TRACE)


def save_random_init(template: Path, folder: Path, seed: int = 0) -> Path:
    """The control: ``template``'s architecture freshly initialised (seed ``seed``), never trained,
    saved with its tokenizer so that ``moelens.trace`` loads it like any checkpoint."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(template)), dtype=torch.float32)
    model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(template)).save_pretrained(str(folder))
    return folder


def encode(tok, docs: list[dict]) -> list[list[int]]:
    eos = tok.convert_tokens_to_ids(tok.eos_token)
    return [[eos] + tok(d["text"], add_special_tokens=False)["input_ids"][: MAX_TOKENS - 1] for d in docs]


def token_losses(folder: str, ids: list[list[int]]) -> list[np.ndarray]:
    """Cross entropy (nats) of every document token given ``<|endoftext|>`` and the tokens before it."""
    import torch
    from transformers import AutoModelForCausalLM

    from moelens.embedded import resolve

    model = AutoModelForCausalLM.from_pretrained(str(resolve(folder) or folder), dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for seq in ids:
            x = torch.tensor([seq])
            logits = model(input_ids=x).logits[0, :-1].float()
            out.append(torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="none").numpy())
    return out


def unigram_logprobs(counts: list[int]) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64) + 1.0
    return np.log(c / c.sum())


def losses(docs: list[dict], ids: list[list[int]], ce: list[np.ndarray], logp: np.ndarray) -> dict:
    """Token-weighted model and unigram cross entropy per language, per domain and overall."""
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


def product_settings() -> dict:
    """What measured the card: versions, trace settings and the analyses' default options."""
    import dataclasses

    import torch
    import transformers

    import moelens
    from moelens.analysis.options import LoadOptions, SpecializationOptions

    return {"moelens": moelens.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "trace": dict(TRACE), "load": dataclasses.asdict(LoadOptions()),
            "specialization": dataclasses.asdict(SpecializationOptions())}


def measure(checkpoints: dict[str, str], eval_path: Path, unigram: list[int], db: Path,
            loss_of: tuple[str, ...] | None = None) -> dict:
    """Trace every checkpoint, read the figures back with ``moelens.open``, add the losses."""
    import moelens
    from transformers import AutoTokenizer

    from moelens.embedded import MODELS

    docs = load_eval(eval_path)
    trace_all(checkpoints, eval_path, db)
    tok = AutoTokenizer.from_pretrained(str(MODELS["moelens-mini"]))
    ids = encode(tok, docs)
    logp = unigram_logprobs(unigram)
    result: dict = {
        "schema": 2,
        "eval": {"path": eval_path.name, "docs": len(docs), "tokens": int(sum(len(s) - 1 for s in ids)),
                 "sha256": hashlib.sha256(eval_path.read_bytes()).hexdigest()},
        "measured_with": product_settings(), "checkpoints": {}}
    with moelens.open(db) as t:
        for name in checkpoints:
            result["checkpoints"][name] = figures.checkpoint_figures(t, name)
        if {"moelens-mini-early", "moelens-mini"} <= set(checkpoints):
            result["router_saturation"] = figures.saturation(t, "moelens-mini-early", "moelens-mini")
    for name, model in checkpoints.items():
        if loss_of is None or name in loss_of:
            result["checkpoints"][name]["loss"] = losses(docs, ids, token_losses(model, ids), logp)
    return result


def _summary_lines(result: dict) -> list[str]:
    lines = []
    for name, ck in result["checkpoints"].items():
        eff = " ".join(f"{r['effective_experts']:.2f}" for r in ck["load"])
        dead = " ".join(str(len(r["dead_experts"])) for r in ck["load"])
        loss = ck.get("loss", {}).get("all", {}).get("all")
        head = f"{name}: loss {loss['model']:.3f} (unigram {loss['unigram']:.3f}) | " if loss else f"{name}: "
        lines.append(f"{head}exp(H) {eff} | dead {dead} | significant language cells "
                     f"{ck['cells']['language']['significant']} of {ck['cells']['language']['cells']}")
    acc = result.get("acceptance")
    if acc:
        b = acc["best_language_expert"]
        lines.append(f"best language expert: {b['value']} layer {b['layer']} expert {b['expert']} share "
                     f"{b['share']:.3f}, lift {b['lift']:.2f} (95 % CI {b['ci_low']:.2f}-{b['ci_high']:.2f})")
        lines.append(f"acceptance: specialization {acc['specialization_pass']} ({acc['specialized_pairs']} pairs), "
                     f"collapse {acc['collapse_pass']} ({acc['collapse_layers_halved']} layers halved)")
    return lines


def main(argv: list[str] | None = None) -> int:
    from moelens.embedded import MODELS, eval_split_path

    ap = argparse.ArgumentParser(
        prog="python -m tools.embedded.measure", description=__doc__.split("\n\n")[0],
        epilog="example: python -m tools.embedded.measure --out moelens/embedded/models/moelens-mini/moelens_card.json")
    ap.add_argument("--out", type=Path, help="write the figures (JSON) here, keeping its corpus/training keys")
    ap.add_argument("--db", type=Path, help="keep the trace database here (default: a temporary file)")
    ap.add_argument("--eval", type=Path, default=eval_split_path())
    ap.add_argument("--unigram-from", type=Path,
                    help="tokens.npy of the training run: (re)write moelens-mini/unigram.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-control", action="store_true", help="skip the never-trained control")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=FOLDER",
                    help="also measure this checkpoint (a rejected training attempt; kept under rejected_attempts)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    uni_path = MODELS["moelens-mini"] / "unigram.json"
    if args.unigram_from:
        stream = np.load(args.unigram_from)
        vocab = json.loads((MODELS["moelens-mini"] / "config.json").read_text())["vocab_size"]
        uni_path.write_text(json.dumps({"source": "training token stream", "tokens": len(stream),
                                        "counts": np.bincount(stream, minlength=vocab).tolist()}) + "\n")
    unigram = json.loads(uni_path.read_text())["counts"]
    extras = dict(spec.partition("=")[::2] for spec in args.extra)
    with tempfile.TemporaryDirectory(prefix="moelens-measure-") as tmp:
        checkpoints = {name: name for name in SHIPPED}
        if not args.no_control:
            checkpoints["random-init"] = str(save_random_init(MODELS["moelens-mini"], Path(tmp) / "random-init"))
        checkpoints.update(extras)
        result = measure(checkpoints, args.eval, unigram, args.db or Path(tmp) / "measure.duckdb")
    attempts = {name: result["checkpoints"].pop(name) for name in extras}
    result["acceptance"] = figures.acceptance(result["checkpoints"])
    result["command"] = "python -m tools.embedded.measure " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.out:
        previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
        result.update({k: previous[k] for k in KEPT if k in previous})
        for name, ck in attempts.items():
            result.setdefault("rejected_attempts", {})[name] = {
                "effective_experts": [r["effective_experts"] for r in ck["load"]],
                "dead_experts": [len(r["dead_experts"]) for r in ck["load"]],
                "measured_by": f"moelens {result['measured_with']['moelens']} (tools.embedded.measure)"}
        args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print("\n".join(_summary_lines(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
