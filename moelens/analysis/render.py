"""Rich tables for people: the report and the run comparison, rendered from their JSON objects.

Only the JSON objects are read here (what ``--json`` prints), so the terminal view can never show
a number that the JSON does not have. Label values and token text are user data: they are
escaped before Rich sees them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_report", "render_comparison"]


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def render_report(data: dict[str, Any], console: Any, *, top: int = 10) -> None:
    from rich.markup import escape
    from rich.table import Table

    run, base = data["run"], data["baselines"]
    status = run.get("status") or "complete"
    console.print(f"[bold]run {escape(str(run['run_id']))}[/]  {escape(str(run.get('family') or ''))}  "
                  f"E={run['num_experts']} k={run['top_k']}  {run['tokens']:,} tokens in {run['documents']:,} documents, "
                  f"{len(run['layers'])} MoE layers, {run.get('mode', 'routes')} mode, status {escape(status)}")
    if run.get("status_note"):
        console.print(f"[yellow]warning: {escape(run['status_note'])}; run the same trace again to finish it.[/]")
    source = data.get("source") or {}
    if source.get("kind", "transformers") != "transformers":
        console.print(f"source: {escape(str(source['kind']))} (imported)")
    for what, why in (data.get("unavailable") or {}).items():
        console.print(f"[yellow]unavailable[/]: {escape(what)}: {escape(why)}")

    t = Table(title="Load per layer (uniform: max/mean 1, entropy 1, effective = E)", title_justify="left")
    for col in ("layer", "tokens", "max/mean", "imbalance", "CV", "Gini", "H/log E", "exp(H)", "dead", "EP bal.", "verdict"):
        t.add_column(col, justify="right" if col not in ("verdict",) else "left")
    reasons = []
    for row in data["layers"]:
        bal = row["balancedness"]
        key = next((k for k in bal if k.startswith("contiguous")), None)
        verdict = "[red]collapsed[/]" if row["collapsed"] else "ok"
        if row["collapsed"]:
            reasons.append(f"layer {row['layer']} collapsed: {escape(row['collapse_reason'])}")
        t.add_row(str(row["layer"]), f"{row['tokens']:,}", _f(row["max_over_mean"], 2), _f(row["imbalance_ratio"], 2),
                  _f(row["cv"], 2), _f(row["gini"], 2), _f(row["entropy_norm"]), _f(row["effective_experts"], 1),
                  str(len(row["dead_experts"])), _f(bal.get(key), 2) if key else "-", verdict)
    console.print(t)
    for line in reasons:
        console.print(line)

    if data["specialization"]:
        console.print("Specialization ranking: " + escape(str(data["options"].get("ranking", ""))) + ".")
    for label, rows in data["specialization"].items():
        tests = data["specialization_tests"].get(label, {})
        t = Table(title=f"Specialization by {escape(label)}: {tests.get('significant', 0)} significant of "
                        f"{tests.get('tested', 0)} tested, {tests.get('untested', 0)} untested "
                        f"(lift = share / expert's overall share; uniform share {_pct(base['specialization_share'])})",
                  title_justify="left")
        causal = bool(data.get("causal_measured"))
        for col in ("layer", "value", "expert", "share", "lift", "95% CI", "q", *(("causal",) if causal else ())):
            t.add_column(col, justify="left" if col in ("value", "causal") else "right")
        ranked = sorted(rows, key=lambda r: (-(r["ci_low"] if r["ci_low"] is not None else -1), -(r["lift"] or 0)))
        for r in ranked[:top]:
            verdict = r.get("causal", "not measured")
            if verdict == "effect" and r.get("causal_d_loss") is not None:
                verdict = f"effect (+{r['causal_d_loss']:.3f} nats)"
            t.add_row(str(r["layer"]), escape(str(r["value"])), str(r["expert"]), _pct(r["share"]), _f(r["lift"], 2),
                      f"[{_f(r['ci_low'], 2)}, {_f(r['ci_high'], 2)}]", f"{r['q_value']:.1e}" if r["q_value"] is not None else "-",
                      *((escape(verdict),) if causal else ()))
        if not rows:
            t.add_row("-", "no significant specialization", "", "", "", "", "", *(("",) if causal else ()))
        console.print(t)
        if tests.get("unsupported"):
            console.print(f"  {tests['unsupported']} cell(s) with a significant lift left out: too little support "
                          "(a dead or near-dead expert, or a share below the floor)")
        for u in tests.get("untested_values") or []:
            console.print(f"  untested: {escape(label)} = {escape(str(u['value']))} ({escape(str(u['reason']))})")

    for label, rows in (data.get("label_profile") or {}).items():
        t = Table(title=f"Label profile by {escape(label)} (stats run: share and lift from aggregates, untested - "
                        "trace with --mode routes for intervals and significance)", title_justify="left")
        # (the render is for the CLI alone: it may name flags)
        for col in ("layer", "value", "expert", "share", "lift"):
            t.add_column(col, justify="left" if col == "value" else "right")
        for r in sorted(rows, key=lambda r: -(r["lift"] or 0))[:top]:
            t.add_row(str(r["layer"]), escape(str(r["value"])), str(r["expert"]), _pct(r["share"]), _f(r["lift"], 2))
        console.print(t)

    if data.get("confidence"):
        t = Table(title="Router confidence (uniform router: H/log E 1, margin 0, aux loss 1)", title_justify="left")
        for col in ("layer", "H/log E", "margin", "z-loss", "aux loss"):
            t.add_column(col, justify="right")
        for r in data["confidence"]:
            t.add_row(str(r["layer"]), _f(r["entropy_norm"]), _f(r["margin_mean"]), _f(r["z_loss"], 2), _f(r["aux_loss"], 3))
        console.print(t)

    for label, rows in (data.get("repeat_rates_by_label") or {}).items():
        if not rows:
            continue
        t = Table(title=f"Consecutive-token repeats by {escape(label)} (Mixtral Table 5; uniform: first choice "
                        f"{_pct(base['first_choice'])}, first-or-second {_pct(base['first_or_second'])})",
                  title_justify="left")
        for col in ("value", "layer", "pairs", "1st choice", "shuffled", "1st-or-2nd", "shuffled "):
            t.add_column(col, justify="left" if col == "value" else "right")
        for r in sorted(rows, key=lambda r: (str(r["value"]), r["layer"])):
            t.add_row(escape(str(r["value"])), str(r["layer"]), f"{r['pairs']:,}", _pct(r["first_choice"]),
                      _pct(r["shuffled_first_choice"]), _pct(r["first_or_second"]), _pct(r["shuffled_first_or_second"]))
        console.print(t)

    t = Table(title=f"Temporal and cross-layer (uniform: first choice {_pct(base['first_choice'])}, "
                    f"first-or-second {_pct(base['first_or_second'])}, next-layer {_pct(base['transition'])})",
              title_justify="left")
    for col in ("layer", "1st choice", "shuffled", "1st-or-2nd", "shuffled ", "reuse gap", "next-layer pred.",
                "marginal", "vocab top-1/k", "shuffled  ", "paper top-1/k", "co-act max"):
        t.add_column(col, justify="right")
    cross = {r["layer_from"]: r for r in data["crosslayer"]}
    vocab = {r["layer"]: r for r in data["vocabulary"]}
    coact = {r["layer"]: r for r in data["coactivation"]}
    for r in data["temporal"]:
        c, v, a = cross.get(r["layer"], {}), vocab.get(r["layer"], {}), coact.get(r["layer"], {})
        t.add_row(str(r["layer"]), _pct(r["first_choice"]), _pct(r["shuffled_first_choice"]), _pct(r["first_or_second"]),
                  _pct(r["shuffled_first_or_second"]), _f(r.get("reuse_median"), 0), _pct(c.get("predictability")),
                  _pct(c.get("baseline_marginal")), f"{_pct(v.get('top1_mean'))}/{_pct(v.get('topk_mean'))}",
                  f"{_pct(v.get('shuffled_top1_mean'))}/{_pct(v.get('shuffled_topk_mean'))}",
                  f"{_pct(v.get('paper_top1_mean'))}/{_pct(v.get('paper_topk_mean'))}",
                  _pct(a.get("max_conditional")))
    console.print(t)
    if data["temporal"]:
        console.print(f"vocab: token ids seen >= {data['options'].get('vocabulary_min_count')} times (filtered); "
                      "paper: every token id, as OLMoE's figures (a token seen once counts as fully specialized).")


def render_comparison(data: dict[str, Any], console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    console.print(f"[bold]{escape(data['run_a'])}[/] vs [bold]{escape(data['run_b'])}[/]: {data['tokens']:,} shared tokens"
                  + (f", {data['token_mismatches']} with different token ids left out" if data["token_mismatches"] else ""))
    labels = sorted({k for row in data["layers"] for k in row.get("specialization_tv", {})})
    t = Table(title=f"Per layer (uniform: saturation {_pct(data['baselines']['saturation'])}, "
                    f"top-1 agreement {_pct(data['baselines']['top1'])})", title_justify="left")
    for col in ("layer", "saturation", "top-1 agree", "load TV", *[f"spec TV {escape(x)}" for x in labels]):
        t.add_column(col, justify="right")
    for row in data["layers"]:
        t.add_row(str(row["layer"]), _pct(row["saturation"]), _pct(row["top1_agreement"]), _f(row["load_tv"]),
                  *[_f(row["specialization_tv"].get(x)) for x in labels])
    console.print(t)
    t = Table(title="Largest load shifts", title_justify="left")
    for col in ("layer", "expert", "share a", "share b", "delta"):
        t.add_column(col, justify="right")
    for r in data["load_shift"][:10]:
        t.add_row(str(r["layer"]), str(r["expert"]), _pct(r["share_a"]), _pct(r["share_b"]), f"{100 * r['delta']:+.2f}%")
    console.print(t)
