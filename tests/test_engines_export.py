"""Placements and loads written as the serving engines read them back.

Oracles: each engine's reading code, restated from its source (cited per test), applied to the
files moelens writes; placements built by hand (DeepSeek EPLB fields, contract 4); the greedy
packing worked out by hand and checked against ``moelens.analysis.load``'s independent version.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from moelens.cli import main
from moelens.errors import ConfigError
from moelens.placements import check_placement, greedy_placement, run_load, write_load, write_placement

ew_spec = importlib.util.spec_from_file_location("engine_writers", Path(__file__).with_name("engine_writers.py"))
ew = importlib.util.module_from_spec(ew_spec)
ew_spec.loader.exec_module(ew)


def hand_placement() -> SimpleNamespace:
    """2 MoE layers (decoder layers 1 and 3) x 4 experts on 6 slots, 2 GPUs x 3 slots; layer 1
    replicates expert 2 twice more, layer 3 replicates experts 0 and 1."""
    phy2log = np.array([[2, 0, 2, 1, 3, 2], [0, 1, 2, 3, 0, 1]])
    log2phy = np.array([[[1, -1, -1], [3, -1, -1], [0, 2, 5], [4, -1, -1]],
                        [[0, 4, -1], [1, 5, -1], [2, -1, -1], [3, -1, -1]]])
    logcnt = np.array([[1, 1, 3, 1], [2, 2, 1, 1]])
    return SimpleNamespace(phy2log=phy2log, log2phy=log2phy, logcnt=logcnt, layers=np.array([1, 3]), num_gpus=2,
                           num_nodes=1, num_groups=1)


def test_greedy_placement_by_hand():
    from moelens.analysis.load import balancedness

    counts = np.array([[10, 1, 1, 8], [5, 5, 5, 5]])
    p = greedy_placement(counts, [1, 2], 2)
    # layer 1: 10 -> gpu0, 8 -> gpu1, 1 (expert 1) -> gpu1 (9 < 10), expert 2 -> gpu0 (gpu1 full)
    assert p.phy2log[0].tolist() == [0, 2, 3, 1]
    assert p.phy2log[1].tolist() == [0, 2, 1, 3]  # equal loads: lower gpu first, experts by id
    assert p.logcnt.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]] and p.log2phy.shape == (2, 4, 1)
    loads = [counts[0][p.phy2log[0][:2]].sum(), counts[0][p.phy2log[0][2:]].sum()]
    assert np.mean(loads) / max(loads) == pytest.approx(balancedness(counts[0], 2, "greedy"))
    with pytest.raises(ConfigError, match="do not split evenly"):
        greedy_placement(counts, [1, 2], 3)


def test_placement_checks():
    check_placement(hand_placement(), 4)
    bad = hand_placement()
    bad.phy2log = bad.phy2log.copy()
    bad.phy2log[0, 4] = 2  # expert 3 left without a slot
    with pytest.raises(ConfigError, match="expert 3 has no slot"):
        check_placement(bad, 4)
    bad = hand_placement()
    bad.log2phy = bad.log2phy.copy()
    bad.log2phy[1, 0] = [4, 0, -1][::-1]
    check_placement(bad, 4)  # the order of replicas does not matter
    bad.log2phy[1, 0] = [4, 1, -1]
    with pytest.raises(ConfigError, match="disagrees"):
        check_placement(bad, 4)
    with pytest.raises(ConfigError, match="not a placement"):
        check_placement(SimpleNamespace(phy2log=np.zeros((1, 4), int)), 4)


def _sglang_logical_to_all_physical(p2l: np.ndarray, num_logical: int) -> list[list[list[int]]]:
    """``expert_location.py`` ``_compute_logical_to_all_physical_map`` (its loops, restated)."""
    out = [[[] for _ in range(num_logical)] for _ in range(p2l.shape[0])]
    for layer in range(p2l.shape[0]):
        for phys in range(p2l.shape[1]):
            out[layer][int(p2l[layer, phys])].append(phys)
    return out


def test_sglang_init_expert_location(tmp_path):
    """``compute_initial_expert_location_metadata``: a .json file is ``json.loads``-ed; with
    ``physical_to_logical_map`` it calls ``init_by_mapping(server_args, model_config, **data_dict)``
    (so no other key), one row per decoder layer (``ModelConfigForExpertLocation.num_layers``)."""
    p = hand_placement()
    path = write_placement(p, "sglang", tmp_path / "loc.json", num_experts=4, num_layers=5)
    data = json.loads(path.read_text())
    assert list(data) == ["physical_to_logical_map"]
    p2l = np.array(data["physical_to_logical_map"])
    assert p2l.shape == (5, 6)
    for layer in (0, 2, 4):  # not MoE: the trivial map of init_trivial, arange(P) % E
        assert p2l[layer].tolist() == [0, 1, 2, 3, 0, 1]
    l2p = _sglang_logical_to_all_physical(p2l, 4)
    for li, layer in enumerate(p.layers):
        for e in range(4):
            assert l2p[layer][e] == sorted(x for x in p.log2phy[li, e] if x >= 0)
    counts = np.array([[3, 1, 4, 1], [5, 9, 2, 6]])
    path = write_load([1, 3], counts, "sglang", tmp_path / "count.json", num_layers=5, top_k=2)
    data = json.loads(path.read_text())  # the "logical_count" branch: init_by_eplb(logical_count=...)
    assert list(data) == ["logical_count"]
    assert data["logical_count"] == [[0] * 4, [3, 1, 4, 1], [0] * 4, [5, 9, 2, 6], [0] * 4]


def test_trtllm_eplb_config_and_statistic(tmp_path):
    """``generate_eplb_config.py``: ``initial_global_assignments`` maps each MoE layer to the
    expert of every slot, ``num_slots / ep_size`` successive slots per rank; the load in the
    ``EXPERT_STATISTIC_PATH`` layout is what ``utils.load_expert_statistic`` reads."""
    import yaml

    p = hand_placement()
    data = yaml.safe_load(write_placement(p, "trtllm", tmp_path / "lb.yaml", num_experts=4).read_text())
    assert data == {"num_slots": 6, "layer_updates_per_iter": 0,
                    "initial_global_assignments": {1: [2, 0, 2, 1, 3, 2], 3: [0, 1, 2, 3, 0, 1]}}
    counts = np.array([[3, 1, 4, 1], [5, 9, 2, 6]])
    folder = write_load([1, 3], counts, "trtllm", tmp_path / "stat", num_layers=5, top_k=2)
    meta = json.loads((folder / "meta_info.json").read_text())
    assert meta == {"num_experts": 4, "num_experts_per_token": 2}
    from safetensors.numpy import load_file

    stats = load_file(str(folder / "rank0.safetensors"))
    keys = sorted(tuple(int(x) for x in k.split("_")) for k in stats)  # load_expert_statistic.parse_key
    iters, layers = sorted({i for i, _ in keys}), sorted({layer for _, layer in keys})
    assert iters[-1] + 1 - iters[0] == len(iters) and len(keys) == len(iters) * len(layers)
    assert stats["0_3"].tolist() == [5, 9, 2, 6]


def test_vllm_eplb_state_tensors(tmp_path):
    from safetensors.numpy import load_file

    p = hand_placement()
    tensors = load_file(str(write_placement(p, "vllm", tmp_path / "v.safetensors", num_experts=4)))
    assert tensors["physical_to_logical_map"].tolist() == p.phy2log.tolist()
    assert tensors["logical_to_physical_map"].tolist() == p.log2phy.tolist()
    assert tensors["logical_replica_count"].tolist() == p.logcnt.tolist() and tensors["layers"].tolist() == [1, 3]
    load = load_file(str(write_load([1, 3], np.array([[1, 2, 3, 4], [4, 3, 2, 1]]), "vllm", tmp_path / "l.st",
                                    num_layers=4, top_k=2)))
    assert load["expert_load"].shape == (2, 4)


def test_from_traffic_to_placement_in_one_command(tmp_path):
    """An imported run's load -> a placement file, and the TensorRT-LLM load exported then
    imported again gives the same counts."""
    from moelens import sources

    rng = np.random.default_rng(3)
    outputs = []
    for i in range(10):
        n = 20
        ex = np.stack([np.stack([rng.choice(8, 2, replace=False, p=np.r_[0.4, np.full(7, 0.6 / 7)]) for _ in range(n)])
                       for _ in (1, 2, 3)])
        outputs.append(ew.vllm_request_output(f"r{i}", np.arange(n), ex, [1, 2, 3], 4, prompt_len=5, last_token=0))
    db = tmp_path / "runs.duckdb"
    sources.write(sources.from_vllm(outputs, num_experts=8), db)
    layers, counts, meta = run_load(db)
    assert layers.tolist() == [1, 2, 3] and counts.sum() == 10 * 20 * 2 * 3
    assert main(["export", str(db), "--placement-for", "sglang", "--ep", "4", "--to", str(tmp_path / "p.json")]) == 0
    p2l = np.array(json.loads((tmp_path / "p.json").read_text())["physical_to_logical_map"])
    assert p2l.shape == (4, 8) and all(sorted(row) == list(range(8)) for row in p2l)
    want = greedy_placement(counts, layers, 4)
    assert p2l[1:].tolist() == want.phy2log.tolist()
    assert main(["export", str(db), "--placement-for", "trtllm", "--load-only", "--to", str(tmp_path / "stat")]) == 0
    assert main(["import", "trtllm", str(tmp_path / "stat"), "--out", str(db), "--run-id", "again",
                 "--no-progress"]) == 0
    _, again, _ = run_load(db, "again")
    assert np.array_equal(again, counts)
    assert main(["export", str(db), "--run", "again", "--placement-for", "vllm"]) == 2  # needs --ep
