"""Round trips: trace a tiny model with moelens, write its routing as each engine writes it, import, compare.

The oracle is the traced run itself: the fixture writers in ``engine_writers.py`` follow each
engine's source (file and function cited there and below), so an import that gives back the
traced ``routes`` (and token ids, where the engine keeps them) reads the engine's format right.
The traced model (tiny qwen3_moe) has 4 decoder layers, layer 0 dense, 8 experts, top-2.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from moelens.cli import main

ew_spec = importlib.util.spec_from_file_location("engine_writers", Path(__file__).with_name("engine_writers.py"))
ew = importlib.util.module_from_spec(ew_spec)
ew_spec.loader.exec_module(ew)

E, K, NUM_LAYERS, MOE = 8, 2, 4, [1, 2, 3]


def _trace(tiny_model_dir, folder: Path):
    import moelens
    from moelens.store.arrays import load_routing

    texts = ["The quick brown fox jumps over the lazy dog.", "Der schnelle braune Fuchs springt.",
             "def double(x):\n    return 2 * x\n", "Le renard brun rapide saute par-dessus le chien paresseux.",
             "Article 1. All human beings are born free and equal in dignity and rights.", "敏捷的棕色狐狸跳过了懒狗。"]
    data = folder / "docs.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"text": t * (1 + i % 2), "domain": "code" if "def" in t else "prose",
                                "language": ["en", "de", "py", "fr", "en", "zh"][i]}, ensure_ascii=False) + "\n")
    db = folder / "trace.duckdb"
    moelens.trace(str(tiny_model_dir), str(data), out=str(db), progress=False)
    r = load_routing(str(db), weights=False)
    assert list(r.layers) == MOE and r.num_experts == E and r.top_k == K
    docs = []
    for d in np.unique(r.doc_id):
        sel = r.doc_id == d
        docs.append((int(d), r.token_id[sel].astype(np.int64), r.experts[:, sel].astype(np.int64)))
    return db, docs


@pytest.fixture(scope="module")
def trace_run(tiny_model_dir, tmp_path_factory):
    return _trace(tiny_model_dir, tmp_path_factory.mktemp("trace"))


def _routes(db, run_id=None) -> list[tuple]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        where = "WHERE run_id = ?" if run_id else ""
        rows = con.execute(f"SELECT doc_id, pos, layer, rank, expert, weight FROM routes {where} "
                           "ORDER BY doc_id, pos, layer, rank", [run_id] if run_id else []).fetchall()
        tokens = con.execute(f"SELECT doc_id, pos, token_id FROM tokens {where} ORDER BY doc_id, pos",
                             [run_id] if run_id else []).fetchall()
    finally:
        con.close()
    return rows, tokens


def _expected(docs, *, sort_slots=False):
    """Routes and tokens of ``docs`` with import doc ids ``0..n-1`` in order (the oracle)."""
    rows, tokens = [], []
    for i, (_, ids, experts) in enumerate(docs):
        for p in range(len(ids)):
            tokens.append((i, p, int(ids[p])))
            for li, layer in enumerate(MOE):
                slots = sorted(experts[li, p]) if sort_slots else experts[li, p]
                for r, e in enumerate(slots):
                    rows.append((i, p, layer, r, int(e)))
    return rows, tokens


def _same(db, docs, *, run_id=None, token_ids=True, sort_slots=False):
    rows, tokens = _routes(db, run_id)
    want_rows, want_tokens = _expected(docs, sort_slots=sort_slots)
    assert [r[:5] for r in rows] == want_rows
    assert all(r[5] is None for r in rows)  # engines record no gate weights: NULL, not 0
    if token_ids:
        assert tokens == want_tokens
    else:
        assert [t[:2] for t in tokens] == [t[:2] for t in want_tokens] and all(t[2] is None for t in tokens)


def test_vllm_request_outputs_and_jsonl_dump(trace_run, tmp_path):
    from moelens import sources

    _, docs = trace_run
    outputs = [ew.vllm_request_output(f"req-{i}", ids, experts, MOE, NUM_LAYERS, prompt_len=max(1, len(ids) // 2),
                                      last_token=7, fill=0) for i, (_, ids, experts) in enumerate(docs)]
    run = sources.from_vllm(outputs, num_experts=E)
    assert run.spec.layers == tuple(MOE) and run.spec.engine["dense_layers"] == [0]  # zero-filled layer 0 found
    summary = sources.write(run, tmp_path / "objects.duckdb")
    _same(tmp_path / "objects.duckdb", docs)
    assert summary.routes == sum(len(ids) for _, ids, _ in docs) * len(MOE) * K
    # the same outputs through moelens's JSONL dump and the command line, -1 dense fill this time
    outputs = [ew.vllm_request_output(f"req-{i}", ids, experts, MOE, NUM_LAYERS, prompt_len=1, last_token=3,
                                      fill=-1) for i, (_, ids, experts) in enumerate(docs)]
    assert sources.dump_vllm(outputs, tmp_path / "outputs.jsonl") == len(docs)
    assert main(["import", "vllm", str(tmp_path / "outputs.jsonl"), "--out", str(tmp_path / "cli.duckdb"),
                 "--num-experts", str(E), "--no-progress"]) == 0
    _same(tmp_path / "cli.duckdb", docs)


def test_zero_rows_in_a_moe_layer_are_not_recorded(trace_run, tmp_path):
    """A row of k >= 2 zeros is the capture buffer's fill (a top-k never repeats an expert):
    no routing was written for that token, so it is stored as no choice (NULL), and counted."""
    import duckdb

    from moelens import sources

    _, docs = trace_run
    _, ids, experts = docs[0]
    out = ew.vllm_request_output("z", ids, experts, MOE, NUM_LAYERS, prompt_len=2, last_token=1)
    out.outputs[0].routed_experts[[1, 4], 2, :] = 0
    sources.write(sources.from_vllm([out], num_experts=E), tmp_path / "z.duckdb")
    con = duckdb.connect(str(tmp_path / "z.duckdb"), read_only=True)
    nulls = con.execute("SELECT pos, count(*) FROM routes WHERE expert IS NULL GROUP BY pos ORDER BY pos").fetchall()
    config = json.loads(con.execute("SELECT config FROM runs").fetchall()[0][0])
    con.close()
    assert nulls == [(1, K), (4, K)] and config["source"]["engine"]["unrecorded_rows"] == 2


def test_sglang_multi_turn_start_len(trace_run, tmp_path):
    """Each document as two turns of one conversation; turn 2 asks only for rows from
    ``routed_experts_start_len`` on (``io_struct.py`` ``GenerateReqInput.routed_experts_start_len``)."""
    _, docs = trace_run
    lines = []
    for i, (_, ids, experts) in enumerate(docs):
        rows = ew.engine_rows(experts, MOE, NUM_LAYERS, fill=0)
        n = len(ids)
        a, b = n // 3, 2 * n // 3  # turn 1: prompt ids[:a], output ids[a:b]; rows [0, b-1)
        t = [int(x) for x in ids]
        turn1 = ew.sglang_response(f"c{i}-1", t[:a], t[a:b], rows[: b - 1])
        # turn 2: prompt = turn 1 + one new token, output = the rest + a final unrouted token
        s = b - 1
        turn2 = ew.sglang_response(f"c{i}-2", t[: b + 1], t[b + 1:] + [5], rows[s:], start_len=s)
        lines.append({"request": {"input_ids": t[:a], "return_routed_experts": True}, "response": turn1,
                      "conversation": f"chat-{i}"})
        lines.append({"request": {"input_ids": t[: b + 1], "return_routed_experts": True,
                                  "routed_experts_start_len": s}, "response": turn2, "conversation": f"chat-{i}"})
    path = tmp_path / "responses.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert main(["import", "sglang", str(path), "--out", str(tmp_path / "s.duckdb"), "--num-experts", str(E),
                 "--top-k", str(K), "--no-progress"]) == 0
    _same(tmp_path / "s.duckdb", docs)


def test_sglang_response_dicts_from_python(trace_run, tmp_path):
    """Bare response dicts (no request): prompt token ids unknown -> NULL, routing intact."""
    from moelens import sources

    _, docs = trace_run
    responses = []
    for i, (_, ids, experts) in enumerate(docs):
        t = [int(x) for x in ids]
        responses.append(ew.sglang_response(f"r{i}", t[:2], t[2:] + [9], ew.engine_rows(experts, MOE, NUM_LAYERS, 0)))
    run = sources.from_sglang(responses, num_experts=E, top_k=K)
    assert not run.spec.token_ids
    sources.write(run, tmp_path / "r.duckdb")
    rows, tokens = _routes(tmp_path / "r.duckdb")
    assert [r[:5] for r in rows] == _expected(docs)[0]
    assert [t[2] for t in tokens if t[1] >= 2] == [int(x) for _, ids, _ in docs for x in ids[2:]]
    assert all(t[2] is None for t in tokens if t[1] < 2)


def _p2l() -> np.ndarray:
    """4 layers x 10 physical experts: 8 logical + replicas of 0 and 3, shuffled per layer."""
    rng = np.random.default_rng(1)
    return np.stack([rng.permutation(np.array([0, 1, 2, 3, 4, 5, 6, 7, 0, 3])) for _ in range(NUM_LAYERS)])


def test_sglang_per_token_dump_two_ranks_physical_ids(trace_run, tmp_path):
    """Data-parallel ranks with different documents, physical ids of redundant experts, several
    sequences per extend pass (``extend_seq_lens``), the hard-coded 8 slots."""
    _, docs = trace_run
    p2l = _p2l()
    for rank in (0, 1):
        mine = [(ids, ex) for j, (_, ids, ex) in enumerate(docs) if j % 2 == rank]
        records = [ew.sglang_per_token_record(0, rank, mine[:2], p2l, MOE, mode=1),
                   ew.sglang_per_token_record(1, rank, mine[2:], p2l, MOE, mode=1)]
        ew.sglang_detail_dump(tmp_path, rank, records, p2l, 1000.5 + rank)
    assert main(["import", "sglang-dump", str(tmp_path), "--out", str(tmp_path / "d.duckdb"),
                 "--no-progress"]) == 0
    order = [j for rank in (0, 1) for j in range(len(docs)) if j % 2 == rank]
    _same(tmp_path / "d.duckdb", [docs[j] for j in order])


def test_sglang_per_token_fused_shared_and_replicated_ranks(trace_run, tmp_path):
    """Shared-expert fusion puts id E in the slot after the routed ones; tensor-parallel ranks
    record the same tokens (kept once by --ranks auto, twice by --ranks distinct)."""
    _, docs = trace_run
    p2l = np.tile(np.arange(E), (NUM_LAYERS, 1))
    records = [ew.sglang_per_token_record(0, 0, [(ids, ex) for _, ids, ex in docs], p2l, MOE, mode=1,
                                          fused_shared=1, num_experts=E)]
    for rank in (0, 1):
        ew.sglang_detail_dump(tmp_path, rank, [dict(r, rank=rank) for r in records], p2l, 5.0)
    out = str(tmp_path / "f.duckdb")
    assert main(["import", "sglang-dump", str(tmp_path), "--out", out, "--fused-shared-experts", "1",
                 "--no-progress"]) == 0
    _same(out, docs)
    assert main(["import", "sglang-dump", str(tmp_path), "--out", out, "--fused-shared-experts", "1",
                 "--ranks", "distinct", "--run-id", "both", "--no-progress"]) == 0
    rows, _ = _routes(out, "both")
    assert len(rows) == 2 * len(_expected(docs)[0])


def test_sglang_per_token_decode_passes_become_one_token_documents(trace_run, tmp_path):
    """A decode pass has ``extend_seq_lens=None``: every token is a separate request's."""
    from moelens import sources

    _, docs = trace_run
    p2l = np.tile(np.arange(E), (NUM_LAYERS, 1))
    segs = [(ids[:1], ex[:, :1]) for _, ids, ex in docs[:3]]
    ew.sglang_detail_dump(tmp_path, 0, [ew.sglang_per_token_record(7, 0, segs, p2l, MOE, mode=2)], p2l, 1.0)
    run = sources.read("sglang-dump", [tmp_path])
    assert [d.n_tokens for d in run.docs] == [1, 1, 1]
    assert [d.meta["phase"] for d in run.docs] == ["decode"] * 3
    assert [int(d.token_ids[0]) for d in run.docs] == [int(ids[0]) for _, ids, _ in docs[:3]]
    assert np.array_equal(run.docs[2].experts[:, 0], docs[2][2][:, 0])


def _trace_counts(docs) -> np.ndarray:
    counts = np.zeros((NUM_LAYERS, E), np.int64)
    for _, _, experts in docs:
        for li, layer in enumerate(MOE):
            counts[layer] += np.bincount(experts[li].reshape(-1), minlength=E)
    return counts


def _stats_counts(db, run_id=None) -> tuple[np.ndarray, dict]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        where = "AND run_id = ?" if run_id else ""
        params = [run_id] if run_id else []
        out = np.zeros((NUM_LAYERS, E), np.int64)
        for layer, expert, count in con.execute("SELECT layer, expert, count FROM stats_expert_counts WHERE "
                                                f"label_kind = 'all' {where}", params).fetchall():
            out[layer, expert] = count
        tokens = dict(con.execute(f"SELECT layer, tokens FROM stats_tokens WHERE label_kind = 'all' {where}",
                                  params).fetchall())
    finally:
        con.close()
    return out, tokens


def test_sglang_stat_and_per_pass_dumps_are_stats_runs(trace_run, tmp_path):
    _, docs = trace_run
    want = _trace_counts(docs)
    n_tokens = sum(len(ids) for _, ids, _ in docs)
    stat = tmp_path / "stat"
    stat.mkdir()
    # two buffered steps (the circular buffer keeps each pass; unused steps are zeros)
    logical = np.zeros((3, NUM_LAYERS, E), np.int64)
    logical[0], logical[1] = want // 2, want - want // 2
    ew.sglang_stat_dump(stat, logical, 12.0)
    assert main(["import", "sglang-dump", str(stat), "--out", str(tmp_path / "s.duckdb"), "--top-k", str(K),
                 "--no-progress"]) == 0
    counts, tokens = _stats_counts(tmp_path / "s.duckdb")
    assert np.array_equal(counts, want) and tokens == {layer: n_tokens for layer in MOE}
    # per_pass: physical counts of each pass, per rank
    p2l = _p2l()
    per_pass = tmp_path / "pass"
    per_pass.mkdir()
    for rank in (0, 1):
        records = []
        for pid, (_, ids, experts) in enumerate(d for j, d in enumerate(docs) if j % 2 == rank):
            phys = np.zeros((NUM_LAYERS, p2l.shape[1]), np.int64)
            for li, layer in enumerate(MOE):
                np.add.at(phys[layer], ew.physical_ids(experts[li], p2l, layer).reshape(-1), 1)
            records.append(ew.sglang_per_pass_record(pid, rank, phys))
        ew.sglang_detail_dump(per_pass, rank, records, p2l, 3.0 + rank)
    assert main(["import", "sglang-dump", str(per_pass), "--out", str(tmp_path / "p.duckdb"), "--top-k", str(K),
                 "--no-progress"]) == 0
    counts, tokens = _stats_counts(tmp_path / "p.duckdb")
    assert np.array_equal(counts, want) and tokens == {layer: n_tokens for layer in MOE}


@pytest.mark.parametrize("routing_map", [False, True])
def test_megatron_router_trace(trace_run, tmp_path, routing_map):
    """One step per document, documents split over two ranks; with a routing map the slot order
    is ascending (``RouterTracer._record``: ``routing_map.nonzero()``)."""
    _, docs = trace_run
    for rank in (0, 1):
        records = []
        for step, (_, ids, experts) in enumerate(d for j, d in enumerate(docs) if j % 2 == rank):
            records += ew.megatron_records(rank, step, {layer: experts[li] for li, layer in enumerate(MOE)},
                                           routing_map=routing_map)
        ew.megatron_trace_file(tmp_path, rank, records)
    assert main(["import", "megatron", str(tmp_path), "--out", str(tmp_path / "m.duckdb"), "--num-experts", str(E),
                 "--no-progress"]) == 0
    order = [j for rank in (0, 1) for j in range(len(docs)) if j % 2 == rank]
    _same(tmp_path / "m.duckdb", [docs[j] for j in order], token_ids=False, sort_slots=routing_map)


def test_megatron_micro_batch_rows_are_seq_major(trace_run, tmp_path):
    """Two sequences in one micro-batch: rows are the flattened ``[seq, batch]`` tokens."""
    from moelens import sources

    _, docs = trace_run
    m = min(len(docs[0][1]), len(docs[1][1]))
    a, b = docs[0][2][:, :m], docs[1][2][:, :m]
    per_layer = {layer: np.stack([a[li], b[li]], axis=1).reshape(2 * m, K) for li, layer in enumerate(MOE)}
    ew.megatron_trace_file(tmp_path, 0, ew.megatron_records(0, 0, per_layer, routing_map=False))
    run = sources.read("megatron", [tmp_path], num_experts=E, micro_batch_size=2)
    assert [d.meta["engine"]["sequence"] for d in run.docs] == [0, 1]
    assert np.array_equal(run.docs[0].experts, a) and np.array_equal(run.docs[1].experts, b)


def test_trtllm_statistic_with_and_without_eplb_slots(trace_run, tmp_path):
    _, docs = trace_run
    want = _trace_counts(docs)
    n_tokens = sum(len(ids) for _, ids, _ in docs)
    # two ranks (attention DP), two iterations: each key counts a quarter of the traffic
    per_rank = {r: {(100 + i, layer): (want[layer] // 4 + (want[layer] % 4 > 2 * r + i)).astype(np.int64)
                    for i in (0, 1) for layer in MOE} for r in (0, 1)}
    assert np.array_equal(sum(v[(100 + i, 1)] for v in per_rank.values() for i in (0, 1)), want[1])
    ew.trtllm_statistic(tmp_path / "plain", per_rank, E, K)
    assert main(["import", "trtllm", str(tmp_path / "plain"), "--out", str(tmp_path / "t.duckdb"),
                 "--no-progress"]) == 0
    counts, tokens = _stats_counts(tmp_path / "t.duckdb")
    assert np.array_equal(counts, want) and tokens == {layer: n_tokens for layer in MOE}
    # with the load balancer on, counts are per slot: 10 slots, experts 0 and 3 on two slots each
    assign = {layer: [int(x) for x in _p2l()[layer]] for layer in MOE}
    slot_rank = {}
    for r, stats in per_rank.items():
        slot_rank[r] = {}
        for key, counts_e in stats.items():
            slots = np.zeros(10, np.int64)
            for e in range(E):
                where = [s for s, x in enumerate(assign[key[1]]) if x == e]
                share = np.array_split(np.arange(counts_e[e]), len(where))
                for s, part in zip(where, share):
                    slots[s] = len(part)
            slot_rank[r][key] = slots
    ew.trtllm_statistic(tmp_path / "slots", slot_rank, 10, K)
    ew.trtllm_eplb_config(tmp_path / "eplb.yaml", assign, 10)
    assert main(["import", "trtllm", str(tmp_path / "slots"), "--out", str(tmp_path / "t.duckdb"), "--run-id", "eplb",
                 "--placement", str(tmp_path / "eplb.yaml"), "--num-experts", str(E), "--no-progress"]) == 0
    counts, _ = _stats_counts(tmp_path / "t.duckdb", "eplb")
    assert np.array_equal(counts, want)


def test_documents_file_attaches_labels(trace_run, tmp_path):
    from moelens import sources
    from moelens.store.arrays import load_routing

    _, docs = trace_run
    outputs = [ew.vllm_request_output(f"req-{i}", ids, ex, MOE, NUM_LAYERS, prompt_len=2, last_token=1)
               for i, (_, ids, ex) in enumerate(docs)]
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"request_id": f"req-{i}", "language": "en" if i % 2 else "de",
                                          "topic": f"t{i % 3}"}) + "\n" for i in range(len(docs))))
    sources.write(sources.from_vllm(outputs, num_experts=E), tmp_path / "l.duckdb", documents=labels)
    r = load_routing(str(tmp_path / "l.duckdb"), weights=True)
    assert r.weights is None  # the run has no gate weights
    assert r.documents["language"].to_list() == ["en" if i % 2 else "de" for i in range(len(docs))]
    assert [json.loads(m)["topic"] for m in r.documents["meta"].to_list()] == [f"t{i % 3}" for i in range(len(docs))]
