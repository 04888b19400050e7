"""Day-one capture of families the table does not know: the generic adapter found by structure.

Known convention-A families with their table rows hidden, and a model class of this test's own that
no table knows, are captured bit for bit (oracle: what each experts module received, read by this
test's own hooks), with a one-line warning naming the family and verification switched on; a
planted change between router and experts is an error, not a wrong row; a model that fits no
convention keeps the clear error.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import moelens
from moelens.errors import CaptureError, GenericAdapterWarning, UnknownArchitectureError
from moelens.models import families
from moelens.models.discover import plan_model
from moelens.models.tiny import build_tiny_model, tiny_inputs

HIDDEN = ["qwen3_moe", "deepseek_v3", "gpt_oss", "olmoe", "lara_mini", "hy_v4"]


def _hide(monkeypatch, family):
    """Remove ``family`` from the table for one test; afterwards the table is back in its own order
    (deleting and re-adding a key would move it to the end, and the README lists the table in order)."""
    for table in (families.FAMILIES, families._BY_ROUTER_CLASS):
        saved = dict(table)

        def restore(table=table, saved=saved):
            table.clear()
            table.update(saved)
        _UNDO.append(restore)
    row = families.FAMILIES.pop(family)
    for cls in row.routers:
        families._BY_ROUTER_CLASS.pop(cls)


_UNDO: list = []


@pytest.fixture(autouse=True)
def _restore_tables():
    yield
    while _UNDO:
        _UNDO.pop()()


def _experts_inputs(model):
    """Experts module path -> list of (ids, weights) it received, by this test's own pre-hooks."""
    got, handles = {}, []
    for name, module in model.named_modules():
        if name.endswith(".experts"):
            rec = got.setdefault(name, [])
            handles.append(module.register_forward_pre_hook(
                lambda m, a, r=rec: r.append((a[1].detach().clone(), a[2].detach().clone()))))
    return got, handles


@pytest.mark.parametrize("family", HIDDEN)
def test_hidden_table_entry_is_captured_exactly_by_structure(family, monkeypatch):
    model = build_tiny_model(family)
    inputs = tiny_inputs(family, model)
    known = plan_model(model)
    _hide(monkeypatch, family)
    with pytest.warns(GenericAdapterWarning) as record:
        plan = plan_model(model)
    message = str(record[0].message)
    assert "\n" not in message and repr(model.config.model_type) in message
    assert plan.generic and plan.family.convention == "A"
    # the same sites the table finds: paths, layers, E and k
    assert [(s.path, s.layer, s.num_experts, s.top_k) for s in plan.sites] == \
        [(s.path, s.layer, s.num_experts, s.top_k) for s in known.sites if s.primary]

    with torch.no_grad():
        plain = model(**inputs).logits
    received, handles = _experts_inputs(model)
    try:
        with pytest.warns(GenericAdapterWarning), moelens.capture(model) as cap, torch.no_grad():
            hooked = model(**inputs).logits
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(plain, hooked)
    routes = cap.routes().sort("layer", "row", "pos", "rank")
    k = plan.top_k
    for site in plan.sites:
        ids, weights = received[plan.experts_paths[site.path]][0]
        layer = routes.filter(routes["layer"] == site.layer)
        assert torch.equal(torch.from_numpy(layer["expert"].to_numpy().copy()).reshape(-1, k).long(), ids.long())
        assert torch.equal(torch.from_numpy(layer["weight"].to_numpy().copy()).reshape(-1, k), weights)


# -- a model class of the test's own -------------------------------------------------------------

class ToyRouter(nn.Module):
    def __init__(self, experts, hidden, k):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(experts, hidden) / hidden ** 0.5)
        self.top_k = k

    def forward(self, x):
        logits = nn.functional.linear(x, self.weight)
        weights, ids = torch.softmax(logits, -1).topk(self.top_k, dim=-1)
        return logits, weights / weights.sum(-1, keepdim=True), ids


class ToyExperts(nn.Module):
    def __init__(self, experts, hidden):
        super().__init__()
        self.proj = nn.Parameter(torch.randn(experts, hidden, hidden) / hidden ** 0.5)

    def forward(self, hidden, ids, weights):
        out = torch.zeros_like(hidden)
        for slot in range(ids.shape[1]):
            out = out + weights[:, slot, None] * torch.einsum("th,tho->to", hidden, self.proj[ids[:, slot]])
        return out


class ToyBlock(nn.Module):
    def __init__(self, experts, hidden, k, tamper=False):
        super().__init__()
        self.router, self.bank, self.tamper = ToyRouter(experts, hidden, k), ToyExperts(experts, hidden), tamper

    def forward(self, h):
        flat = h.reshape(-1, h.shape[-1])
        _, weights, ids = self.router(flat)
        if self.tamper:  # something between router and experts changes the routing
            weights = weights.flip(-1)
        return self.bank(flat, ids, weights).reshape(h.shape)


class ToyLayer(nn.Module):
    def __init__(self, *a, **kw):
        super().__init__()
        self.ffn = ToyBlock(*a, **kw)

    def forward(self, h):
        return h + self.ffn(h)


class ToyBody(nn.Module):
    def __init__(self, vocab, hidden, experts, k, depth, tamper):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.stack = nn.ModuleList(ToyLayer(experts, hidden, k, tamper=tamper and i == depth - 1)
                                   for i in range(depth))

    def forward(self, input_ids, attention_mask=None):
        h = self.embed(input_ids)
        for layer in self.stack:
            h = layer(h)
        return h


class ToyMoE(nn.Module):
    def __init__(self, tamper=False):
        super().__init__()
        torch.manual_seed(0)
        self.body = ToyBody(vocab=50, hidden=16, experts=6, k=2, depth=3, tamper=tamper)

    def forward(self, input_ids, attention_mask=None):
        return self.body(input_ids, attention_mask)


def test_a_model_no_table_knows_is_captured_with_a_warning_and_verified():
    model = ToyMoE().eval()
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(1))
    with pytest.warns(GenericAdapterWarning, match="'ToyMoE'"):
        plan = plan_model(model)
    assert [(s.path, s.layer, s.num_experts, s.top_k) for s in plan.sites] == \
        [(f"body.stack.{i}.ffn.router", i, 6, 2) for i in range(3)]
    received, handles = {}, []
    for i, layer in enumerate(model.body.stack):
        rec = received.setdefault(i, [])
        handles.append(layer.ffn.bank.register_forward_pre_hook(lambda m, a, r=rec: r.append(a)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GenericAdapterWarning)
            with moelens.capture(model) as cap, torch.no_grad():
                model(ids)
    finally:
        for h in handles:
            h.remove()
    routes = cap.routes().sort("layer", "row", "pos", "rank")
    for i in range(3):
        layer = routes.filter(routes["layer"] == i)
        _, want_ids, want_w = received[i][0]
        assert layer["expert"].to_list() == want_ids.reshape(-1).tolist()
        assert torch.equal(torch.from_numpy(layer["weight"].to_numpy().copy()), want_w.reshape(-1))
    assert cap.metadata["generic_adapter"] is True


def test_a_planted_mismatch_is_an_error_not_a_wrong_row():
    model = ToyMoE(tamper=True).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GenericAdapterWarning)
        with pytest.raises(CaptureError, match="differs from what its experts received"):
            with moelens.capture(model), torch.no_grad():
                model(torch.randint(0, 50, (1, 5)))
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_a_model_that_fits_no_convention_keeps_the_clear_error():
    class Config:
        model_type = "mystery_moe"
        num_experts = 4

    class Mystery(nn.Module):  # experts exist, but no router returns (logits, weights, indices)
        def __init__(self):
            super().__init__()
            self.config = Config()
            self.layers = nn.ModuleList(nn.Linear(8, 8) for _ in range(2))

    with pytest.raises(UnknownArchitectureError, match="mystery_moe") as error:
        plan_model(Mystery())
    assert "\n" not in str(error.value)
