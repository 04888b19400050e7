"""Train the embedded MoE on CPU: ``python -m tools.embedded.train --corpus DIR --work DIR ...``.

One run = one variant (``balanced``: Qwen3-MoE with the load-balancing auxiliary loss;
``collapsed``: the same model and data without load balancing, with a 100x router learning
rate and a 10x router initialisation scale (std 0.2 instead of 0.02): plausible training mistakes
that let routing collapse). The run:

1. trains the byte-level BPE tokenizer on ``train.jsonl`` (or reuses ``WORK/tokenizer``),
2. tokenizes the corpus once into ``WORK/tokens.npy`` (documents joined by ``<|endoftext|>``),
3. trains with AdamW + warmup/cosine on random windows drawn from a step-seeded generator, so
   a resumed run (``WORK/state.pt``, written every ``--save-every`` steps) sees exactly the
   batches an uninterrupted one would,
4. exports ``save_pretrained`` folders (fp16 safetensors + tokenizer) to ``--export`` and, for
   ``--early-export``, an early checkpoint at ``--early-fraction`` of the steps.

The log (one line per ``--log-every`` steps) records loss, aux loss, tokens/s and the per-layer
effective expert count exp(H) of the batch's top-k expert shares.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ARCH = dict(
    vocab_size=6144, hidden_size=192, intermediate_size=768, moe_intermediate_size=64,
    num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=48,
    num_experts=16, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1,
    mlp_only_layers=[], max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=True, initializer_range=0.02, hidden_act="silu",
)
VARIANTS = {
    "balanced": {"router_aux_loss_coef": 0.01, "router_lr_mult": 1.0, "router_init_std": None},
    "collapsed": {"router_aux_loss_coef": 0.0, "router_lr_mult": 100.0, "router_init_std": 0.2},
    # earlier attempts, kept so that the card's comparison can be reproduced: with a 10x router
    # learning rate routing stays at about half the balanced model's effective experts
    "collapsed-lr10": {"router_aux_loss_coef": 0.0, "router_lr_mult": 10.0, "router_init_std": 0.2},
    "collapsed-unnormalised": {"router_aux_loss_coef": 0.0, "router_lr_mult": 10.0,
                               "router_init_std": 0.2, "norm_topk_prob": False},
}


def make_config(variant: str, tok) -> "Qwen3MoeConfig":
    from transformers import Qwen3MoeConfig

    eos = tok.convert_tokens_to_ids(tok.eos_token)
    arch = dict(ARCH, norm_topk_prob=VARIANTS[variant].get("norm_topk_prob", ARCH["norm_topk_prob"]))
    return Qwen3MoeConfig(
        **arch, router_aux_loss_coef=VARIANTS[variant]["router_aux_loss_coef"],
        output_router_logits=False, bos_token_id=eos, eos_token_id=eos,
        pad_token_id=tok.pad_token_id)


def prepare(corpus: Path, work: Path) -> tuple[object, np.ndarray]:
    """Tokenizer and the token stream, built once per work folder and reused."""
    from transformers import AutoTokenizer

    from tools.embedded.tokenizer import save_tokenizer, train_tokenizer

    tok_dir = work / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        save_tokenizer(train_tokenizer(corpus / "train.jsonl"), tok_dir)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    stream_path = work / "tokens.npy"
    if not stream_path.is_file():
        with (corpus / "train.jsonl").open(encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f]
        eos = tok.convert_tokens_to_ids(tok.eos_token)
        ids = tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
        parts = []
        for enc in ids:
            parts.append(np.asarray(enc.ids, dtype=np.uint16))
            parts.append(np.asarray([eos], dtype=np.uint16))
        np.save(stream_path, np.concatenate(parts))
    return tok, np.load(stream_path)


def batch(stream: np.ndarray, seed: int, step: int, size: int, seq: int):
    import torch

    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(stream) - seq, size=size)
    rows = np.stack([stream[s:s + seq] for s in starts]).astype(np.int64)
    return torch.from_numpy(rows)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def effective_experts(router_logits, k: int) -> list[float]:
    """exp(H) of each layer's top-k expert-share distribution in this batch."""
    import torch

    out = []
    for logits in router_logits:
        idx = logits.float().topk(k, dim=-1).indices.flatten()
        share = torch.bincount(idx, minlength=logits.shape[-1]).double()
        share = share / share.sum()
        nz = share[share > 0]
        out.append(float(torch.exp(-(nz * nz.log()).sum())))
    return out


def set_load_dtype(folder: Path, dtype: str = "float32") -> None:
    """Weights stay float16 on disk; ``config.dtype`` says what ``from_pretrained`` loads them as
    by default (``dtype="auto"``), so CPU users get float32 compute without asking."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config["dtype"] = dtype
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def export(model, tok, folder: Path, extra: dict) -> None:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.safetensors"):
        stale.unlink()
    half = type(model)(model.config)
    half.load_state_dict(model.state_dict())
    half = half.to(torch.float16)
    half.config.output_router_logits = False
    half.save_pretrained(str(folder), safe_serialization=True)
    set_load_dtype(folder)
    tok.save_pretrained(str(folder))
    (folder / "training.json").write_text(json.dumps(extra, indent=1, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tools.embedded.train", description=__doc__.split("\n\n")[0],
        epilog="example: nohup nice -n 15 python -m tools.embedded.train --corpus /tmp/c "
               "--work /tmp/w-bal --variant balanced --export moelens/embedded/models/moelens-mini "
               "--early-export moelens/embedded/models/moelens-mini-early > /tmp/bal.log 2>&1 &")
    ap.add_argument("--corpus", type=Path, required=True, help="folder with train.jsonl")
    ap.add_argument("--work", type=Path, required=True, help="tokenizer, token stream, state.pt")
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="balanced")
    ap.add_argument("--tokenizer-from", type=Path, help="copy this work folder's tokenizer+tokens")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--export", type=Path)
    ap.add_argument("--early-export", type=Path)
    ap.add_argument("--early-fraction", type=float, default=0.08)
    ap.add_argument("--prepare-only", action="store_true")
    args = ap.parse_args(argv)

    import torch
    from transformers import Qwen3MoeForCausalLM
    from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.tokenizer_from:
        for name in ("tokenizer", "tokens.npy"):
            src, dst = args.tokenizer_from / name, args.work / name
            if not dst.exists():
                (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dst)
    tok, stream = prepare(args.corpus, args.work)
    print(f"stream: {len(stream):,} tokens, vocab {len(tok)}", flush=True)
    if args.prepare_only:
        return 0

    variant = VARIANTS[args.variant]
    torch.manual_seed(args.seed)
    config = make_config(args.variant, tok)
    model = Qwen3MoeForCausalLM(config)
    if variant["router_init_std"] is not None:  # None: the config's initializer_range (0.02)
        gen = torch.Generator().manual_seed(args.seed + 1)
        with torch.no_grad():
            for layer in model.model.layers:
                layer.mlp.gate.weight.normal_(0.0, variant["router_init_std"], generator=gen)
    # The Switch balancing loss is applied to each layer and averaged over layers; transformers'
    # own term pools the router logits of all layers (imbalances of different layers can cancel),
    # so it is switched off here and the per-layer loss added instead.
    coef = variant["router_aux_loss_coef"]
    model.router_aux_loss_coef = 0.0
    router = [p for n, p in model.named_parameters() if n.endswith("mlp.gate.weight")]
    no_decay = [p for n, p in model.named_parameters()
                if p.ndim < 2 and not n.endswith("mlp.gate.weight")]
    ids = {id(p) for p in router + no_decay}
    decay = [p for p in model.parameters() if id(p) not in ids]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1, "mult": 1.0},
         {"params": no_decay, "weight_decay": 0.0, "mult": 1.0},
         {"params": router, "weight_decay": 0.0, "mult": variant["router_lr_mult"]}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    state_path = args.work / "state.pt"
    step, elapsed = 0, 0.0
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed = state["step"], state["elapsed"]
        print(f"resumed at step {step}", flush=True)
    command = "python -m tools.embedded.train " + " ".join(sys.argv[1:] if argv is None else argv)
    early_step = max(1, int(round(args.early_fraction * args.steps)))
    model.train()
    t_log, tok_log = time.time(), 0
    lm = aux = float("nan")
    meta: dict = {}
    while step < args.steps:
        t0 = time.time()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup) * group["mult"]
        x = batch(stream, args.seed, step, args.batch, args.seq)
        out = model(input_ids=x, labels=x, output_router_logits=True)  # shifted inside
        aux_t = torch.stack([load_balancing_loss_func((lg,), config.num_experts, config.num_experts_per_tok)
                             for lg in out.router_logits]).mean()
        loss = out.loss + coef * aux_t
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        elapsed += time.time() - t0
        tok_log += x.numel()
        if step % args.log_every == 0 or step == args.steps:
            eff = effective_experts(out.router_logits, config.num_experts_per_tok)
            aux, lm = float(aux_t.detach()), float(out.loss.detach())
            rate = tok_log / (time.time() - t_log)
            print(f"step {step}/{args.steps} lm {lm:.4f} aux {aux:.4f} tok/s {rate:.0f} "
                  f"elapsed {elapsed / 60:.1f}m eff " + " ".join(f"{e:.1f}" for e in eff),
                  flush=True)
            t_log, tok_log = time.time(), 0
        meta = {"command": command, "variant": args.variant, **variant, "step": step,
                "steps": args.steps, "tokens_processed": step * args.batch * args.seq,
                "batch": args.batch, "seq": args.seq, "lr": args.lr, "seed": args.seed,
                "threads": args.threads, "wall_seconds": round(elapsed, 1)}
        if step == early_step and args.early_export:
            export(model, tok, args.early_export, meta)
            print(f"exported early checkpoint to {args.early_export}", flush=True)
        if step % args.save_every == 0 or step == args.steps:
            tmp = state_path.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "elapsed": elapsed}, tmp)
            os.replace(tmp, state_path)
    if not meta:
        print("nothing to do: the run is already complete", flush=True)
        return 0
    meta["final_lm_loss"] = round(lm, 4)
    meta["final_aux_loss"] = None if math.isnan(aux) else round(aux, 4)
    if args.export:
        export(model, tok, args.export, meta)
        print(f"exported to {args.export}", flush=True)
    print(json.dumps(meta), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
