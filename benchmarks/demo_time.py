"""Wall time of ``cgap-graph demo`` (issue #4 goal: under 3 minutes on 2 CPU cores).

    python benchmarks/demo_time.py [--repeats 1]

Runs the demo as a user would (a fresh process, the console script) into a temporary directory,
prints the time and the final line of the run, and writes benchmarks/results/demo_time.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json  # noqa: E402

GOAL_SECONDS = 180


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    exe = shutil.which("cgap-graph") or str(Path(sys.executable).parent / "cgap-graph")
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            proc = subprocess.run([exe, "demo", "--out", str(Path(tmp) / "demo")], capture_output=True, text=True)
            seconds = time.perf_counter() - t
            if proc.returncode != 0:
                sys.exit(f"cgap-graph demo failed:\n{proc.stdout}\n{proc.stderr}")
            summary = json.loads((Path(tmp) / "demo" / "summary.json").read_text())
        runs.append({"seconds": seconds, "test_accuracy": summary["test_accuracy"], "params": summary["params"]})
        print(f"cgap-graph demo: {seconds:.1f} s  test accuracy {100 * summary['test_accuracy']:.2f}%  "
              f"params {summary['params']:,}  (goal < {GOAL_SECONDS} s)")
    worst = max(r["seconds"] for r in runs)
    result = {"machine": machine(), "runs": runs, "goal_seconds": GOAL_SECONDS, "met": worst < GOAL_SECONDS}
    print(f"wrote {write_json('demo_time', result)}")


if __name__ == "__main__":
    main()
