"""Effects of interventions: arithmetic against two forwards by the test, the bootstrap against its loop,
resuming without duplicates, and planted experts whose causal role the test built by hand."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402

import moelens  # noqa: E402
from moelens.data import DocumentSet  # noqa: E402
from moelens.interventions import effects as fx  # noqa: E402
from moelens.interventions.bootstrap import doc_bootstrap, doc_bootstrap_reference, per_document  # noqa: E402
from moelens.interventions.effects import Experiment, measure  # noqa: E402
from moelens.interventions.sweeps import causal_verdicts, matched_controls  # noqa: E402
from moelens.models.discover import plan_model  # noqa: E402
from moelens.models.tiny import build_tiny_model  # noqa: E402


def _docs(rows: list[list[int]], domains: list[str]) -> DocumentSet:
    table = pa.table({"input_ids": rows, "domain": domains})
    return DocumentSet(table, name="planted", text_column=None, ids_column="input_ids")


def test_token_effects_equal_two_forwards_by_hand():
    model = build_tiny_model("qwen3_moe", tie_word_embeddings=False)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40)  # peaked next-token distributions: KL well above rounding
    layer = min(plan_model(model).moe_layers)
    rng = np.random.default_rng(1)
    rows = [rng.integers(2, 250, size=n).tolist() for n in (10, 7, 3)]
    docs = _docs(rows, ["a", "b", "a"])
    gone = [0, 1, 2, 3, 4, 5]  # 2 of 8 experts left (k = 2): a large change
    exp = Experiment({"ablate": {layer: gone}})
    prepared = fx.prepare(docs, None, max_length=4)
    got = fx.token_effects(model, prepared, [exp], batch_size=2, progress=False)
    # by hand: each window of 4 on its own; a window's first token is not scored
    want = {"doc": [], "pos": [], "d": [], "kl": [], "agree": []}
    for doc_id, ids in enumerate(rows):
        for start in range(0, len(ids), 4):
            window = torch.tensor([ids[start:start + 4]])
            if window.shape[1] < 2:
                continue
            with torch.no_grad():
                base = model(input_ids=window).logits[0, :-1].float()
                with moelens.intervene(model, ablate={layer: gone}):
                    new = model(input_ids=window).logits[0, :-1].float()
            target = window[0, 1:]
            ce = torch.nn.functional.cross_entropy
            d = ce(new, target, reduction="none") - ce(base, target, reduction="none")
            kl = torch.nn.functional.kl_div(new.log_softmax(-1), base.log_softmax(-1), log_target=True,
                                            reduction="none").sum(-1)
            want["doc"] += [doc_id] * len(target)
            want["pos"] += list(range(start + 1, start + window.shape[1]))
            want["d"] += d.tolist()
            want["kl"] += kl.tolist()
            want["agree"] += (new.argmax(-1) == base.argmax(-1)).tolist()
    assert got["doc"].tolist() == want["doc"] and got["pos"].tolist() == want["pos"]
    np.testing.assert_allclose(got["d_loss"][0], want["d"], atol=1e-5)
    np.testing.assert_allclose(got["kl"][0], want["kl"], rtol=2e-3, atol=1e-6)
    assert np.median(want["kl"]) > 1e-3  # large enough for the direction of KL to show
    assert got["agree"][0].tolist() == want["agree"]
    assert np.abs(got["d_loss"][0]).max() > 0  # the ablation changed something


def test_document_bootstrap_equals_its_loop():
    rng = np.random.default_rng(3)
    doc = rng.integers(0, 13, size=400)
    values = rng.normal(size=400)
    sums, counts = per_document(doc, values)
    assert np.isclose(sums.sum() / counts.sum(), values.mean())
    fast = doc_bootstrap(sums, counts, n_boot=300, seed=5)
    slow = doc_bootstrap_reference(sums, counts, n_boot=300, seed=5)
    np.testing.assert_allclose(fast, slow, rtol=1e-12)
    assert fast[0] < values.mean() < fast[1]


def test_aggregate_per_label_value_by_hand():
    effects = {"doc": np.array([0, 0, 1, 2, 2, 2]), "pos": np.array([1, 2, 1, 1, 2, 3]),
               "base_loss": np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
               "d_loss": np.array([[0.1, 0.3, 0.5, 0.0, 0.0, 0.6]]), "kl": np.array([[0.0, 0.2, 0.1, 0.0, 0.0, 0.3]]),
               "agree": np.array([[True, False, True, True, True, False]])}
    labels = {0: {"domain": "x"}, 1: {"domain": "y"}, 2: {"domain": "x"}}
    rows = fx.aggregate(effects, labels, [Experiment({"ablate": {0: [1]}})], ids=[0], kinds=["domain", "position"],
                        n_boot=50)
    got = {(r["label_kind"], r["label_value"]): r for r in rows}
    assert got["all", "all"]["d_loss"] == pytest.approx(1.5 / 6) and got["all", "all"]["n_docs"] == 3
    assert got["domain", "x"]["d_loss"] == pytest.approx(1.0 / 5) and got["domain", "x"]["n_tokens"] == 5
    assert got["domain", "x"]["top1_agree"] == pytest.approx(3 / 5) and got["domain", "y"]["kl"] == pytest.approx(0.1)
    assert got["position", "1"]["n_tokens"] == 3 and got["position", "2-3"]["d_loss"] == pytest.approx(0.9 / 3)
    assert got["domain", "x"]["base_loss"] == pytest.approx((1 + 2 + 4 + 5 + 6) / 5)


def test_an_interrupted_run_resumes_without_duplicates(tmp_path, monkeypatch):
    model = build_tiny_model("qwen3_moe")
    layer = min(plan_model(model).moe_layers)
    rng = np.random.default_rng(2)
    docs = _docs([rng.integers(2, 250, size=9).tolist() for _ in range(4)], ["a", "b", "a", "b"])
    exps = [Experiment({"ablate": {layer: [e]}}) for e in range(3)]
    whole = measure(model, docs, exps, chunk=1, n_boot=50, out=str(tmp_path / "whole.duckdb"), progress=False)
    real = fx.token_effects
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fx, "token_effects", flaky)
    with pytest.raises(KeyboardInterrupt):
        measure(model, docs, exps, chunk=1, n_boot=50, out=str(tmp_path / "cut.duckdb"), progress=False)
    monkeypatch.setattr(fx, "token_effects", real)
    resumed = measure(model, docs, exps, chunk=1, n_boot=50, out=str(tmp_path / "cut.duckdb"), progress=False)
    key = ["intervention_id", "label_kind", "label_value"]
    assert resumed.height == whole.height == resumed.unique(key).height
    assert resumed.drop("irun_id").sort(key).equals(whole.drop("irun_id").sort(key))
    with pytest.raises(moelens.errors.RunMismatchError):
        measure(model, docs, exps[:2], chunk=1, n_boot=50, out=str(tmp_path / "cut.duckdb"), progress=False)


# -- planted experts ---------------------------------------------------------------------------
# A one-layer, top-1 model with 8 experts. Tokens 128-255 ("B") carry +8 on hidden dimension 0,
# tokens 2-127 ("A") -8. Expert 0 is the only one B tokens choose, and it writes +40 along
# dimension 1, which the LM head reads as "next token is 200": B documents ("200 200 ...") are
# predicted through it. A tokens choose expert 1 first and expert 2 second; both have zero output.

def _planted():
    model = build_tiny_model("qwen3_moe", num_layers=1, top_k=1, randomize_routing=False,
                             tie_word_embeddings=False, norm_topk_prob=True)
    plan = plan_model(model)
    site = plan.sites[0]
    router = model.get_submodule(site.path)
    experts = model.get_submodule(plan.experts_paths[site.path])
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[:, :2] = 0
        emb[128:, 0], emb[2:128, 0] = 8.0, -8.0
        router.weight.zero_()
        router.weight[0, 0] = 4.0     # B tokens: expert 0 far ahead
        router.weight[1, 0] = -4.0    # A tokens: expert 1, then expert 2
        router.weight[2, 0] = -2.0
        experts.gate_up_proj.zero_()
        inter = experts.gate_up_proj.shape[1] // 2
        experts.gate_up_proj[0, 0, 0] = 1.0          # gate unit 0 reads dim 0
        experts.gate_up_proj[0, inter, 0] = 1.0      # up unit 0 reads dim 0
        experts.down_proj[0].zero_()
        experts.down_proj[0, 1, 0] = 40.0            # -> +dim 1
        experts.down_proj[1:3].zero_()               # experts 1 and 2: zero output
        head = model.get_output_embeddings().weight
        head.zero_()
        head[200, 1] = 1.0
    return model, site.layer


def test_planted_causal_and_silent_experts_are_told_apart():
    model, layer = _planted()
    docs = _docs([[200] * 12] * 3 + [[5, 9, 17, 33, 60, 90, 100, 120, 7, 11, 13, 3]] * 3, ["B"] * 3 + ["A"] * 3)
    with torch.no_grad(), moelens.capture(model) as cap:
        model(input_ids=torch.tensor([[200] * 4, [5, 9, 17, 33]]))
    routes = cap.routes()
    assert routes.filter(pl.col("row") == 0)["expert"].unique().to_list() == [0]
    assert routes.filter(pl.col("row") == 1)["expert"].unique().to_list() == [1]  # lift 2 on A, never on B
    rows = measure(model, docs, [Experiment({"ablate": {layer: [0]}}), Experiment({"ablate": {layer: [1]}})],
                   labels=["domain"], n_boot=200, progress=False)
    get = {(r["intervention_id"], r["label_value"]): r for r in rows.iter_rows(named=True)}
    assert get[0, "B"]["d_loss_lo"] > 1.0                     # expert 0 carries B
    assert get[0, "A"]["d_loss"] == 0 and get[0, "A"]["kl"] == 0  # and nothing else
    assert get[1, "A"]["d_loss"] == 0 and get[1, "A"]["kl"] == 0  # expert 1: high lift, no causal effect
    assert get[1, "B"]["d_loss"] == 0


def test_verdicts_against_matched_controls_by_hand():
    usage = {2: np.array([100, 90, 10, 95, 12, 50, 11, 100], dtype=float)}
    exp = Experiment({"ablate": {2: [0, 2]}})  # usage 110; closest pairs of the rest: 6+7 = 111, 4+7 = 112
    controls = matched_controls(exp, usage, n=2, seed=0, control_for=0)
    sums = sorted(int(usage[2][c.experts].sum()) for c in controls)
    assert sums == [111, 112] and all(c.control and c.layer == 2 and len(c.experts) == 2 for c in controls)
    rows = pl.DataFrame({
        "irun_id": ["r"] * 4, "intervention_id": [0, 0, 1, 2], "control": [False, False, True, True],
        "control_for": [None, None, 0, 0], "label_kind": ["all", "domain", "domain", "domain"],
        "label_value": ["all", "code", "code", "code"], "d_loss": [0.01, 0.5, 0.1, 0.2],
        "d_loss_lo": [-0.01, 0.4, 0.05, 0.1], "d_loss_hi": [0.03, 0.6, 0.15, 0.45]})
    got = causal_verdicts(rows).sort("label_kind")
    assert got["verdict"].to_list() == ["no effect beyond noise", "no effect beyond noise"]
    assert got["control_hi"].to_list() == [None, 0.45]
    rows = rows.with_columns(pl.when(pl.col("intervention_id") == 2).then(0.3).otherwise(pl.col("d_loss_hi"))
                             .alias("d_loss_hi"))
    assert causal_verdicts(rows).filter(pl.col("label_kind") == "domain")["verdict"].to_list() == ["effect"]
