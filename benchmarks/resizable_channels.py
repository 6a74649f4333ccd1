"""How much of each torchvision model can be resized (issue 16): the fraction of its conv/linear
output channels that lie in resizable groups (``swin_coverage.resizable_fraction``; the
classifier's outputs count, frozen as the model output; ``fraction_without_output`` leaves them
out), and the most common reasons for the rest.

    python benchmarks/resizable_channels.py [--models a,b] [--skip-largest 10]

Shapes only: every model is built and traced on the meta device (RegNet's builder computes
widths with tensors, so it is built for real), so the sweep needs almost no memory. Writes
benchmarks/results/resizable_channels.json.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parent)]

from common import machine, write_json  # noqa: E402
from coverage_torchvision import RESOLUTION, build, candidates  # noqa: E402
from swin_coverage import resizable_fraction  # noqa: E402

import cgap_graph as cg  # noqa: E402


def one(name: str) -> dict:
    try:
        model, shape = build(name, "meta")
    except NotImplementedError:
        model, shape = build(name)
    t0 = time.perf_counter()
    g = cg.trace(model, shape)
    res, tot = resizable_fraction(g, model)
    reasons: collections.Counter = collections.Counter()
    for grp in g.groups:
        if not grp.resizable:
            reasons[grp.status().split(": ", 1)[-1].split(" (node")[0][:120]] += grp.width
    head = sum(grp.width for grp in g.groups if (grp.frozen or "").startswith("model output"))
    return {"model": name, "resizable_channels": res, "channels": tot, "fraction": round(res / max(1, tot), 4),
            "fraction_without_output": round(res / max(1, tot - head), 4),
            "frozen_reasons": reasons.most_common(4), "trace_s": round(time.perf_counter() - t0, 2),
            "resolution": RESOLUTION.get(name, 224)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=None, help="comma-separated subset (default: every model but the largest)")
    p.add_argument("--skip-largest", type=int, default=10)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    sized = candidates()
    names = args.models.split(",") if args.models else [n for n, _ in sized[:len(sized) - args.skip_largest]]
    rows = []
    for name in names:
        try:
            rows.append(one(name))
        except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
            rows.append({"model": name, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
        r = rows[-1]
        why = r.get("frozen_reasons", r.get("error"))
        print(f"{name:24s} {r.get('fraction', float('nan')) * 100:6.1f}% "
              f"{r.get('fraction_without_output', float('nan')) * 100:6.1f}%  {why}", flush=True)
        write_json("resizable_channels", {"machine": machine(), "rows": rows})
    ok = [r for r in rows if "fraction" in r]
    body = sorted(ok, key=lambda r: r["fraction_without_output"])
    print(f"{len(ok)} models; resizable fraction without the model output: median "
          f"{body[len(body) // 2]['fraction_without_output']:.3f}, lowest "
          + ", ".join(f"{r['model']} {r['fraction_without_output']:.3f}" for r in body[:5]))


if __name__ == "__main__":
    main()
