"""Capture inside ``generate()``: phases, positions, token ids and routes of every forward, exact.

The oracle is the test's own hooks: a pre-hook on the model records each call's ``input_ids`` and 2-D
attention mask (generate()'s first call is the prefill, every later one a decode step; a token's
position is the count of real tokens before it: ``cumsum(mask) - 1``, or the running length without
a mask), and pre-hooks on the experts modules record what each MoE layer's experts received. Nothing
of moelens' own step logic (cache length, keyword names) is used to build the expectation, so a
transformers release that renames the cache keyword (5.24: ``cache``) fails here instead of
mislabelling decode steps. Families of conventions A (several scoring rules, a hybrid linear-attention
cache, a looped stack), A+ (a skip class), B (experts called from the block) and C (dense expert input).
"""

from __future__ import annotations

import pytest
import torch

import moelens
from moelens.models.discover import plan_model
from moelens.models.tiny import build_tiny_model

FAMILIES = ["qwen3_moe", "deepseek_v3", "gpt_oss", "lara_mini", "zaya", "dbrx", "llama4"]
SETTINGS = {
    # name: (batch, left padding of row 1, pass an attention mask, sample)
    "batch1-nomask-greedy": (1, 0, False, False),
    "batch1-mask-sampled": (1, 0, True, True),
    "batch2-nomask-greedy": (2, 0, False, False),
    "batch2-leftpad-greedy": (2, 3, True, False),
    "batch2-leftpad-sampled": (2, 2, True, True),
}
NEW_TOKENS = 4


class Oracle:
    """Per model call: ids, mask (or None); per MoE router path: what its experts module received."""

    def __init__(self, model, plan):
        self.calls, self.received, self.handles = [], {}, []
        self.handles.append(model.register_forward_pre_hook(self._call, with_kwargs=True))
        modules = dict(model.named_modules())
        for site in plan.sites:
            parent = site.path.rsplit(".", 1)[0]
            experts = modules[f"{parent}.experts"]
            store = self.received.setdefault(site.path, [])
            if plan.family.convention == "C":  # llama4: the router's input, then the dense expert input
                self.handles.append(modules[site.path].register_forward_pre_hook(
                    lambda m, a, s=store: s.append({"hidden": a[0].detach().clone()})))
                self.handles.append(experts.register_forward_pre_hook(
                    lambda m, a, s=store: s[-1].__setitem__("dense", a[0].detach().clone())))
            else:
                self.handles.append(experts.register_forward_pre_hook(
                    lambda m, a, s=store: s.append({"ids": a[1].detach().clone(), "w": a[2].detach().clone()})))

    def _call(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        self.calls.append((ids.detach().clone(), None if mask is None else mask.detach().clone()))

    def remove(self):
        for h in self.handles:
            h.remove()


def _expected_tokens(calls):
    """[(step, phase, row, pos, token_id, flat_index)] for every real token of every call."""
    out, running = [], 0
    for step, (ids, mask) in enumerate(calls):
        batch, seq = ids.shape
        phase = "prefill" if step == 0 else "decode"
        if mask is not None:
            m = mask.long()
            positions = (m.cumsum(1) - 1)[:, -seq:]
            valid = m[:, -seq:].bool()
        else:
            positions = (torch.arange(seq) + running).expand(batch, seq)
            valid = torch.ones(batch, seq, dtype=torch.bool)
        running += seq
        for b in range(batch):
            for j in range(seq):
                if valid[b, j]:
                    out.append((step, phase, b, int(positions[b, j]), int(ids[b, j]), b * seq + j))
    return out


def _prompt(model, batch, pad, seed):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (batch, 7), generator=gen)
    mask = torch.ones_like(ids)
    if pad:
        ids[1, :pad] = 0
        mask[1, :pad] = 0
    return ids, mask


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("family", FAMILIES)
def test_generate_phases_positions_tokens_and_routes(family, setting):
    batch, pad, with_mask, sample = SETTINGS[setting]
    model = build_tiny_model(family)
    plan = plan_model(model)
    ids, mask = _prompt(model, batch, pad, seed=FAMILIES.index(family))
    kwargs = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": sample,
              "pad_token_id": 0, "eos_token_id": None}
    if with_mask:
        kwargs["attention_mask"] = mask
    if sample:
        torch.manual_seed(5)
    oracle = Oracle(model, plan)
    try:
        with moelens.capture(model) as cap, torch.no_grad():
            out = model.generate(ids, **kwargs)
    finally:
        oracle.remove()
    assert len(oracle.calls) == NEW_TOKENS  # one prefill, then a decode step per new token but the last

    # phases, positions and token ids of every recorded token
    expected = _expected_tokens(oracle.calls)
    tokens = cap.tokens().sort("step", "row", "pos")
    got = list(zip(tokens["step"].to_list(), tokens["phase"].to_list(), tokens["row"].to_list(),
                   tokens["pos"].to_list(), tokens["token_id"].to_list()))
    assert got == [e[:5] for e in sorted(expected)]
    # the decode steps fed exactly the tokens generate() returned
    prompt_len = ids.shape[1]
    for step in range(1, NEW_TOKENS):
        step_ids = tokens.filter(tokens["step"] == step).sort("row")["token_id"].to_list()
        assert step_ids == out[:, prompt_len + step - 1].tolist()

    # routes: per step, layer and real token, what that layer's experts received
    routes = cap.routes()
    k = plan.top_k
    for path, records in oracle.received.items():
        site = next(s for s in plan.sites if s.path == path)
        assert len(records) == NEW_TOKENS
        layer_routes = routes.filter(routes["layer"] == site.layer).sort("step", "row", "pos", "rank")
        got_e = layer_routes["expert"].fill_null(-1).to_numpy().reshape(-1, k)
        got_w = layer_routes["weight"].to_numpy().reshape(-1, k)
        flat = [(e[0], e[5]) for e in sorted(expected)]
        for n, (step, index) in enumerate(flat):
            rec = records[step]
            if "dense" in rec:  # llama4: experts get hidden * score, expert-major [E * T, H]
                tokens_in_call = rec["hidden"].shape[0]
                chosen = torch.from_numpy(got_e[n].copy()).long()
                dense = torch.zeros(site.num_experts)
                dense[chosen] = torch.from_numpy(got_w[n].copy())
                received = rec["dense"].reshape(site.num_experts, tokens_in_call, -1)[:, index]
                assert torch.equal(received, rec["hidden"][index][None] * dense[:, None])
            else:
                want_e = rec["ids"].reshape(-1, k)[index].long()
                want_w = rec["w"].reshape(-1, k)[index]
                # a skip choice reaches the experts as (expert 0, weight 0) and is recorded as -1
                assert torch.equal(torch.from_numpy(got_e[n].copy()).long().clamp(min=0), want_e)
                assert torch.equal(torch.from_numpy(got_w[n].copy()), want_w)


def test_generate_without_a_readable_cache_length_raises_a_typed_error():
    """A call that carries a cache moelens cannot read, and nothing else to count with, is an error
    that names the transformers version, never a silent 'prefill' at position 0."""
    import transformers

    from moelens.errors import CaptureError
    from moelens.hooks.attach import step_context

    class OpaqueCache:
        def get_seq_length(self):
            raise NotImplementedError

    ids = torch.ones(1, 1, dtype=torch.long)
    with pytest.raises(CaptureError, match=f"transformers {transformers.__version__}"):
        step_context(0, "model", {"input_ids": ids, "cache": OpaqueCache()})
    # the same call with any readable source is fine, whatever the keyword of the cache
    assert step_context(0, "model", {"input_ids": ids, "cache": OpaqueCache(),
                                     "attention_mask": torch.ones(1, 6, dtype=torch.long)}).past == 5
    assert step_context(0, "model", {"input_ids": ids, "cache_position": torch.tensor([9])}).past == 9
    assert step_context(0, "model", {"input_ids": ids}).past == 0
