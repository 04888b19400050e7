"""select_experts_torch reproduces the real transformers routers, one family per scoring rule.

Each router module is built directly from its transformers class with a tiny config, given
random weights (and random selection biases where the family has them), and run in eval mode.
Some routers use ``topk(sorted=False)``, so ids are compared as sets per token and weights
paired with their ids.
"""

from __future__ import annotations

import pytest
import torch

from moelens.kernels import select_experts_torch

transformers = pytest.importorskip("transformers")

H, T = 32, 64


def _paired(ids: torch.Tensor, weights: torch.Tensor):
    order = ids.argsort(dim=-1)
    return ids.gather(1, order), weights.float().gather(1, order)


def _assert_same_routing(model_out, ours):
    _, model_w, model_ids = model_out[:3]
    ids, w = _paired(model_ids, model_w)
    our_ids, our_w = _paired(*ours)
    assert torch.equal(ids, our_ids)
    torch.testing.assert_close(our_w, w, atol=1e-6, rtol=1e-5)


def _init(router, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in router.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return router.eval(), torch.randn(T, H, generator=g), g


@pytest.mark.parametrize("norm", [True, False])
def test_qwen3_moe_is_softmax_topk(norm):
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeTopKRouter

    config = Qwen3MoeConfig(hidden_size=H, num_experts=60, num_experts_per_tok=8, norm_topk_prob=norm)
    router, h, _ = _init(Qwen3MoeTopKRouter(config), seed=1)
    with torch.no_grad():
        out = router(h)
    _assert_same_routing(out, select_experts_torch(out[0], 8, "softmax_topk", renormalize=norm))


def test_mixtral_is_softmax_topk_renormalised():
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralTopKRouter

    config = MixtralConfig(hidden_size=H, num_local_experts=8, num_experts_per_tok=2)
    router, h, _ = _init(MixtralTopKRouter(config), seed=2)
    with torch.no_grad():
        out = router(h)
    _assert_same_routing(out, select_experts_torch(out[0], 2, "softmax_topk"))


def test_gpt_oss_is_topk_softmax():
    from transformers import GptOssConfig
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssTopKRouter

    config = GptOssConfig(hidden_size=H, num_local_experts=32, num_experts_per_tok=4)
    router, h, _ = _init(GptOssTopKRouter(config), seed=3)
    with torch.no_grad():
        out = router(h)
    _assert_same_routing(out, select_experts_torch(out[0], 4, "topk_softmax"))


def test_lfm2_moe_is_sigmoid_bias():
    from transformers import Lfm2MoeConfig
    from transformers.models.lfm2_moe.modeling_lfm2_moe import Lfm2MoeTopKRouter

    config = Lfm2MoeConfig(hidden_size=H, num_experts=32, num_experts_per_tok=4, norm_topk_prob=True,
                           use_expert_bias=True, routed_scaling_factor=2.5)  # fmt: skip
    router, h, g = _init(Lfm2MoeTopKRouter(config), seed=4)
    bias = torch.randn(32, generator=g) * 0.2
    with torch.no_grad():
        out = router(h, bias)
    ours = select_experts_torch(out[0], 4, "sigmoid_bias", bias=bias, eps=1e-6, scaling_factor=2.5)
    _assert_same_routing(out, ours)
    plain = select_experts_torch(out[0], 4, "sigmoid_bias", eps=1e-6, scaling_factor=2.5)
    assert not torch.equal(plain.ids.sort(-1).values, ours.ids.sort(-1).values)  # the bias mattered


def test_minimax_m2_is_sigmoid_bias():
    from transformers import MiniMaxM2Config
    from transformers.models.minimax_m2.modeling_minimax_m2 import MiniMaxM2TopKRouter

    config = MiniMaxM2Config(hidden_size=H, num_local_experts=16, num_experts_per_tok=2)
    router, h, g = _init(MiniMaxM2TopKRouter(config), seed=5)
    bias = torch.randn(16, generator=g) * 0.2
    with torch.no_grad():
        out = router(h, bias)
    _assert_same_routing(out, select_experts_torch(out[0], 2, "sigmoid_bias", bias=bias))


def test_deepseek_v3_is_group_limited():
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter

    config = DeepseekV3Config(hidden_size=H, n_routed_experts=64, num_experts_per_tok=6, n_group=8,
                              topk_group=3, norm_topk_prob=True, routed_scaling_factor=2.5)  # fmt: skip
    router = DeepseekV3TopkRouter(config)
    router, h, g = _init(router, seed=6)
    router.e_score_correction_bias.copy_(torch.randn(64, generator=g) * 0.2)
    with torch.no_grad():
        out = router(h)
    options = dict(bias=router.e_score_correction_bias, n_group=8, topk_group=3, scaling_factor=2.5, eps=1e-20)
    ours = select_experts_torch(out[0], 6, "deepseek_v3", **options)
    _assert_same_routing(out, ours)
    ungrouped = select_experts_torch(out[0], 6, "sigmoid_bias", bias=options["bias"], scaling_factor=2.5)
    assert not torch.equal(ungrouped.ids.sort(-1).values, ours.ids.sort(-1).values)  # groups mattered
