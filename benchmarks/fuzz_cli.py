"""Fuzz the command line with many cases (the long version of tests/test_fuzz.py).

    python benchmarks/fuzz_cli.py --cases 5000

Each case is hostile or careless input (random, truncated or bit-flipped model, ONNX and TOML
files, crafted hostile model files, a damaged dataset, random option values and shapes), run
in-process; a case fails on an exit code other than 0 or 2, more than one line on stderr, a
traceback, a payload that ran, a file written outside the output path or a temporary file left.
Prints a table per kind and writes benchmarks/results/fuzz_cli.json.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks")]

from cli_fuzz import FuzzBench  # noqa: E402
from common import machine, write_json  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=5000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    rng = random.Random(args.seed)
    stats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        bench = FuzzBench(Path(tmp))
        os.chdir(bench.dir)
        for i in range(args.cases):
            case = bench.case(random.Random(rng.getrandbits(64)))
            outcome = bench.check(case)
            s = stats[case.kind]
            s["cases"] += 1
            s[f"exit {outcome.result.code}"] += 1
            if case.marker is not None:
                s["hostile files"] += 1
            for prob in outcome.problems:
                s[prob.split(" [")[0] if prob.startswith("wrote") else prob] += 1
            if outcome.problems:
                failures.append({"kind": case.kind, "argv": [str(a) for a in case.argv], "problems": outcome.problems,
                                 "stderr": outcome.result.err[-400:]})
            if (i + 1) % 500 == 0:
                print(f"{i + 1} cases, {len(failures)} failing", flush=True)
    seconds = time.perf_counter() - t0
    total = collections.Counter()
    for s in stats.values():
        total.update(s)
    print(f"{'kind':12s} {'cases':>6s} {'exit 0':>7s} {'exit 2':>7s} {'failing':>8s}")
    for kind, s in sorted(stats.items()):
        bad = sum(1 for f in failures if f["kind"] == kind)
        print(f"{kind:12s} {s['cases']:6d} {s['exit 0']:7d} {s['exit 2']:7d} {bad:8d}")
    tracebacks = sum(1 for f in failures if "traceback" in f["problems"])
    payloads = sum(1 for f in failures if "payload ran" in f["problems"])
    print(f"{args.cases} cases in {seconds:.0f} s: {len(failures)} failing, {tracebacks} tracebacks, "
          f"{payloads} payload runs, {total['hostile files']} hostile files")
    for f in failures[:10]:
        print("FAIL", f)
    result = {"machine": machine(), "cases": args.cases, "seed": args.seed, "seconds": seconds,
              "failing": len(failures), "tracebacks": tracebacks, "payload_runs": payloads,
              "by_kind": {k: dict(v) for k, v in stats.items()}, "failures": failures[:50]}
    print(f"wrote {write_json('fuzz_cli', result)}")


if __name__ == "__main__":
    main()
