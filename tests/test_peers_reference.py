"""The peers' definitions, reproduced from the API against reference code written from their papers and scripts.

Each reference below is a plain-Python transcription of the published definition (see
``reference/peers.md``): OLMoE's vocabulary and domain specialization (``Counter``s per token id or
domain, as ``allenai/OLMoE/scripts/run_routing_analysis.py`` keeps them), Mixtral's Table 5 repeat
rates, and DeepSeek EPLB's ``balanced_packing``. moelens' vectorised results must equal them to
floating-point rounding.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from moelens.analysis import VocabularyOptions, from_arrays
from moelens.analysis.load import balancedness
from moelens.analysis.options import ReportOptions
from moelens.analysis.report import build_report
from moelens.analysis.sharematrix import share_matrix
from moelens.analysis.vocabulary import token_specialization


def _routing(seed: int = 0, docs: int = 60, per: int = 50, E: int = 16, k: int = 4, vocab: int = 300):
    rng = np.random.default_rng(seed)
    T = docs * per
    doc = np.repeat(np.arange(docs), per)
    token = rng.zipf(1.3, T) % vocab  # long-tailed: many ids seen once, a few very often
    # routing that depends on the token (so specialization is real) plus noise, 3 layers
    pref = rng.random((3, vocab, E))
    noise = rng.random((3, T, E))
    experts = np.argsort(-(pref[:, token] * 2 + noise), axis=2)[:, :, :k].astype(np.int16)
    documents = [{"doc_id": d, "domain": ["arxiv", "github", "c4"][d % 3]} for d in range(docs)]
    return from_arrays(experts, num_experts=E, doc_id=doc, token_id=token, documents=documents), experts, token, doc


def _olmoe_vocabulary(token, experts_layer, top1: bool, min_count: int) -> float:
    """OLMoE §5.4: per token id, the share of its occurrences routed to its most frequent expert; mean over ids."""
    per_token: dict[int, Counter] = defaultdict(Counter)
    seen: Counter = Counter()
    for tok, chosen in zip(token.tolist(), experts_layer.tolist()):
        seen[tok] += 1
        for e in (chosen[:1] if top1 else chosen):
            per_token[tok][e] += 1
    values = [max(per_token[t].values()) / n for t, n in seen.items() if n >= min_count]
    return sum(values) / len(values)


def test_olmoe_vocabulary_specialization_both_conventions():
    routing, experts, token, _ = _routing()
    row = token_specialization(routing, options=VocabularyOptions(min_count=10))
    for li in range(3):
        r = row.row(li, named=True)
        # the paper's convention averages over every token id; the filtered one over ids seen >= 10 times
        assert r["paper_top1_mean"] == pytest.approx(_olmoe_vocabulary(token, experts[li], True, 1), abs=1e-12)
        assert r["paper_topk_mean"] == pytest.approx(_olmoe_vocabulary(token, experts[li], False, 1), abs=1e-12)
        assert r["top1_mean"] == pytest.approx(_olmoe_vocabulary(token, experts[li], True, 10), abs=1e-12)
        assert r["topk_mean"] == pytest.approx(_olmoe_vocabulary(token, experts[li], False, 10), abs=1e-12)
        assert r["paper_token_ids"] == len(set(token.tolist())) > r["token_ids"]


def test_olmoe_domain_specialization_top_k_and_top_1():
    routing, experts, _, doc = _routing(seed=1)
    domains = np.array(["arxiv", "github", "c4"])[doc % 3]
    frame = share_matrix(routing, "domain")
    for li in range(3):
        n_domain: Counter = Counter(domains.tolist())
        topk: dict[str, Counter] = defaultdict(Counter)
        top1: dict[str, Counter] = defaultdict(Counter)
        for d, chosen in zip(domains.tolist(), experts[li].tolist()):
            top1[d][chosen[0]] += 1
            for e in chosen:
                topk[d][e] += 1  # OLMoE Eq. 7: N^(k)_{E_i, D}
        got = frame.filter(frame["layer"] == li)
        for r in got.iter_rows(named=True):
            assert r["share"] == pytest.approx(topk[r["value"]][r["expert"]] / n_domain[r["value"]], abs=1e-15)
            assert r["top1_share"] == pytest.approx(top1[r["value"]][r["expert"]] / n_domain[r["value"]], abs=1e-15)


def test_mixtral_repeat_rates_per_label_value_in_the_report():
    routing, experts, _, doc = _routing(seed=2, k=2, E=8)
    domains = np.array(["arxiv", "github", "c4"])[doc % 3]
    data = build_report(routing=routing, options=ReportOptions(labels=("domain",))).data
    rows = {(r["layer"], r["value"]): r for r in data["repeat_rates_by_label"]["domain"]}
    for li in range(3):
        first, either, pairs = Counter(), Counter(), Counter()
        e = experts[li].tolist()
        for t in range(len(doc) - 1):
            if doc[t] != doc[t + 1]:
                continue  # Table 5 counts consecutive tokens (i, i+1) of one document
            d = domains[t]
            pairs[d] += 1
            first[d] += e[t][0] == e[t + 1][0]
            either[d] += bool(set(e[t][:2]) & set(e[t + 1][:2]))
        for d in pairs:
            r = rows[(li, d)]
            assert r["pairs"] == pairs[d]
            assert r["first_choice"] == pytest.approx(first[d] / pairs[d], abs=1e-15)
            assert r["first_or_second"] == pytest.approx(either[d] / pairs[d], abs=1e-15)
            assert r["baseline_first_or_second"] == pytest.approx(1 - (6 / 8) * (5 / 7))


def _eplb_balanced_packing(weight: list[float], num_packs: int) -> list[float]:
    """DeepSeek EPLB ``balanced_packing`` for one layer (no replication): heaviest item first onto the lightest
    pack that still has room; returns the pack loads."""
    per_pack = len(weight) // num_packs
    loads, items = [0.0] * num_packs, [0] * num_packs
    for group in sorted(range(len(weight)), key=lambda g: -weight[g]):
        pack = min((p for p in range(num_packs) if items[p] < per_pack), key=loads.__getitem__)
        loads[pack] += weight[group]
        items[pack] += 1
    return loads


@pytest.mark.parametrize("E, devices", [(16, 4), (64, 8), (256, 32)])
def test_eplb_balancedness_of_balanced_packing(E, devices):
    rng = np.random.default_rng(E)
    counts = rng.gamma(0.7, 100.0, E)
    loads = _eplb_balanced_packing(counts.tolist(), devices)
    assert balancedness(counts, devices, "greedy") == pytest.approx(np.mean(loads) / max(loads), abs=1e-15)
