"""Cost of measuring interventions: seconds per intervention / one plain forward over the same tokens.

In one process, on the same windows and batches: a plain forward loop of the model (the logits of
every window, nothing else), and :func:`moelens.interventions.effects.token_effects` for the
single-expert sweep of one layer (every expert ablated alone: E interventions, one unmodified
forward per batch shared by all of them). Both alternate for several rounds. The ratio is the cost
of one intervention in plain forwards (goal <= 1.1); the full sweep through ``measure`` (aggregation
and bootstrap intervals included) is timed once after.

    python benchmarks/intervene_speed.py                        # moelens-mini, layer 2, the eval split
    python benchmarks/intervene_speed.py --max-docs 100 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="moelens-mini")
    p.add_argument("--data", default=None, help="jsonl (default: the embedded eval split)")
    p.add_argument("--layer", type=int, default=2)
    p.add_argument("--max-docs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()

    import torch

    from moelens.embedded import eval_split_path
    from moelens.interventions.effects import batches, measure, prepare, token_effects
    from moelens.interventions.sweeps import single_experts
    from moelens.models.discover import plan_model
    from moelens.models.loading import load_model

    loaded = load_model(args.model)
    model = loaded.model
    data = args.data or str(eval_split_path())
    prepared = prepare(data, loaded.tokenizer, max_length=512, max_docs=args.max_docs)
    plan = plan_model(model)
    sweep = single_experts([args.layer], plan.num_experts)

    def plain() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in batches(prepared.windows, args.batch_size):
                width = max(len(w.ids) for w in batch)
                ids = torch.full((len(batch), width), prepared.pad_id, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for i, w in enumerate(batch):
                    ids[i, :len(w.ids)] = torch.from_numpy(w.ids)
                    mask[i, :len(w.ids)] = 1
                model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return time.perf_counter() - start

    def swept() -> float:
        start = time.perf_counter()
        token_effects(model, prepared, sweep, batch_size=args.batch_size, progress=False)
        return time.perf_counter() - start

    plain()  # warm-up
    times: dict[str, list[float]] = {"plain": [], "sweep": []}
    for r in range(args.rounds):
        for name, fn in ((("plain", plain), ("sweep", swept)) if r % 2 == 0 else (("sweep", swept), ("plain", plain))):
            times[name].append(fn())
    ratios = [s / len(sweep) / f for s, f in zip(times["sweep"], times["plain"])]
    start = time.perf_counter()
    rows = measure(model, data, sweep, tokenizer=loaded.tokenizer, max_docs=args.max_docs,
                   progress=False)
    full = time.perf_counter() - start
    print(f"{args.model} over {prepared.dataset}: {len(prepared.windows)} windows, {prepared.tokens:,} tokens;"
          f" {len(sweep)} single-expert ablations of layer {args.layer}; {os.cpu_count()} cores,"
          f" load average {os.getloadavg()[0]:.1f}")
    print("plain forward s: " + ", ".join(f"{t:.2f}" for t in times["plain"]))
    print(f"sweep s ({len(sweep)} interventions + shared baseline): " + ", ".join(f"{t:.2f}" for t in times["sweep"]))
    print("seconds per intervention / plain forward per round: " + ", ".join(f"{x:.3f}" for x in ratios)
          + f"  median {statistics.median(ratios):.3f}  (goal <= 1.1)")
    print(f"full single-expert sweep of layer {args.layer} through measure (tokenize, forwards, {rows.height} rows"
          f" with bootstrap intervals): {full:.1f} s")


if __name__ == "__main__":
    main()
