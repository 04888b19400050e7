"""Two revisions of moelens side by side: trace wall time and store ingest rate, old versus new.

Each revision is unpacked with ``git archive`` into a temporary folder laid out as the installed
package (``moelens/`` with ``hooks``, ``kernels``, ``store`` and ``web`` mapped under it, as the
pyproject's package-dir does) and put first on ``PYTHONPATH``; everything else (torch,
transformers, DuckDB) is the current environment's. The two revisions then run alternately in
fresh processes, several rounds, so that load on a shared machine falls on both alike:

- trace: ``moelens.trace`` of the embedded model over its eval split (the ``trace`` variant of
  ``benchmarks/trace_overhead.py``: imports, model load, tokenization, every forward, capture,
  writer and commit, timed from before the imports);
- ingest: each revision's own ``benchmarks/store_ingest.py`` (routes/s through the real writer).

    python benchmarks/revisions.py 858393c HEAD                # both benchmarks, 4 rounds
    python benchmarks/revisions.py 858393c HEAD --only trace --rounds 6 --copies 2
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPED = ("hooks", "kernels", "store", "web")  # top-level folders installed as moelens.<name>


def unpack(rev: str, into: Path) -> Path:
    """The revision's tree under ``into/src`` and an importable layout under ``into/path``."""
    src, path = into / "src", into / "path"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    (path / "moelens").mkdir(parents=True)
    for entry in (src / "moelens").iterdir():
        (path / "moelens" / entry.name).symlink_to(entry)
    for name in MAPPED:
        if (src / name).is_dir() and not (path / "moelens" / name).exists():
            (path / "moelens" / name).symlink_to(src / name)
    return path


def run(path: Path, cmd: list[str]) -> str:
    env = dict(os.environ, PYTHONPATH=str(path), PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=path)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed under {path}:\n{out.stderr[-2000:]}")
    return out.stdout


def trace_seconds(path: Path, data: str, out: str) -> float:
    script = ROOT / "benchmarks" / "trace_overhead.py"
    stdout = run(path, [sys.executable, str(script), "--variant", "trace", "--model", "moelens-mini", "--data", data,
                        "--batch-size", "8", "--max-length", "512", "--out", out])
    return float(stdout.strip().splitlines()[-1])


def ingest_rate(path: Path, tokens: int) -> float:
    script = path.parent / "src" / "benchmarks" / "store_ingest.py"  # each revision's own script
    stdout = run(path, [sys.executable, str(script), "--tokens", str(tokens), "--repeat", "1"])
    match = re.search(r"packed .*?([\d.]+) M routes/s", stdout)
    if not match:
        raise SystemExit(f"no ingest rate in the output:\n{stdout}")
    return float(match.group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old")
    p.add_argument("new", nargs="?", default="HEAD")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--copies", type=int, default=1, help="trace the eval split this many times over")
    p.add_argument("--tokens", type=int, default=65536, help="ingest stream size (x 48 layers x top-8)")
    p.add_argument("--only", choices=["trace", "ingest"])
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from moelens.embedded import eval_split_path

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        paths = {name: unpack(rev, tmp_path / name) for name, rev in (("old", args.old), ("new", args.new))}
        lines = [line for line in open(eval_split_path(), encoding="utf-8") if line.strip()]
        data = tmp_path / "data.jsonl"
        data.write_text("".join(lines * args.copies), encoding="utf-8")
        results: dict[str, dict[str, list[float]]] = {"trace": {"old": [], "new": []}, "ingest": {"old": [], "new": []}}
        for r in range(args.rounds):
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            for name in order:
                if args.only in (None, "trace"):
                    out = str(tmp_path / f"{name}{r}.duckdb")
                    results["trace"][name].append(trace_seconds(paths[name], str(data), out))
                if args.only in (None, "ingest"):
                    results["ingest"][name].append(ingest_rate(paths[name], args.tokens))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"old {args.old}, new {args.new}; {args.rounds} alternating rounds; load average {os.getloadavg()[0]:.1f}")
    for bench, unit, better in (("trace", "s", "lower"), ("ingest", "M routes/s", "higher")):
        old, new = results[bench]["old"], results[bench]["new"]
        if not old:
            continue
        for name, values in (("old", old), ("new", new)):
            print(f"{bench:6s} {name}: " + ", ".join(f"{v:.2f}" for v in values) + f" {unit}  (median {statistics.median(values):.2f})")
        ratios = [n / o for n, o in zip(new, old)]
        print(f"{bench:6s} new / old per round: " + ", ".join(f"{x:.3f}" for x in ratios)
              + f"  median {statistics.median(ratios):.3f}  ({better} is better)")


if __name__ == "__main__":
    main()
