"""Time the full ``moelens serving`` report on a large synthetic trace (1 M tokens x 48 layers x top-8 of 128).

The database is the one :mod:`report_speed` builds (same planted routing, cached under
``/tmp/moelens_bench/``, built on first use). Everything the serving report computes runs, exactly
(no sampling): EPLB placement for EP 8/16/32 with 0 and one redundant expert per GPU (contiguous,
fitted and oracle plans), capacity drops at CF 1.0/1.25/2.0 by position and by score with the
per-label breakdown, LRU and LFU hit rates at every cache size plus Belady at 16/32/64, prefetch
accuracy for both predictors, and distinct experts per step at batch 1/8/32/128.

Usage::

    nice -n 10 python benchmarks/serving_speed.py            # build once (cached), then time the report
    python benchmarks/serving_speed.py --tokens 100000 --layers 8   # a quick small run

The report runs as a subprocess (``python -m moelens serving DB --json --timings``) so the time
includes start-up, imports, loading the routes from DuckDB and loading the compiled kernels;
the machine's load average is printed before and after (the figure is noisy on a shared machine).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report_speed  # noqa: E402  (the same synthetic database)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--layers", type=int, default=48)
    parser.add_argument("--experts", type=int, default=128)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--db", help="database path (default: the report benchmark's cached one)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--serving-args", default="", help="extra arguments for moelens serving")
    args = parser.parse_args(argv)
    from moelens.store import schema

    layout = hashlib.sha1(f"{schema.SCHEMA_VERSION}:{schema.route_table_ddl(1, args.k)}".encode()).hexdigest()[:8]
    path = Path(args.db or f"/tmp/moelens_bench/report_{args.tokens}x{args.layers}x{args.experts}k{args.k}_{layout}.duckdb")
    if args.db is None:
        for stale in path.parent.glob(f"report_{args.tokens}x{args.layers}x{args.experts}k{args.k}_*.duckdb"):
            if stale != path:
                stale.unlink()  # an older layout: several GB
    if not path.exists():
        report_speed.build(path, tokens=args.tokens, layers=args.layers, experts=args.experts, k=args.k)
    routes = args.tokens * args.layers * args.k
    cmd = [sys.executable, "-m", "moelens", "serving", str(path), "--json", "--timings", *args.serving_args.split()]
    print(f"$ {' '.join(cmd)}  ({routes / 1e6:.0f} M routes)", flush=True)
    for _ in range(args.repeat):
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        cpu0 = os.times()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "MOELENS_DEBUG": "1"})
        wall = time.perf_counter() - t0
        cpu1 = os.times()
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        data = json.loads(proc.stdout)
        cpu = (cpu1.children_user - cpu0.children_user) + (cpu1.children_system - cpu0.children_system)
        print(proc.stderr.strip())
        belady = {r["cache_size"]: round(r["hit_rate"], 3) for r in data.get("cache_summary", []) if r["policy"] == "belady"}
        lru = {r["cache_size"]: round(r["hit_rate"], 3) for r in data.get("cache_summary", []) if r["policy"] == "lru"}
        print(f"serving: {wall:.1f}s wall end-to-end, {cpu:.1f}s CPU (user+sys, all processes); "
              f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
              f"hit rate LRU {lru} Belady {belady}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
