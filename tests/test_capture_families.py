"""Capture is exact on every MoE family of the family table (transformers 5.23 and 5.24).

For each family a tiny random model (routers and selection biases randomised so that
biased, grouped and hashed selection differs from a plain top-k) is run with moelens' hooks, and
the captured expert ids and gate weights are compared, bit for bit in fp32, with what each MoE
layer's experts actually received - read by separate oracle hooks on the experts modules (or the
family's own dispatch record: capacity masks, sorted dispatch, product-key embeddings).
"""

from __future__ import annotations

import pytest
import torch

from moelens.hooks import attach
from moelens.models.discover import plan_model
from moelens.models.tiny import TINY_FAMILIES, build_tiny_model, tiny_inputs


class ListSink:
    def __init__(self):
        self.steps, self.events = [], []

    def on_step(self, ctx):
        self.steps.append(ctx)

    def on_route(self, event):
        self.events.append(event)


def _parent(path):
    return path.rsplit(".", 1)[0]


def _dense(ids, weights, num_experts):
    """[T, E] matrix of weights at the chosen (kept) experts."""
    out = torch.zeros(ids.shape[0], num_experts, dtype=weights.dtype)
    keep = ids >= 0
    rows = torch.arange(ids.shape[0])[:, None].expand_as(ids)
    out[rows[keep], ids[keep]] = weights[keep]
    return out


class Oracle:
    """Hooks that record what each site's experts received, independently of moelens' adapters."""

    def __init__(self, model, plan):
        self.model, self.plan = model, plan
        # one record per router module: a looped layer's router runs once per pass
        sites = {s.path: s for s in plan.sites}
        self.records = {path: [] for path in sites}
        self.handles = []
        modules = dict(model.named_modules())
        conv = plan.family.convention
        for site in sites.values():
            parent = _parent(site.path)
            rec = self.records[site.path]
            if conv in ("A", "A+", "B", "E"):
                target = modules[f"{parent}.experts"]
                self.handles.append(target.register_forward_pre_hook(
                    lambda m, args, rec=rec: rec.append(("experts", tuple(a.detach().clone() for a in args)))))
            elif conv == "C":
                router = modules[site.path]
                experts = modules[f"{parent}.experts"]
                self.handles.append(router.register_forward_pre_hook(
                    lambda m, args, rec=rec: rec.append(("router_in", args[0].detach().clone()))))
                self.handles.append(experts.register_forward_pre_hook(
                    lambda m, args, rec=rec: rec.append(("experts", args[0].detach().clone()))))
            elif conv == "D":
                router = modules[site.path]
                linear = modules[f"{parent}.input_linear"]
                self.handles.append(router.register_forward_pre_hook(
                    lambda m, args, rec=rec: rec.append(("router_in", args[0].detach().clone()))))
                self.handles.append(linear.register_forward_pre_hook(
                    lambda m, args, rec=rec: rec.append(("dispatch", args[0].detach().clone(), list(args[1])))))
            elif conv == "F":
                block = modules[site.path]
                self.handles.append(modules[f"{site.path}.down_embed"].register_forward_pre_hook(
                    lambda m, args, rec=rec: rec.append(("ids", args[0].detach().clone()))))
                self.handles.append(block.register_forward_hook(
                    lambda m, args, out, rec=rec: rec.append(("block", args[0].detach().clone(),
                                                             out[0].detach().clone()))))

    def remove(self):
        for h in self.handles:
            h.remove()


def _routed(model) -> int:
    return int(model.config.n_routed_experts)


def _check_site(plan, site, events, records, model):
    family = plan.family.family
    conv = plan.family.convention
    modules = dict(model.named_modules())
    assert len(events) >= 1
    if conv in ("A", "A+", "B"):
        received = [r[1] for r in records if r[0] == "experts"]
        assert len(received) == len(events)
        for ev, args in zip(events, received):
            ids, weights = args[1].reshape(ev.experts.shape).long(), args[2].reshape(ev.weights.shape)
            if family == "zaya":
                skipped = ev.experts == -1
                # the router masks a skip choice to (expert 0, weight 0) before the experts see it
                assert torch.all(ids[skipped] == 0) and torch.all(weights[skipped] == 0)
                assert torch.equal(ev.experts[~skipped], ids[~skipped])
            elif family == "longcat_flash" and bool((ev.experts >= _routed(model)).any()):
                routed, zero_count = _routed(model), int(model.config.zero_expert_num)
                zero = ev.experts >= routed
                assert torch.equal(ev.experts[~zero], ids[~zero]), f"{site.path}: ids differ"
                assert torch.equal(ev.weights[~zero], weights[~zero]), f"{site.path}: weights differ"
                # transformers <= 5.24 hands identity-expert ids to the experts module; 5.25
                # (LongcatFlashMoE.forward) sends them to a dummy routed id with weight 0 and adds the
                # identity output beside the experts call. The router's decision is what is recorded.
                handed = torch.equal(ev.experts[zero], ids[zero]) and torch.equal(ev.weights[zero], weights[zero])
                dummy = (torch.equal(ids[zero], (ev.experts[zero] - routed) * routed // zero_count)
                         and bool(torch.all(weights[zero] == 0)))
                assert handed or dummy, f"{site.path}: identity experts differ"
                continue
            else:
                assert torch.equal(ev.experts, ids), f"{site.path}: ids differ"
            assert torch.equal(ev.weights, weights), f"{site.path}: weights differ"
    elif conv == "C":
        router_in = [r[1] for r in records if r[0] == "router_in"]
        routed_in = [r[1] for r in records if r[0] == "experts"]
        for ev, hidden, received in zip(events, router_in, routed_in):
            dense = _dense(ev.experts, ev.weights, site.num_experts)
            expected = hidden.repeat(site.num_experts, 1) * dense.transpose(0, 1).reshape(-1, 1)
            assert torch.equal(received, expected), f"{site.path}: dense expert input differs"
            assert torch.all(ev.experts >= 0)
    elif conv == "D":
        router_in = [r[1] for r in records if r[0] == "router_in"]
        dispatch = [r for r in records if r[0] == "dispatch"]
        assert len(dispatch) == len(events)
        for ev, hidden, (_, inputs, sizes) in zip(events, router_in, dispatch):
            counts = torch.bincount(ev.experts.reshape(-1), minlength=site.num_experts)
            assert counts.tolist() == sizes
            start = 0
            for e, size in enumerate(sizes):
                tokens = (ev.experts == e).any(dim=1).nonzero()[:, 0]
                got = inputs[start:start + size]
                start += size
                want = hidden[tokens]
                assert torch.equal(got[got[:, 0].argsort()], want[want[:, 0].argsort()])
            # weights: the S2 rule re-implemented on the captured logits (softmax over the top-k logits)
            values, order = ev.logits.float().topk(ev.experts.shape[1], dim=1)
            expected_w = torch.softmax(values, dim=1).to(ev.weights.dtype)
            assert torch.equal(order, ev.experts)
            assert torch.equal(expected_w, ev.weights)
    elif conv == "E":
        received = [r[1] for r in records if r[0] == "experts"]
        for ev, args in zip(events, received):
            dense = _dense(ev.experts, ev.weights, site.num_experts)
            if family == "switch_transformers":
                mask, probs = args[1].reshape(-1, site.num_experts), args[2].reshape(-1, 1)
                expected = mask.to(probs.dtype) * probs
                assert torch.equal((ev.experts[:, 0] >= 0), mask.sum(1) > 0)
            else:  # nllb: the experts get the post-capacity top-1 mask and the combine weights
                top1, combine = args[1].reshape(-1, site.num_experts), args[2].reshape(-1, site.num_experts)
                expected = combine
                kept1 = top1.sum(1) > 0
                assert torch.equal(ev.experts[kept1, 0], top1[kept1].argmax(1))
                assert torch.all(ev.experts[~kept1, 0] == -1)
            assert torch.equal(dense, expected), f"{site.path}: dispatch differs"
    elif conv == "F":
        ids = [r[1] for r in records if r[0] == "ids"]
        blocks = [r for r in records if r[0] == "block"]
        block = modules[site.path]
        for ev, got_ids, (_, hidden, output) in zip(events, ids, blocks):
            assert torch.equal(ev.experts, got_ids.reshape(ev.experts.shape).long())
            # replay the block with the captured ids and weights: it must give the block's output
            bsz, seq, _ = hidden.shape
            down, up = block.down_embed(ev.experts), block.up_embed(ev.experts)
            mixed = torch.matmul(down, hidden.view(bsz * seq, -1, 1)).view(bsz * seq, -1)
            mixed = block.act_fn(mixed) * ev.weights
            states = torch.matmul(mixed.view(bsz * seq, 1, -1), up).view(bsz, seq, -1)
            dense = block.down_proj(block.act_fn(block.gate_proj(hidden)) * block.up_proj(hidden))
            assert torch.equal(dense + states, output)


def _main_output(out):
    return out.logits if getattr(out, "logits", None) is not None else out[0]


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_capture_is_exact_invisible_and_leaves_no_hook(family):
    model = build_tiny_model(family)
    inputs = tiny_inputs(family, model)
    plan = plan_model(model)
    before = _hook_count(model)
    with torch.no_grad():
        plain = _main_output(model(**inputs))
    oracle = Oracle(model, plan)
    sink = ListSink()
    try:
        with attach(model, plan, sink, logits=True), torch.no_grad():
            hooked = _main_output(model(**inputs))
    finally:
        oracle.remove()
    with torch.no_grad():
        again = _main_output(model(**inputs))
    # a capture never changes the model's output and leaves no hook behind
    assert torch.equal(plain, hooked)
    assert torch.equal(plain, again)
    assert _hook_count(model) == before

    fired = {e.site for e in sink.events}
    # every primary router fires; secondary ones may idle (ernie-vl's vision router on text input)
    assert {s.site for s in plan.sites if s.primary} <= fired
    for path, sites in plan.sites_by_path().items():
        events = [e for e in sink.events if plan.sites[e.site].path == path]
        if not events:
            continue
        # each call of a router is recorded under the site of its pass, in call order
        assert [plan.sites[e.site].loop_pass for e in events] == [s.loop_pass for s in sites]
        _check_site(plan, sites[0], events, oracle.records[path], model)
        for ev in events:
            assert ev.experts.shape[1] == sites[0].top_k
            assert ev.experts.max() < sites[0].num_experts


@pytest.mark.parametrize("family", ["mixtral", "qwen3_moe", "deepseek_v3", "gpt_oss"])
def test_verify_mode_detects_routing_changed_after_the_router(family):
    from moelens.errors import CaptureError

    model = build_tiny_model(family)
    inputs = tiny_inputs(family, model)
    plan = plan_model(model)
    with attach(model, plan, ListSink(), verify=True), torch.no_grad():
        model(**inputs)  # exact capture: no complaint
    experts = model.get_submodule(_parent(plan.sites[-1].path) + ".experts")
    # something between router and experts rewrites the weights (as a future transformers might)
    tamper = experts.register_forward_pre_hook(lambda m, args: (args[0], args[1], args[2].flip(-1)))
    try:
        with pytest.raises(CaptureError, match="differs from what its experts received"):
            with attach(model, plan, ListSink(), verify=True), torch.no_grad():
                model(**inputs)
    finally:
        tamper.remove()
