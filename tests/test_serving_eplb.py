"""EPLB placement: the deepseek-ai/EPLB README oracle, hand-worked packing and replication,
and the three engines' balancedness definitions on hand-computed loads."""

from __future__ import annotations

import numpy as np
import pytest

from moelens.analysis.serving.eplb import (EPPlacement, balanced_packing, contiguous_placement, rebalance_experts,
                                           replicate_experts)
from moelens.analysis.serving.placement import gpu_balance
from moelens.errors import ConfigError

# deepseek-ai/EPLB README.md, "Interface and Example": 2 layers x 12 experts, 16 replicas,
# 4 groups, 2 nodes, 8 GPUs (hierarchical policy) and the printed phy2log.
README_WEIGHT = [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                 [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]]
README_PHY2LOG = [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                  [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]]


def test_eplb_readme_example_exactly():
    plan = rebalance_experts(np.array(README_WEIGHT), num_replicas=16, num_groups=4, num_nodes=2, num_gpus=8)
    assert plan.phy2log.tolist() == README_PHY2LOG
    assert plan.policy == "hierarchical"
    # counts of each logical expert among the 16 slots, read off the README's phy2log
    assert plan.logcnt.tolist() == [np.bincount(row, minlength=12).tolist() for row in README_PHY2LOG]


def test_log2phy_inverts_phy2log():
    rng = np.random.default_rng(0)
    plan = rebalance_experts(rng.random((3, 16)) * 100, num_replicas=24, num_groups=4, num_nodes=2, num_gpus=8)
    for layer in range(3):
        for e in range(16):
            slots = [p for p in plan.log2phy[layer, e] if p >= 0]
            assert len(slots) == plan.logcnt[layer, e]
            assert all(plan.phy2log[layer, p] == e for p in slots)
        assert sorted(p for row in plan.log2phy[layer] for p in row if p >= 0) == list(range(24))


def test_balanced_packing_by_hand():
    # heaviest first onto the lightest pack with room (2 per pack): 5 -> p0, 3 -> p1, 1 -> p1, 1 -> p0
    pack, rank = balanced_packing(np.array([[5, 3, 1, 1]]), 2)
    assert pack.tolist() == [[0, 1, 1, 0]] and rank.tolist() == [[0, 0, 1, 1]]
    # one item per pack: item i -> pack i (eplb.py's shortcut), whatever the weights
    pack, rank = balanced_packing(np.array([[1, 9, 4]]), 3)
    assert pack.tolist() == [[0, 1, 2]] and rank.tolist() == [[0, 0, 0]]


def test_replicate_experts_by_hand():
    # loads [6, 3, 2], 5 slots: copy 1 -> expert 0 (6 per copy); copy 2 -> expert 0 again
    # (3.0 per copy ties expert 1's 3.0: the first maximum wins, as torch.max)
    phy2log, rank, logcnt = replicate_experts(np.array([[6, 3, 2]]), 5)
    assert phy2log.tolist() == [[0, 1, 2, 0, 0]]
    assert rank.tolist() == [[0, 0, 0, 1, 2]]
    assert logcnt.tolist() == [[3, 1, 1]]


def test_global_policy_when_nodes_do_not_divide_groups():
    w = np.array([[10, 1, 1, 1, 1, 1, 1, 1]])
    plan = rebalance_experts(w, num_replicas=12, num_groups=3, num_nodes=2, num_gpus=4)  # 3 % 2 != 0
    assert plan.policy == "global"
    # 4 redundant copies all go to expert 0 (10/2=5, 10/3=3.3, 10/4=2.5, 10/5=2 > 1)
    assert plan.logcnt.tolist() == [[5, 1, 1, 1, 1, 1, 1, 1]]
    # 5 copies of 2.0 and 7 experts of 1.0, 3 slots per GPU, heaviest first onto the lightest GPU:
    # 2,2,2,2 on GPUs 0-3, the fifth 2 on GPU 0 (first of the ties), then 1s onto GPUs 1,2,3,1,2,3
    # and the last 1 onto GPU 0, the only one with room: [5, 4, 4, 4] (17 over 4 GPUs cannot do better)
    assert plan.gpu_loads(w).tolist() == [[5.0, 4.0, 4.0, 4.0]]


def test_gpu_loads_split_an_expert_evenly_over_its_copies():
    plan = EPPlacement(phy2log=np.array([[0, 1, 0, 2]]), log2phy=np.array([[[0, 2], [1, -1], [3, -1]]]),
                       logcnt=np.array([[2, 1, 1]]), layers=np.array([0]), num_gpus=2, num_nodes=1, num_groups=1)
    # expert 0 (load 8) has two copies of 4; GPU 0 = slots 0,1 = 4 + 3; GPU 1 = slots 2,3 = 4 + 5
    assert plan.gpu_loads(np.array([[8, 3, 5]])).tolist() == [[7.0, 9.0]]


def test_contiguous_placement_is_the_default_layout():
    plan = contiguous_placement(1, 8, 4)
    assert plan.gpu_loads(np.array([[1, 2, 3, 4, 5, 6, 7, 8]])).tolist() == [[3.0, 7.0, 11.0, 15.0]]
    with pytest.raises(ConfigError, match="do not split evenly"):
        contiguous_placement(1, 6, 4)


def test_balancedness_definitions_by_hand():
    # two layers x two GPUs, hot GPU alternating
    loads = np.array([[4.0, 2.0], [2.0, 4.0]])
    bal = gpu_balance(loads)
    # SGLang: per layer (mean + 1e-5) / (max + 1e-5)
    assert bal["sglang"].tolist() == pytest.approx([(3 + 1e-5) / (4 + 1e-5)] * 2)
    # vLLM: per-layer mean and max over ranks, each summed over layers: (3 + 3) / (4 + 4)
    assert bal["vllm"] == pytest.approx(0.75)
    # (summing each rank over layers first would give [6, 6] -> 1.0: not the engine's definition)
    # TensorRT-LLM: (max - mean) / mean per layer
    assert bal["trtllm"].tolist() == pytest.approx([1 / 3, 1 / 3])


def test_invalid_layouts_are_one_line_errors():
    w = np.ones((1, 12))
    with pytest.raises(ConfigError, match="multiple of num_gpus"):
        rebalance_experts(w, 14, num_gpus=4)
    with pytest.raises(ConfigError, match="at least the number of experts"):
        rebalance_experts(w, 8, num_gpus=4)
    with pytest.raises(ConfigError, match="groups"):
        rebalance_experts(w, 16, num_groups=5, num_nodes=1, num_gpus=4)


def test_expert_bytes_from_model_configs():
    from moelens.analysis.serving import expert_bytes_from_config

    # moelens-mini (Qwen3-MoE): gated experts, 3 matrices of hidden 192 x moe_intermediate 64, float32
    qwen = {"model_type": "qwen3_moe", "hidden_size": 192, "moe_intermediate_size": 64, "intermediate_size": 768}
    assert expert_bytes_from_config(qwen, "float32") == 3 * 192 * 64 * 4
    # Mixtral-8x7B: intermediate_size 14336, hidden 4096, bf16 -> 352,321,536 bytes per expert
    mixtral = {"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336}
    assert expert_bytes_from_config(mixtral, "bfloat16") == 3 * 4096 * 14336 * 2 == 352_321_536
    # Switch Transformers: two matrices (wi, wo) of d_model x d_ff
    switch = {"model_type": "switch_transformers", "d_model": 768, "d_ff": 3072}
    assert expert_bytes_from_config(switch, "float32") == 2 * 768 * 3072 * 4
    assert expert_bytes_from_config({"hidden_size": 8}, "float32") is None  # no expert width: unknown
