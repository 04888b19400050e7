"""Forward-pass overhead of routing capture on a GPU: naive copies vs moelens kernels.

Builds a randomly initialised MoE language model of realistic width (OLMoE-1B-7B or
Qwen3-30B-A3B shaped, with fewer layers so that it fits one GPU) in bf16 on CUDA, hooks every
router module with ``register_forward_hook`` (router output ``(logits, top_k_weights,
top_k_index)``) and times one forward pass per capture mode, interleaved round-robin so that
every mode sees the same GPU state:

  none            no hooks (the baseline)
  naive-cpu       each hook copies logits, weights and ids to the host with ``.cpu()``
  records-torch   each hook writes compact records into a RecordBuffer (torch reference)
  records-triton  the same with the fused Triton kernel
  stats-torch     stats mode: on-device aggregates only (torch scatter-add reference)
  stats-triton    stats mode with the fused Triton records + stats kernels

A timed iteration is: (reset buffers) + forward + (one async host copy of the batch's records
and waiting for it), wall clock between ``torch.cuda.synchronize()`` calls; CUDA-event device
time is reported beside it. The forward computes the LM head for the last position only
(``logits_to_keep=1``, as a trace run would), which makes the ratios conservative. The table
gives the median over ``--iters`` iterations after ``--warmup`` and the ratio to ``none``; the
records of the last iteration are checked against the ids the naive hook copied (exit status 1
on any difference).

Usage (on a GPU machine)::

    python benchmarks/gpu_capture_overhead.py                       # OLMoE-shaped, 4 layers, 8 x 1024 tokens
    python benchmarks/gpu_capture_overhead.py --family qwen3_moe --layers 6 --batch 4 --seq 2048
    python benchmarks/gpu_capture_overhead.py --smoke               # tiny CPU run that checks the plumbing
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager

import torch

from moelens.kernels import RecordBuffer, StatsAccumulator, triton_available

FAMILIES = {
    # hidden 2048, 64 experts, top-8, expert FFN 1024 (allenai/OLMoE-1B-7B-0924)
    "olmoe": dict(hidden_size=2048, intermediate_size=1024, num_experts=64, num_experts_per_tok=8,
                  num_attention_heads=16, num_key_value_heads=16, vocab_size=50304),
    # hidden 2048, 128 experts, top-8, expert FFN 768 (Qwen/Qwen3-30B-A3B)
    "qwen3_moe": dict(hidden_size=2048, moe_intermediate_size=768, intermediate_size=6144, num_experts=128,
                      num_experts_per_tok=8, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                      vocab_size=151936, norm_topk_prob=True),
}  # fmt: skip
TINY = dict(hidden_size=64, num_experts=8, num_experts_per_tok=2, num_attention_heads=4, num_key_value_heads=4,
            vocab_size=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)  # fmt: skip
SMOKE = {
    "olmoe": dict(TINY, intermediate_size=32),
    "qwen3_moe": dict(TINY, intermediate_size=64, moe_intermediate_size=32, head_dim=16),
}
MODES = ("none", "naive-cpu", "records-torch", "records-triton", "stats-torch", "stats-triton")


def build_model(family: str, layers: int, device: torch.device, dtype: torch.dtype, smoke: bool):
    if family == "olmoe":
        from transformers import OlmoeConfig as Config, OlmoeForCausalLM as Model
    else:
        from transformers import Qwen3MoeConfig as Config, Qwen3MoeForCausalLM as Model
    config = Config(num_hidden_layers=layers, **(SMOKE if smoke else FAMILIES)[family])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Model(config).eval()
    finally:
        torch.set_default_dtype(previous)
    routers = [layer.mlp.gate for layer in model.model.layers]
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for router in routers:  # random routers (the zero init would tie every expert)
            router.weight.copy_(torch.randn(router.weight.shape, generator=g, device=device) * 0.02)
    return model, config, routers


class Capture:
    """One capture mode: hooks for every router plus the per-iteration work around the forward."""

    def __init__(self, mode: str, num_layers: int, tokens: int, k: int, experts: int, device: torch.device):
        self.mode, self.tokens, self.valid = mode, tokens, None
        self.host: list = []
        self.buffer = self.stats = None
        if mode.startswith("records-"):
            self.buffer = RecordBuffer(num_layers, tokens, k, experts, device=device, backend=mode.split("-")[1],
                                       weight_dtype=torch.float16)  # fmt: skip
        elif mode.startswith("stats-"):
            self.stats = StatsAccumulator(num_layers, experts, device=device, backend=mode.split("-")[1])

    def hook(self, slot: int):
        def record(module, args, output):
            logits, weights, ids = output[:3]
            if self.mode == "naive-cpu":
                self.host.append((logits.detach().cpu(), weights.detach().cpu(), ids.cpu()))
            elif self.buffer is not None:
                self.buffer.write(slot, logits, ids, weights, valid=self.valid)
            elif self.stats is not None:
                self.stats.observe(slot, logits, ids, weights, valid=self.valid)

        return record

    @contextmanager
    def attached(self, routers):
        handles = [] if self.mode == "none" else [r.register_forward_hook(self.hook(i)) for i, r in enumerate(routers)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def before(self, valid: torch.Tensor) -> None:
        self.valid, self.host = valid, []
        if self.buffer is not None:
            self.buffer.reset()

    def after(self):
        if self.buffer is not None:
            return self.buffer.to_host_async(self.tokens).wait()
        return self.host


def time_modes(model, routers, captures, batch, valid, iters: int, warmup: int, cuda: bool):
    wall = {m: [] for m in captures}
    device_ms = {m: [] for m in captures}
    results = {}
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for it in range(warmup + iters):
        for mode, cap in captures.items():  # round-robin: every mode sees the same GPU state
            with cap.attached(routers), torch.inference_mode():
                sync()
                start_event = end_event = None
                if cuda:
                    start_event, end_event = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start_event.record()
                t0 = time.perf_counter()
                cap.before(valid)
                model(**batch, logits_to_keep=1)  # routing is all a trace needs: skip the LM head
                results[mode] = cap.after()
                if cuda:
                    end_event.record()
                sync()
                elapsed = (time.perf_counter() - t0) * 1e3
            if it >= warmup:
                wall[mode].append(elapsed)
                if cuda:
                    device_ms[mode].append(start_event.elapsed_time(end_event))
    return wall, device_ms, results


def check_records(results, valid: torch.Tensor) -> dict[str, int]:
    """Rows whose device records differ from the ids the naive hook copied from the routers."""
    naive = results.get("naive-cpu")
    keep = valid.cpu()
    mismatches = {}
    for mode in ("records-torch", "records-triton"):
        if naive is None or mode not in results:
            continue
        bad = 0
        for slot, (_, _, ids) in enumerate(naive):
            got = torch.from_numpy(results[mode]["ids"][slot]).long()
            bad += int((got[keep] != ids[keep].long()).any(dim=-1).sum())
            bad += int((got[~keep] != -1).any(dim=-1).sum())  # padding rows stay unwritten
        mismatches[mode] = bad
    return mismatches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))  # fmt: skip
    parser.add_argument("--family", choices=sorted(FAMILIES), default="olmoe")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (all MoE); default 4")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--pad", type=float, default=0.1, help="fraction of right padding per sequence")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU (checks the plumbing, not speed)")
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        print("gpu_capture_overhead: no CUDA device found; run it on a GPU machine, or pass --smoke for a tiny CPU run.")
        return 2
    if args.smoke:
        args.layers, args.batch, args.seq, args.iters, args.warmup = 2, 2, 16, 3, 1
    device = torch.device("cuda" if cuda else "cpu")
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {','.join(MODES)}")
    notes = []
    if not (cuda and triton_available()):
        skipped = [m for m in modes if m.endswith("-triton")]
        modes = [m for m in modes if m not in skipped]
        if skipped:
            notes.append(f"skipped {', '.join(skipped)} (needs CUDA and triton)")
    if "none" not in modes:
        modes.insert(0, "none")

    dtype = torch.bfloat16 if cuda else torch.float32
    model, config, routers = build_model(args.family, args.layers, device, dtype, args.smoke)
    tokens = args.batch * args.seq
    experts, k = config.num_experts, config.num_experts_per_tok
    g = torch.Generator(device=device).manual_seed(1)
    input_ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), device=device, generator=g)
    mask = torch.ones(args.batch, args.seq, dtype=torch.long, device=device)
    pad = int(args.seq * args.pad)
    if pad:
        mask[1::2, args.seq - pad:] = 0  # right padding on every other sequence
    batch = {"input_ids": input_ids, "attention_mask": mask}
    valid = mask.bool().reshape(-1)
    captures = {m: Capture(m, len(routers), tokens, k, experts, device) for m in modes}
    wall, device_ms, results = time_modes(model, routers, captures, batch, valid, args.iters, args.warmup, cuda)
    mismatches = check_records(results, valid)

    gpu = torch.cuda.get_device_name(device) if cuda else "CPU (smoke run, timings meaningless)"
    params = sum(p.numel() for p in model.parameters()) / 1e9
    print(f"device: {gpu}   torch {torch.__version__}")
    print(f"model: {args.family}-shaped, {args.layers} layers, hidden {config.hidden_size}, {experts} experts, "
          f"top-{k}, {params:.2f} B params, {dtype}")  # fmt: skip
    print(f"batch: {args.batch} x {args.seq} tokens ({int(valid.sum())} not padding), "
          f"median of {args.iters} after {args.warmup} warm-up")  # fmt: skip
    base = statistics.median(wall["none"])
    print(f"{'mode':<16}{'wall ms':>10}{'ratio':>8}{'device ms':>11}")
    for mode in modes:
        med = statistics.median(wall[mode])
        dev = f"{statistics.median(device_ms[mode]):.2f}" if device_ms[mode] else "-"
        print(f"{mode:<16}{med:>10.2f}{med / base:>8.3f}{dev:>11}")
    for name, cap in captures.items():
        tensors = []
        if cap.buffer is not None:
            tensors = [*(getattr(cap.buffer.records, f) for f in ("ids", "weights", "entropy", "margin", "lse")),
                       cap.buffer.counts]  # fmt: skip
        elif cap.stats is not None:
            tensors = [getattr(cap.stats.tables, f) for f in ("expert_counts", "coactivation", "entropy_hist")]
        if tensors:
            print(f"device memory of {name}: {sum(t.numel() * t.element_size() for t in tensors) / 2**20:.1f} MiB")
    for mode, bad in mismatches.items():
        print(f"check: {mode} records equal the router output on every row: {'yes' if bad == 0 else f'NO ({bad} rows)'}")
    for note in notes:
        print(f"note: {note}")
    return 1 if any(mismatches.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
