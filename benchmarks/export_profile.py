"""Where the ONNX export time goes on a Swin-like model (issue 16: 282 s on Swin-B).

    OMP_NUM_THREADS=1 python benchmarks/export_profile.py [--model swin_t] [--top 25]

One run each (the export is slow; figures are wall seconds on this machine, one thread):

- ``export_onnx`` end to end (``passes/export.py``: copy + re-trace + shrink, dynamo export with a
  dynamic batch, ONNX checker, ONNX Runtime comparison at two batch sizes);
- its stages one by one: the copy + trace + shrink, ``torch.export.export`` (capture),
  ``torch.onnx.export`` of the captured program with ``optimize=True`` (the default) and with
  ``optimize=False`` (translation only), ``onnx.checker`` with full shape inference, ONNX Runtime
  session creation and the comparison runs;
- a cProfile of the default ``torch.onnx.export`` call (top functions by cumulative time).

Writes benchmarks/results/export_profile.json.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import io
import pstats
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks")]

from common import machine, write_json  # noqa: E402
from coverage_torchvision import build  # noqa: E402

import cgap_graph as cg  # noqa: E402
from cgap_graph.passes.cgap.shrink import shrink  # noqa: E402
from cgap_graph.passes.export import _check, _compare, _quiet, export_onnx  # noqa: E402
from cgap_graph.verify import make_responsive, random_inputs  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t0, 2)


def _onnx(prog, example, optimize: bool):
    with _quiet():
        return torch.onnx.export(prog, tuple(example), dynamo=True, opset_version=18, input_names=["input"],
                                 output_names=["output"], external_data=False, optimize=optimize)


def stages(model, shape) -> tuple[dict, str]:
    t: dict[str, float] = {}
    g, t["copy_trace_shrink"] = timed(lambda: cg.trace(copy.deepcopy(model), shape))
    _, s = timed(lambda: shrink(g))
    t["copy_trace_shrink"] += s
    gm = g.module.eval()
    example = random_inputs(g, batch=2, seed=0)
    batch = torch.export.Dim("batch", min=1)
    with _quiet():
        ep, t["torch_export_capture"] = timed(lambda: torch.export.export(gm, tuple(example),
                                                                          dynamic_shapes=({0: batch},)))
    _, t["onnx_translate_no_optimize"] = timed(lambda: _onnx(ep, example, False))
    prof = cProfile.Profile()
    prof.enable()
    prog, t["onnx_translate_optimize"] = timed(lambda: _onnx(ep, example, True))
    prof.disable()
    with tempfile.TemporaryDirectory() as tmp:
        f = str(Path(tmp) / "m.onnx")
        _, t["save"] = timed(lambda: prog.save(f, external_data=False))
        import onnx
        proto = onnx.load(f)
    _, t["onnx_checker_full"] = timed(lambda: _check(proto))
    _, t["ort_session_and_compare"] = timed(lambda: _compare(proto, gm, g, True))
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(40)
    return t, buf.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="swin_t")
    p.add_argument("--top", type=int, default=40, help="lines of the cProfile table kept")
    args = p.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    model, shape = build(args.model)
    make_responsive(model, input_shape=shape)
    with tempfile.TemporaryDirectory() as tmp:
        rep, total = timed(lambda: export_onnx(model, shape, Path(tmp) / "m.onnx"))
    t, prof = stages(model, shape)
    row = {"model": args.model, "input": list(shape), "export_onnx_total_s": total, "exporter": rep.exporter,
           "dynamic_batch": rep.dynamic_batch, "notes": rep.notes, "stages_s": t,
           "profile_top": prof.splitlines()[: args.top + 10], "machine": machine()}
    print(f"{args.model}: export_onnx {total:.1f} s ({rep.exporter}, dynamic batch {rep.dynamic_batch})")
    for k, v in t.items():
        print(f"  {k:28s} {v:8.2f} s")
    with contextlib.suppress(Exception):
        print("\n".join(prof.splitlines()[:args.top + 10]))
    print(f"wrote {write_json('export_profile', row)}")


if __name__ == "__main__":
    main()
