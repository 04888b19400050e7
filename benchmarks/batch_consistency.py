"""Batched (padded) capture versus one document at a time: how often do the recorded choices differ?

Padding and batching change only float rounding (matmul blocking, masked attention), so a token's
routing can differ only where two experts' selection scores are within rounding of each other.
For each family (tiny random models) - or a given model folder - this traces documents of varied
length once as padded batches and once one at a time, and prints per family: tokens x layers
compared, the share whose expert set differs, the largest router-logit difference between the two
runs (the rounding scale), and for the differing ones the largest gap between the k-th and
(k+1)-th logit (small = a near-tie). Capacity routers (switch, nllb) are marked: their capacity
depends on the batch, so there batching changes which tokens are dropped by design.

    python benchmarks/batch_consistency.py                       # all 72 families, tiny models
    python benchmarks/batch_consistency.py --model moelens-mini --docs 64
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def _capture(model, rows, mask):
    import moelens

    with moelens.capture(model, logits=True) as cap, torch.no_grad():
        model(input_ids=rows, attention_mask=mask)
    routes = cap.routes().sort("row", "pos", "layer", "rank")
    layers = sorted(set(routes["layer"].to_list()))
    logits = {layer: cap.router_logits(layer) for layer in layers}
    return routes, logits, layers


def compare(model, docs: list[list[int]], batch: int) -> dict:
    k_rows, diffs, gaps, noise, total = [], 0, [], 0.0, 0
    for start in range(0, len(docs), batch):
        group = docs[start:start + batch]
        width = max(len(d) for d in group)
        ids = torch.zeros(len(group), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, d in enumerate(group):
            ids[i, :len(d)], mask[i, :len(d)] = torch.tensor(d), 1
        batched, blog, layers = _capture(model, ids, mask)
        k = int(batched["rank"].max()) + 1
        for i, d in enumerate(group):
            alone, alog, _ = _capture(model, torch.tensor([d]), torch.ones(1, len(d), dtype=torch.long))
            mine = batched.filter(batched["row"] == i).sort("layer", "pos", "rank")
            a = alone.sort("layer", "pos", "rank")
            ea = np.sort(a["expert"].fill_null(-1).to_numpy().reshape(-1, k), axis=1)
            eb = np.sort(mine["expert"].fill_null(-1).to_numpy().reshape(-1, k), axis=1)
            differ = (ea != eb).any(1)
            total += len(differ)
            diffs += int(differ.sum())
            # logits rows: batched logits of row i are the i-th block of valid rows per layer
            offset = sum(len(x) for x in group[:i])
            for li, layer in enumerate(layers):
                la = alog[layer]
                lb = blog[layer][offset:offset + len(d)]
                noise = max(noise, float(np.nanmax(np.abs(la - lb))) if la.size else 0.0)
                sel = differ.reshape(len(layers), len(d))[li]
                if sel.any():
                    srt = -np.sort(-la[sel], axis=1)
                    gaps.extend((srt[:, k - 1] - srt[:, min(k, srt.shape[1] - 1)]).tolist())
    return {"compared": total, "differ": diffs, "noise": noise, "max_gap": max(gaps) if gaps else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a model folder or embedded name (default: every family, tiny random models)")
    p.add_argument("--families", help="comma-separated subset of families")
    p.add_argument("--docs", type=int, default=24)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"{'model':24s} {'tok x layer':>11s} {'differ':>8s} {'max |dlogit|':>13s} {'max gap at differing':>21s}")
    if args.model:
        import moelens
        from moelens.embedded import eval_split_path

        loaded = moelens.load_model(args.model)
        import json

        texts = [json.loads(line)["text"] for line in open(eval_split_path(), encoding="utf-8")][: args.docs]
        docs = [ids[:256] for ids in loaded.tokenizer(texts)["input_ids"] if ids]
        r = compare(loaded.model, docs, args.batch)
        print(f"{args.model:24s} {r['compared']:11d} {r['differ'] / r['compared']:8.4%} {r['noise']:13.2e} "
              f"{'-' if r['max_gap'] is None else format(r['max_gap'], '.2e'):>21s}")
        return
    from moelens.models.tiny import TINY_FAMILIES, build_tiny_model

    families = args.families.split(",") if args.families else TINY_FAMILIES
    for family in families:
        if family in ("switch_transformers", "nllb_moe", "doge"):
            print(f"{family:24s} {'skipped: ' + ('capacity depends on the batch' if family != 'doge' else 'routing mixes tokens by design'):>55s}")
            continue
        model = build_tiny_model(family)
        vocab = model.get_input_embeddings().num_embeddings
        docs = [rng.integers(0, vocab, int(rng.integers(4, 40))).tolist() for _ in range(args.docs)]
        r = compare(model, docs, args.batch)
        print(f"{family:24s} {r['compared']:11d} {r['differ'] / r['compared']:8.4%} {r['noise']:13.2e} "
              f"{'-' if r['max_gap'] is None else format(r['max_gap'], '.2e'):>21s}")


if __name__ == "__main__":
    main()
