"""What an intervention does to the model's predictions, measured against the unmodified model.

On the same tokens, for every intervention: the change in next-token loss (``d_loss`` = loss with
the intervention - loss without, in nats), the KL divergence ``KL(base || intervened)`` of the
next-token distribution, and top-1 agreement (the most likely next token unchanged). Token values
are aggregated per label value - every token (``all``), the document's ``domain`` and ``language``,
and the token's ``position`` bucket (0, 1, 2-3, 4-7, ...) - as token-weighted means with 95 %
bootstrap intervals that resample documents (:mod:`moelens.interventions.bootstrap`).

The unmodified forward runs once per batch and serves every intervention of a chunk (batch outer,
intervention inner), so a sweep costs about one forward per intervention plus one per chunk.
Windows follow ``moelens trace`` (no overlap); a window's first token has no context in the window
and is not scored. Each finished chunk is committed in one transaction, so an interrupted run
resumes after its last chunk without duplicating a row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np

from moelens.errors import ConfigError, EmptyDatasetError, option

__all__ = ["Experiment", "measure", "token_effects", "aggregate", "prepare", "Prepared", "LABEL_KINDS", "ROW_COLUMNS"]

LABEL_KINDS = ("domain", "language", "position")
EFFECT_COLUMNS = ("d_loss", "kl", "top1_agree")


@dataclass(frozen=True)
class Experiment:
    """One intervention to measure: the keyword arguments of :func:`moelens.intervene`, and whether it is
    a random control (``control_for``: the id of the intervention it controls)."""

    kwargs: dict[str, Any]
    control: bool = False
    control_for: int | None = None
    label: str = ""  # why it was chosen, e.g. "specialist of language=ar"

    @property
    def kind(self) -> str:
        kinds = [k for k in ("ablate", "prune", "force", "scale", "merge") if self.kwargs.get(k)]
        return "+".join(kinds) or "none"

    @property
    def layer(self) -> int | None:
        layers = {int(layer) for k in ("ablate", "prune", "force", "scale", "merge") for layer in self.kwargs.get(k) or {}}
        return layers.pop() if len(layers) == 1 else None

    @property
    def experts(self) -> list[int]:
        out: set[int] = set()
        for k in ("ablate", "prune", "force"):
            for experts in (self.kwargs.get(k) or {}).values():
                out.update(int(e) for e in experts)
        for factors in (self.kwargs.get("scale") or {}).values():
            out.update(int(e) for e in factors)
        for pairs in (self.kwargs.get("merge") or {}).values():
            out.update(int(e) for pair in pairs for e in pair)
        return sorted(out)

    def spec(self) -> dict[str, Any]:
        def keyed(value: Any) -> Any:
            if isinstance(value, dict):
                return {str(k): keyed(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
            if isinstance(value, (list, tuple)):
                return [keyed(v) for v in value]
            return value
        return {k: keyed(v) for k, v in sorted(self.kwargs.items()) if v and k != "where"}

    def describe(self) -> str:
        from moelens.interventions.core import describe

        text = describe(**{k: self.kwargs.get(k) for k in ("ablate", "prune", "force", "scale", "merge")})
        return f"{text} (random control)" if self.control else text


@dataclass
class Prepared:
    """Documents tokenized and cut into windows, with their labels."""

    windows: list[Any]
    labels: dict[int, dict[str, str | None]]
    tokens: int
    pad_id: int
    dataset: str
    skipped: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


def prepare(data: Any, tokenizer: Any, *, max_length: int, max_docs: int | None = None) -> Prepared:
    """Read ``data`` (a path, hub id or :class:`~moelens.data.DocumentSet`) into windows of ``max_length``."""
    from moelens.data import DocumentSet, load_documents
    from moelens.pipeline.windows import document_windows

    docs = data if isinstance(data, DocumentSet) else load_documents(str(data))
    windows, labels, tokens, skipped = [], {}, 0, 0
    for doc in docs.iter_documents(0, max_docs):
        if doc.input_ids is not None:
            ids = np.asarray(doc.input_ids, dtype=np.int64)
        elif tokenizer is None:
            raise ConfigError("the data holds text and the model no tokenizer; give input_ids or a tokenizer.")
        else:
            ids = np.asarray(tokenizer(doc.text or "", add_special_tokens=True)["input_ids"], dtype=np.int64)
        if len(ids) < 2:
            skipped += 1
            continue
        windows += document_windows(doc.doc_id, ids, max_length)
        labels[doc.doc_id] = {"domain": doc.domain, "language": doc.language}
        tokens += len(ids)
    if not windows:
        raise EmptyDatasetError(f"{docs.name} holds no document of 2 tokens or more to score.")
    pad = 0
    for attr in ("pad_token_id", "eos_token_id"):
        if isinstance(getattr(tokenizer, attr, None), int):
            pad = getattr(tokenizer, attr)
            break
    return Prepared(windows, labels, tokens, pad, docs.name, skipped)


def batches(windows: list[Any], batch_size: int) -> Iterator[list[Any]]:
    for i in range(0, len(windows), batch_size):
        yield windows[i:i + batch_size]


def _scored(batch: list[Any], pad_id: int, device: Any):
    """Padded ids/mask, and the (row, column) of every scored prediction with its target and position."""
    import torch

    width = max(len(w.ids) for w in batch)
    ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    rows, cols, targets, doc, pos = [], [], [], [], []
    for i, w in enumerate(batch):
        n = len(w.ids)
        ids[i, :n], mask[i, :n] = w.ids, 1
        first = max(1, w.record_from - w.start)
        js = np.arange(first, n)
        rows.append(np.full(len(js), i)), cols.append(js - 1), targets.append(w.ids[js])
        doc.append(np.full(len(js), w.doc_id)), pos.append(w.start + js)
    cat = np.concatenate
    index = (torch.from_numpy(cat(rows)).to(device), torch.from_numpy(cat(cols)).to(device))
    return (torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device), index,
            torch.from_numpy(cat(targets)).to(device), cat(doc).astype(np.int64), cat(pos).astype(np.int64))


def token_effects(model: Any, prepared: Prepared, experiments: list[Experiment], *, batch_size: int = 8,
                  progress: bool = True) -> dict[str, np.ndarray]:
    """Per scored token: ``doc``, ``pos``, ``base_loss`` and, per experiment ``i``, ``d_loss[i]``,
    ``kl[i]`` and ``agree[i]`` (arrays ``[experiments, tokens]``)."""
    import torch

    from moelens.interventions.core import Intervention
    from moelens.progress import TraceProgress

    device = next(model.parameters()).device
    opened = [Intervention(model, **e.kwargs) for e in experiments]  # checked before any forward
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("doc", "pos", "base_loss", "d_loss", "kl", "agree")}
    with TraceProgress(total=len(prepared.windows), enabled=progress, label="intervene") as bar, torch.inference_mode():
        for batch in batches(prepared.windows, batch_size):
            ids, mask, index, targets, doc, pos = _scored(batch, prepared.pad_id, device)

            def scored_logits() -> torch.Tensor:
                return model(input_ids=ids, attention_mask=mask, use_cache=False).logits[index].float()

            # per scored token: with z the logits and lse = logsumexp(z), log p = z - lse, so
            #   nll = lse - z[target],  KL(base || new) = p_base . log p_base - p_base . log p_new:
            # per intervention one logsumexp, one subtraction, one dot product and one argmax over
            # [tokens, vocabulary]; the dot products are of log-probabilities (a few nats), not of raw
            # logits, so float32 keeps KL to about 1e-7
            base_z = scored_logits()
            base_lse = torch.logsumexp(base_z, dim=-1)
            base_nll = base_lse - base_z.gather(1, targets[:, None])[:, 0]
            base_p = torch.softmax(base_z, dim=-1)
            base_term = torch.einsum("nv,nv->n", base_p, base_z - base_lse[:, None])
            base_top = base_z.argmax(-1)
            d_loss, kl, agree = [], [], []
            for iv in opened:
                with iv:
                    z = scored_logits()
                lse = torch.logsumexp(z, dim=-1)
                d_loss.append((lse - z.gather(1, targets[:, None])[:, 0] - base_nll).cpu().numpy())
                kl.append((base_term - torch.einsum("nv,nv->n", base_p, z - lse[:, None])).clamp_min(0).cpu().numpy())
                agree.append((z.argmax(-1) == base_top).cpu().numpy())
            parts["doc"].append(doc), parts["pos"].append(pos), parts["base_loss"].append(base_nll.cpu().numpy())
            parts["d_loss"].append(np.stack(d_loss) if d_loss else np.zeros((0, len(doc))))
            parts["kl"].append(np.stack(kl) if kl else np.zeros((0, len(doc))))
            parts["agree"].append(np.stack(agree) if agree else np.zeros((0, len(doc)), bool))
            bar.advance(len(batch), int(mask.sum()))
    out = {k: np.concatenate(parts[k], axis=-1) for k in ("doc", "pos", "base_loss")}
    for k in ("d_loss", "kl", "agree"):
        out[k] = np.concatenate(parts[k], axis=1)
    return out


def _groups(effects: dict[str, np.ndarray], labels: dict[int, dict[str, str | None]],
            kinds: Iterable[str]) -> Iterator[tuple[str, str, np.ndarray]]:
    """``(label_kind, label_value, token mask)`` for 'all' and every value of each kind."""
    from moelens.analysis.labels import position_bucket, position_bucket_names

    doc = effects["doc"]
    yield "all", "all", np.ones(len(doc), bool)
    for kind in kinds:
        if kind == "position":
            buckets = position_bucket(effects["pos"])
            names = position_bucket_names(int(buckets.max()) + 1 if len(buckets) else 0)
            for b, name in enumerate(names):
                m = buckets == b
                if m.any():
                    yield "position", name, m
            continue
        values = np.array([labels.get(int(d), {}).get(kind) or "" for d in doc], dtype=object)
        for value in sorted(set(values) - {""}):
            yield kind, str(value), values == value


def aggregate(effects: dict[str, np.ndarray], labels: dict[int, dict[str, str | None]],
              experiments: list[Experiment], *, ids: list[int], kinds: Iterable[str] = LABEL_KINDS,
              n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """One row per (experiment, label value): token-weighted means with document-bootstrap intervals."""
    from moelens.interventions.bootstrap import doc_bootstrap, per_document

    rows = []
    groups = list(_groups(effects, labels, kinds))
    for i, (exp, iid) in enumerate(zip(experiments, ids)):
        for kind, value, m in groups:
            doc = effects["doc"][m]
            row = {"intervention_id": iid, "kind": exp.kind, "layer": exp.layer, "experts": exp.experts,
                   "spec": json.dumps(exp.spec(), sort_keys=True), "description": exp.describe(),
                   "control": exp.control, "control_for": exp.control_for, "label_kind": kind, "label_value": value,
                   "n_docs": int(len(np.unique(doc))), "n_tokens": int(m.sum()),
                   "base_loss": float(effects["base_loss"][m].mean())}
            for name, key in (("d_loss", "d_loss"), ("kl", "kl"), ("top1", "agree")):
                values = effects[key][i][m].astype(np.float64)
                sums, counts = per_document(doc, values)
                lo, hi = doc_bootstrap(sums, counts, n_boot=n_boot, seed=seed + iid)
                column = "top1_agree" if name == "top1" else name
                row[column], row[f"{name}_lo"], row[f"{name}_hi"] = float(values.mean()), lo, hi
            rows.append(row)
    return rows


ROW_COLUMNS = ("intervention_id", "kind", "layer", "experts", "spec", "description", "control", "control_for",
               "label_kind", "label_value", "n_docs", "n_tokens", "base_loss", "d_loss", "d_loss_lo", "d_loss_hi",
               "kl", "kl_lo", "kl_hi", "top1_agree", "top1_lo", "top1_hi")


def _frame(rows: list[dict[str, Any]]):
    import polars as pl

    schema = {"intervention_id": pl.Int32, "kind": pl.String, "layer": pl.Int32, "experts": pl.List(pl.Int32),
              "spec": pl.String, "description": pl.String, "control": pl.Boolean, "control_for": pl.Int32,
              "label_kind": pl.String, "label_value": pl.String, "n_docs": pl.Int32, "n_tokens": pl.Int64,
              **{c: pl.Float64 for c in ROW_COLUMNS[12:]}}
    return pl.DataFrame(rows, schema=schema)


def measure(model: Any, data: Any, interventions: Iterable[Experiment | dict[str, Any]], *, tokenizer: Any = None,
            labels: Iterable[str] = LABEL_KINDS, batch_size: int = 8, max_length: int = 512,
            max_docs: int | None = None, n_boot: int = 1000, seed: int = 0, chunk: int = 16, out: str | None = None,
            irun_id: str | None = None, model_name: str | None = None, progress: bool = True):
    """Measure interventions on ``data`` (see the module docstring); returns a Polars frame, one row per
    (intervention, label value). ``model`` is a name (embedded, folder, hub id) or a loaded model (with
    ``tokenizer=`` for text data). With ``out`` the rows also go to that DuckDB (``interventions``
    table, run ``irun_id``), chunk by chunk; running the same command again resumes.

        >>> moelens.interventions.measure("moelens-mini", "eval.jsonl", [{"ablate": {2: [5]}}])  # doctest: +SKIP
    """
    import polars as pl

    experiments = [e if isinstance(e, Experiment) else Experiment(dict(e)) for e in interventions]
    for name, value, low, high in (("batch_size", batch_size, 1, None), ("max_length", max_length, 2, None),
                                   ("n_boot", n_boot, 10, 100_000), ("chunk", chunk, 1, None)):
        if not isinstance(value, int) or value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high:,}"
            raise ConfigError(f"{option(name, value)} must be an integer {bounds}.")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{option('seed', seed)} must be a non-negative integer.")
    unknown = set(labels) - set(LABEL_KINDS)
    if unknown:
        raise ConfigError(f"unknown label kind {sorted(unknown)[0]!r}; choose from {', '.join(LABEL_KINDS)}.")
    model_name = model_name or (model if isinstance(model, str) else getattr(getattr(model, "config", None),
                                                                             "_name_or_path", "") or type(model).__name__)
    if isinstance(model, str):
        from moelens.models.loading import load_model

        loaded = load_model(model)
        model, tokenizer = loaded.model, loaded.tokenizer
    from moelens.interventions.core import Intervention

    for e in experiments:  # every intervention is checked before anything is read or written
        Intervention(model, **e.kwargs)
    prepared = prepare(data, tokenizer, max_length=max_length, max_docs=max_docs)
    ids = list(range(len(experiments)))
    store = run = None
    done: set[int] = set()
    if out is not None:
        from moelens.interventions.storage import open_irun

        config = {"batch_size": batch_size, "max_length": max_length, "max_docs": max_docs, "n_boot": n_boot,
                  "seed": seed, "labels": list(labels),
                  "interventions": [[e.describe(), e.spec(), e.control, e.control_for] for e in experiments]}
        store, run, done = open_irun(out, irun_id or f"{model_name}:{prepared.dataset}", model_name,
                                     prepared.dataset, config)
    rows: list[dict[str, Any]] = []
    try:
        todo = [i for i in ids if i not in done]
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            effects = token_effects(model, prepared, [experiments[i] for i in part], batch_size=batch_size,
                                    progress=progress)
            chunk_rows = aggregate(effects, prepared.labels, [experiments[i] for i in part], ids=part, kinds=labels,
                                   n_boot=n_boot, seed=seed)
            if store is not None:
                from moelens.interventions.storage import write_rows

                write_rows(store, run, chunk_rows)
            rows += chunk_rows
        if store is not None:
            from moelens.interventions.storage import finish, read_rows

            finish(store, run)
            return read_rows(store, run)
    finally:
        if store is not None:
            store.close()
    frame = _frame(rows)
    return frame.sort(["intervention_id", "label_kind", "label_value"]) if frame.height else frame

