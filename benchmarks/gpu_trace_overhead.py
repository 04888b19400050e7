"""Capture overhead of moelens' own capture paths on a GPU: forward with capture / forward without.

Runs a random-initialised MoE of realistic size (OLMoE-1B-7B-shaped: hidden 2048, 64 experts,
top-8, expert FFN 1024, vocab 50304; fewer layers so it fits and runs quickly) in bf16 and times,
side by side in one process, round-robin over iterations:

* ``plain``     - the forward alone;
* ``naive``     - a forward hook that copies each router's ids and weights to the host per layer
                  (``.cpu()``: one stream synchronisation per layer, what per-token recorders do);
* ``torch``     - moelens' hooks + ``BatchCollector``: references kept on the device, one
                  device-to-host copy per batch (the default capture path);
* ``triton``    - moelens' hooks + ``DeviceCollector`` with the Triton record kernels (ids,
                  weights, entropy, margin, logsumexp written into a preallocated device buffer,
                  one asynchronous copy per batch);
* ``stats``     - moelens' hooks + ``StatsCollector``: bounded on-device aggregates, no per-token copy.

Each timed iteration is a whole batch: the forward, then draining the capture to host numpy
arrays (what the trace loop hands to its writer thread). Wall time between synchronisations,
median of N. Prints ratios to ``plain``.

    python benchmarks/gpu_trace_overhead.py
    python benchmarks/gpu_trace_overhead.py --family qwen3_moe --layers 8 --batch 8 --seq 2048
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch


def build(family: str, layers: int, dtype: torch.dtype, device: str, smoke: bool):
    import transformers

    if smoke:  # a tiny CPU version of the same pipeline, to check the script itself
        cfg = transformers.OlmoeConfig(vocab_size=256, hidden_size=64, intermediate_size=32, num_hidden_layers=layers,
                                       num_attention_heads=4, num_key_value_heads=4, num_experts=8, num_experts_per_tok=2)
        return transformers.OlmoeForCausalLM(cfg).to(device).eval(), cfg
    if family == "olmoe":
        cfg = transformers.OlmoeConfig(vocab_size=50304, hidden_size=2048, intermediate_size=1024,
                                       num_hidden_layers=layers, num_attention_heads=16, num_key_value_heads=16,
                                       num_experts=64, num_experts_per_tok=8, max_position_embeddings=4096)
        model = transformers.OlmoeForCausalLM(cfg)
    else:  # Qwen3-30B-A3B-shaped
        cfg = transformers.Qwen3MoeConfig(vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                                          moe_intermediate_size=768, num_hidden_layers=layers, num_attention_heads=32,
                                          num_key_value_heads=4, head_dim=128, num_experts=128, num_experts_per_tok=8,
                                          max_position_embeddings=4096)
        model = transformers.Qwen3MoeForCausalLM(cfg)
    return model.to(dtype).to(device).eval(), cfg


def main() -> None:
    from moelens.hooks import attach
    from moelens.models.discover import plan_model
    from moelens.pipeline.collectors import DeviceCollector, HostCollector, StatsCollector

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", choices=["olmoe", "qwen3_moe"], default="olmoe")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="tiny model on CPU, torch kernels (checks the script)")
    args = p.parse_args()
    device = "cpu" if args.smoke else "cuda"
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures GPU capture overhead; use --smoke to check it on CPU")
    if args.smoke:
        args.batch, args.seq, args.iters, args.warmup = 2, 16, 3, 1
    kernels = "torch" if args.smoke else "triton"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model, cfg = build(args.family, args.layers, torch.bfloat16 if device == "cuda" else torch.float32, device,
                       args.smoke)
    plan = plan_model(model)
    sites = [s.site for s in plan.sites]
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device=device)
    mask = torch.ones_like(ids)
    mask[1::2, -args.seq // 8:] = 0  # some right padding, as in real batches
    kwargs = dict(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)

    def naive_hook(module, args, out):
        checks.setdefault("naive", []).append((out[2].cpu(), out[1].float().cpu()))  # one sync per layer

    collectors = {
        "torch": HostCollector(plan),
        "triton": DeviceCollector(plan, sites, max_tokens=args.batch * args.seq, device=device, backend=kernels),
        "stats": StatsCollector(plan, sites, device=device, backend=kernels, labels={}, label_of=None, run_id="bench"),
    }
    times: dict[str, list[float]] = {name: [] for name in ("plain", "naive", "torch", "triton", "stats")}
    checks: dict[str, object] = {}

    def block(mode: str, iterations: int, record: bool) -> None:
        """``iterations`` batches with the mode's hooks attached once, as in a trace run."""
        col = collectors.get(mode)
        if mode == "naive":
            handles = [model.get_submodule(s.path).register_forward_hook(naive_hook) for s in plan.sites]
            scope = contextlib.ExitStack()
            scope.callback(lambda: [h.remove() for h in handles])
        elif col is not None:
            scope = attach(model, plan, col, logits=mode != "torch")
        else:
            scope = contextlib.nullcontext()
        with scope:
            for _ in range(iterations):
                checks.pop("naive", None)
                sync()
                start = time.perf_counter()
                if col is not None:
                    col.begin_batch([], tuple(ids.shape))
                model(**kwargs)
                if col is not None:
                    checks[mode] = col.finish_batch(flush=True)
                sync()
                if record:
                    times[mode].append(time.perf_counter() - start)

    with torch.inference_mode():
        for mode in times:
            block(mode, args.warmup, record=False)
        rounds = 4
        per_block = max(1, args.iters // rounds)
        for r in range(rounds):  # ABCDE EDCBA ... so slow drift affects every mode alike
            for mode in (list(times) if r % 2 == 0 else list(reversed(times))):
                block(mode, per_block, record=True)
    # the device paths recorded exactly what the torch path did
    routes_torch = checks["torch"].routes
    routes_triton = checks["triton"].routes
    same = all((a.experts == b.experts).all() and (a.weights == b.weights).all()
               for a, b in zip(sorted(routes_torch, key=lambda r: r.site), sorted(routes_triton, key=lambda r: r.site)))
    plain = statistics.median(times["plain"])
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU smoke run"
    print(f"{name}  torch {torch.__version__}  {args.family}-shaped, {args.layers} MoE layers, "
          f"E={plan.num_experts} k={plan.top_k}, batch {args.batch}x{args.seq} bf16, median of {args.iters}")
    for mode, values in times.items():
        med = statistics.median(values)
        print(f"  {mode:7s} {med * 1000:8.2f} ms   x{med / plain:6.3f}")
    print(f"  {kernels} records == torch path records (ids and weights, every layer): {same}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
