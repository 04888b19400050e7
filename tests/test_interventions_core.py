"""moelens.intervene against models the tests build themselves.

Oracles: a router replaced by a hook of the test's own that recomputes the family's selection from
masked logits (the kernels' reference rules, or the family's rule written out here), the experts
module called by hand with forced ids, a copy of the model with averaged expert weights, and the
routes captured inside the intervention.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import polars as pl  # noqa: E402

import moelens  # noqa: E402
from moelens.errors import InterventionError  # noqa: E402
from moelens.interventions import intervene  # noqa: E402
from moelens.kernels.select_torch import select_experts_torch  # noqa: E402
from moelens.models.discover import plan_model  # noqa: E402
from moelens.models.families import FAMILIES  # noqa: E402
from moelens.models.tiny import build_tiny_model, family_available, tiny_inputs  # noqa: E402

A_FAMILIES = [f for f, row in FAMILIES.items() if row.convention in ("A", "A+", "B", "C", "D")]  # router logits


def _run(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state  # text towers


def _routes(model, inputs) -> pl.DataFrame:
    with torch.no_grad(), moelens.capture(model) as cap:
        model(**inputs)
    return cap.routes()


def _most_used(routes: pl.DataFrame, layer: int) -> int:
    counts = routes.filter(pl.col("layer") == layer)["expert"].drop_nulls().value_counts(sort=True)
    return int(counts["expert"][0])


def _no_trace_left(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and "forward" not in m.__dict__
               for m in model.modules())


@pytest.mark.families
@pytest.mark.parametrize("family", A_FAMILIES)
def test_an_ablated_expert_is_never_chosen_and_everything_is_restored(family):
    if not family_available(family):
        pytest.skip(f"{family} is not in the installed transformers")
    model = build_tiny_model(family)
    inputs = tiny_inputs(family, model)
    base = _run(model, inputs)
    before = _routes(model, inputs)
    layer = min(s.layer for s in plan_model(model).sites if s.primary and not _hashed(model, s.path))
    expert = _most_used(before, layer)
    with intervene(model, ablate={layer: [expert]}):
        after = _routes(model, inputs)
        changed = _run(model, inputs)
    chosen = after.filter((pl.col("layer") == layer) & (pl.col("expert") == expert)).height
    assert chosen == 0
    assert not torch.equal(changed, base)  # its tokens went elsewhere
    # other layers before the ablated one route as before
    same = before.filter(pl.col("layer") < layer).equals(after.filter(pl.col("layer") < layer))
    assert same
    assert torch.equal(_run(model, inputs), base) and _no_trace_left(model)


def _hashed(model, path: str) -> bool:
    """deepseek_v4's first layers take their ids from a token-id table (tid2eid), not from the logits."""
    return hasattr(model.get_submodule(path), "tid2eid")


def test_a_hash_routed_layer_refuses_ablation_in_one_line():
    model = build_tiny_model("deepseek_v4")
    inputs = tiny_inputs("deepseek_v4", model)
    hashed = [s for s in plan_model(model).sites if _hashed(model, s.path)]
    assert hashed
    used = _most_used(_routes(model, inputs), hashed[0].layer)
    with pytest.raises(InterventionError, match="hash-routed"):
        with intervene(model, ablate={hashed[0].layer: [used]}):
            _run(model, inputs)
    assert _no_trace_left(model)


def _oracle_hook(rule_fn):
    def hook(module, args, output):
        hidden = args[0].reshape(-1, args[0].shape[-1])
        logits, weights, ids = rule_fn(module, hidden, *args[1:])
        return (logits, weights.to(output[1].dtype), ids)
    return hook


def _masked_logits(module, hidden, expert, bias=None):
    logits = torch.nn.functional.linear(hidden.float(), module.weight.float(),
                                        None if bias is None else bias.float())
    logits[:, expert] = float("-inf")
    return logits


def _s1(expert):  # qwen3_moe: softmax -> top-k -> renorm (norm_topk_prob)
    def rule(module, hidden):
        logits = _masked_logits(module, hidden, expert)
        sel = select_experts_torch(logits, module.top_k, "softmax_topk", renormalize=module.norm_topk_prob)
        return logits, sel.weights, sel.ids
    return rule


def _s2(expert):  # gpt_oss: top-k on biased logits -> softmax over the k
    def rule(module, hidden):
        logits = _masked_logits(module, hidden, expert, module.bias)
        sel = select_experts_torch(logits, module.top_k, "topk_softmax")
        return logits, sel.weights, sel.ids
    return rule


def _s3(expert):  # minimax_m2: sigmoid + selection bias (the block passes it in) -> top-k -> gather -> renorm
    def rule(module, hidden, block_bias):
        logits = _masked_logits(module, hidden, expert)
        bias = block_bias.clone()
        bias[expert] = float("-inf")
        sel = select_experts_torch(logits, module.top_k, "sigmoid_bias", bias=bias, renormalize=True)
        return logits, sel.weights, sel.ids
    return rule


def _s4(expert):  # deepseek_v3: sigmoid + bias, group-limited, renorm(+1e-20), x routed_scaling_factor
    def rule(module, hidden):
        logits = _masked_logits(module, hidden, expert)
        bias = module.e_score_correction_bias.clone()
        bias[expert] = float("-inf")
        sel = select_experts_torch(logits, module.top_k, "deepseek_v3", bias=bias, n_group=module.num_group,
                                   topk_group=module.topk_group, renormalize=module.norm_topk_prob,
                                   scaling_factor=module.routed_scaling_factor, eps=1e-20)
        return logits, sel.weights, sel.ids
    return rule


def _s6(expert):  # ernie4_5_moe, written out: softmax; top-k of (p + bias); gather p; / clamp(sum, norm_min)
    def rule(module, hidden):
        logits = _masked_logits(module, hidden, expert)
        probs = torch.softmax(logits, dim=1)
        bias = module.moe_statics.e_score_correction_bias.squeeze().clone()
        bias[expert] = float("-inf")
        ids = torch.topk(probs + bias, module.top_k, dim=-1).indices
        weights = probs.gather(1, ids)
        return logits, weights / torch.clamp(weights.sum(-1, keepdim=True), min=module.norm_min), ids
    return rule


ORACLES = {"qwen3_moe": _s1, "gpt_oss": _s2, "minimax_m2": _s3, "deepseek_v3": _s4, "ernie4_5_moe": _s6}


@pytest.mark.parametrize("family", sorted(ORACLES))
def test_ablation_equals_the_tests_own_router(family):
    model = build_tiny_model(family)
    inputs = tiny_inputs(family, model)
    routes = _routes(model, inputs)
    plan = plan_model(model)
    site = min((s for s in plan.sites if s.primary), key=lambda s: s.layer)
    expert = _most_used(routes, site.layer)
    with intervene(model, ablate={site.layer: [expert]}):
        ablated = _run(model, inputs)
    oracle = copy.deepcopy(model)
    router = oracle.get_submodule(site.path)
    router.register_forward_hook(_oracle_hook(ORACLES[family](expert)))
    expected = _run(oracle, inputs)
    assert not torch.allclose(expected, _run(model, inputs))  # the ablation matters on these tokens
    torch.testing.assert_close(ablated, expected, rtol=1e-5, atol=1e-5)


def test_empty_intervention_changes_no_logit():
    model = build_tiny_model("qwen3_moe")
    inputs = tiny_inputs("qwen3_moe", model)
    base = _run(model, inputs)
    with intervene(model) as iv:
        assert torch.equal(_run(model, inputs), base)
    assert iv.describe() == "none" and iv.spec == {}


def test_ablating_an_expert_no_token_chose_changes_nothing():
    model = build_tiny_model("gpt_oss")
    inputs = tiny_inputs("gpt_oss", model)
    site = min(plan_model(model).sites, key=lambda s: s.layer)
    with torch.no_grad():
        model.get_submodule(site.path).bias[3] = -1e4  # planted: expert 3 never wins
    routes = _routes(model, inputs)
    assert routes.filter((pl.col("layer") == site.layer) & (pl.col("expert") == 3)).height == 0
    base = _run(model, inputs)
    with intervene(model, ablate={site.layer: [3]}):
        assert torch.equal(_run(model, inputs), base)
    with intervene(model, ablate={site.layer: [_most_used(routes, site.layer)]}):
        assert not torch.equal(_run(model, inputs), base)


def _experts_call(model, path):
    calls = []
    handle = model.get_submodule(path).register_forward_pre_hook(
        lambda m, args: calls.append(tuple(a.detach().clone() for a in args)))
    return calls, handle


@pytest.mark.parametrize("family", ["qwen3_moe", "deepseek_v3"])
def test_forced_routing_equals_the_experts_called_by_hand(family):
    model = build_tiny_model(family)
    inputs = tiny_inputs(family, model)
    plan = plan_model(model)
    site = min((s for s in plan.sites if s.primary), key=lambda s: s.layer)
    experts_path = plan.experts_paths[site.path]
    where = torch.zeros_like(inputs["input_ids"], dtype=torch.bool)
    where[:, ::3] = True
    calls, handle = _experts_call(model, experts_path)
    try:
        with torch.no_grad():
            model(**inputs)
        with intervene(model, force={site.layer: [1]}, where=where):
            with torch.no_grad():
                model(**inputs)
    finally:
        handle.remove()
    (hidden, ids, weights), (hidden_f, ids_f, weights_f) = calls[0], calls[1]
    assert torch.equal(hidden, hidden_f)
    flat = where.reshape(-1)
    # by hand: forced tokens start with expert 1, then their own choices other than 1; slot weights kept
    for t in range(ids.shape[0]):
        if flat[t]:
            own = [int(e) for e in ids[t] if int(e) != 1]
            assert ids_f[t].tolist() == [1] + own[: ids.shape[1] - 1]
        else:
            assert torch.equal(ids_f[t], ids[t])
    assert torch.equal(weights_f, weights)
    experts = model.get_submodule(experts_path)
    with torch.no_grad():
        torch.testing.assert_close(experts(hidden, ids_f, weights_f), experts(hidden_f, ids_f, weights_f))


def test_scale_multiplies_the_gate_weight_the_experts_receive():
    model = build_tiny_model("qwen3_moe")
    inputs = tiny_inputs("qwen3_moe", model)
    plan = plan_model(model)
    site = min(plan.sites, key=lambda s: s.layer)
    calls, handle = _experts_call(model, plan.experts_paths[site.path])
    try:
        with torch.no_grad():
            model(**inputs)
        with intervene(model, scale={site.layer: {2: 0.5}}), torch.no_grad():
            model(**inputs)
    finally:
        handle.remove()
    (_, ids, weights), (_, ids_s, weights_s) = calls
    assert torch.equal(ids, ids_s)
    expected = torch.where(ids == 2, weights * 0.5, weights)
    assert torch.equal(weights_s, expected) and bool((ids == 2).any())


@pytest.mark.parametrize("family", ["qwen3_moe", "mixtral", "deepseek_v3"])
def test_merge_equals_a_copy_with_averaged_weights(family):
    model = build_tiny_model(family)
    inputs = tiny_inputs(family, model)
    plan = plan_model(model)
    site = min(plan.sites, key=lambda s: s.layer)
    experts_path = plan.experts_paths[site.path]
    base = _run(model, inputs)
    usage = {0: 30.0, 1: 10.0}
    with intervene(model, merge={site.layer: [(0, 1)]}, usage={site.layer: usage}):
        merged = _run(model, inputs)
    copy_ = copy.deepcopy(model)
    experts = copy_.get_submodule(experts_path)
    with torch.no_grad():
        for name in ("gate_up_proj", "down_proj"):
            p = getattr(experts, name)
            avg = 0.75 * p[0] + 0.25 * p[1]
            p[0], p[1] = avg, avg
    torch.testing.assert_close(merged, _run(copy_, inputs), rtol=1e-5, atol=1e-6)
    assert torch.equal(_run(model, inputs), base)


def test_hooks_and_weights_are_restored_after_an_error():
    model = build_tiny_model("qwen3_moe")
    inputs = tiny_inputs("qwen3_moe", model)
    base = _run(model, inputs)
    layer = min(s.layer for s in plan_model(model).sites)
    with pytest.raises(RuntimeError):
        with intervene(model, ablate={layer: [0]}, merge={layer: [(1, 2)]}, scale={layer: {3: 2.0}}):
            raise RuntimeError("inside")
    assert torch.equal(_run(model, inputs), base) and _no_trace_left(model)


@pytest.mark.parametrize("kwargs, words", [
    ({"ablate": {99: [0]}}, "has no router"),
    ({"ablate": {"L": [99]}}, "out of range"),
    ({"force": {"L": [0]}}, "where="),
    ({"merge": {"L": [(1, 1)]}}, "with itself"),
    ({"ablate": {"L": list(range(8))}}, "fewer than k"),
])
def test_bad_interventions_are_one_line_errors(kwargs, words):
    model = build_tiny_model("qwen3_moe")
    layer = min(s.layer for s in plan_model(model).sites)
    kwargs = {k: {(layer if lk == "L" else lk): v for lk, v in val.items()} for k, val in kwargs.items()}
    with pytest.raises(InterventionError) as caught:
        intervene(model, **kwargs)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_force_and_scale_are_refused_where_the_router_output_has_another_form():
    model = build_tiny_model("dbrx")
    layer = min(s.layer for s in plan_model(model).sites)
    with pytest.raises(InterventionError, match="convention B"):
        intervene(model, scale={layer: {0: 2.0}})


@pytest.mark.parametrize("family", ["qwen3_moe", "minimax_m2"])
def test_exported_pruned_model_loads_and_equals_the_open_prune(family, tmp_path):
    from transformers import AutoModelForCausalLM

    model = build_tiny_model(family)
    inputs = tiny_inputs(family, model)
    plan = plan_model(model)
    prune = {layer: [1, 4] for layer in plan.moe_layers}
    with intervene(model, prune=prune) as iv:
        expected = _run(model, inputs)
        iv.export(tmp_path / "pruned")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    site = min(plan.sites, key=lambda s: s.layer)
    assert plan_model(loaded).sites[0].num_experts == site.num_experts - 2
    torch.testing.assert_close(_run(loaded, inputs), expected, rtol=1e-5, atol=1e-5)


def test_exported_merged_model_loads_and_equals_the_open_merge(tmp_path):
    from transformers import AutoModelForCausalLM

    model = build_tiny_model("qwen3_moe")
    inputs = tiny_inputs("qwen3_moe", model)
    layer = min(plan_model(model).moe_layers)
    with intervene(model, merge={layer: [(0, 1), (2, 3)]}) as iv:
        expected = _run(model, inputs)
        iv.export(tmp_path / "merged")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    torch.testing.assert_close(_run(loaded, inputs), expected, rtol=0, atol=0)
    with pytest.raises(InterventionError, match="only prune and merge"):
        with intervene(model, ablate={layer: [0]}) as iv:
            iv.export(tmp_path / "no")
    with pytest.raises(InterventionError, match="same number"):
        with intervene(model, prune={layer: [0]}) as iv:
            iv.export(tmp_path / "no")
