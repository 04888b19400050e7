"""Data-parallel tracing on one machine: 1 process against N torchrun processes, and the merge cost.

Each variant runs as fresh processes, alternately, for several rounds, over the same documents:

* ``single``: ``moelens trace MODEL DATA`` in one process (torch uses every core);
* ``sharded``: ``torchrun --nproc-per-node N -m moelens trace ... --no-merge`` (one shard per
  process, ``OMP_NUM_THREADS`` = cores / N, as torchrun sets it);
* ``merge``: ``moelens merge`` of those shards into one database.

It prints the wall time of each and the speed-up ``single / (sharded + merge)``, and checks that the
merged run holds every document of the single run.

    python benchmarks/sharded_trace.py                     # moelens-mini over the eval split, 2 processes
    python benchmarks/sharded_trace.py --procs 2 --rounds 3 --copies 2
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])}... failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="moelens-mini")
    p.add_argument("--data", default=None, help="jsonl (default: the embedded eval split)")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--copies", type=int, default=1, help="repeat the data this many times (a longer run)")
    args = p.parse_args()
    from moelens.embedded import eval_split_path

    source = Path(args.data or eval_split_path())
    cores = os.cpu_count() or 1
    times: dict[str, list[float]] = {"single": [], "sharded": [], "merge": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.jsonl"
        data.write_text(source.read_text(encoding="utf-8") * args.copies, encoding="utf-8")
        base = [sys.executable, "-m", "moelens", "trace", args.model, str(data), "--no-progress", "--run-id", "r"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        for r in range(args.rounds):
            single, sharded = Path(tmp) / f"single{r}.duckdb", Path(tmp) / f"sharded{r}.duckdb"
            order = ("single", "sharded") if r % 2 == 0 else ("sharded", "single")
            for variant in order:
                if variant == "single":
                    times["single"].append(_timed([*base, "--out", str(single)], env))
                else:
                    run = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.procs),
                           "--master-addr", "127.0.0.1", "--master-port", str(_port()), "-m", "moelens",
                           *base[3:], "--out", str(sharded), "--no-merge"]
                    threads = {**env, "OMP_NUM_THREADS": str(max(1, cores // args.procs))}
                    times["sharded"].append(_timed(run, threads))
                    times["merge"].append(_timed([sys.executable, "-m", "moelens", "merge", "--out", str(sharded),
                                                  "--no-progress"], env))
            import duckdb

            counts = [duckdb.connect(str(db), read_only=True).execute("SELECT count(*) FROM documents").fetchone()[0]
                      for db in (single, sharded)]
            if counts[0] != counts[1]:
                raise SystemExit(f"merged run has {counts[1]} documents, the single run {counts[0]}")
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"cores": cores, "procs": args.procs, "rounds": args.rounds, "copies": args.copies,
                      "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()}}))
    print(f"single process      {med['single']:7.2f} s")
    print(f"{args.procs} processes (shards) {med['sharded']:7.2f} s   speed-up x{med['single'] / med['sharded']:.2f}")
    print(f"merge               {med['merge']:7.2f} s   ({med['merge'] / med['single'] * 100:.0f}% of the single run)")
    total = med["sharded"] + med["merge"]
    print(f"sharded + merge     {total:7.2f} s   speed-up x{med['single'] / total:.2f}")


if __name__ == "__main__":
    main()
