#!/usr/bin/env python3
"""QIDO-RS on a 1M-instance index, alone: the quick loop for query work (the full comparison
is `scripts/bench`). Fills a data directory once (kept in QIDO1M_DIR, default
/var/tmp/vesalius-qido1m) and reuses it on later runs.

    .venv/bin/python bench/qido1m.py          # BENCH_QIDO_N=300 requests, release binary
"""
import os
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench  # noqa: E402

work = Path(os.environ.get("QIDO1M_DIR", "/var/tmp/vesalius-qido1m"))
data = work / "data"
keys_path = work / "keys.json"
import json  # noqa: E402

if not keys_path.exists():
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    srv = bench.Vesalius(data).start()  # creates the schema
    srv.stop()
    info, keys = bench.fill_index(data / "index.db", "default", random.Random(3))
    print(f"filled: {info}")
    keys_path.write_text(json.dumps(keys))
keys = json.loads(keys_path.read_text())
srv = bench.Vesalius(data).start()
try:
    for rnd in range(int(os.environ.get("QIDO1M_ROUNDS", "2"))):
        q = bench.run_qido(srv, bench.qido_queries(keys, bench.QIDO_N, random.Random(4 + rnd)))
        print(f"round {rnd}: p50 {q['p50'] * 1000:.2f} ms  p99 {q['p99'] * 1000:.2f} ms")
        for kind, (p50, p99, n) in q["by_kind"].items():
            print(f"  {kind:20} p50 {p50 * 1000:7.2f}  p99 {p99 * 1000:7.2f}  {n:6.1f} studies/answer")
finally:
    srv.stop()
