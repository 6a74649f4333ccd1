"""Coverage sweep over torchvision's classification models, ours beside Torch-Pruning (issue 16).

    OMP_NUM_THREADS=1 python benchmarks/coverage_torchvision.py [--models a,b] [--skip-onnx]
        [--jobs 1] [--timeout 900] [--tp-timeout 300] [--skip-largest 10] [--update [--onnx-only]]

Every model runs in its own subprocess (a crash or a hang costs one model), at 224x224 (299 for
Inception v3), on a copy made responsive first (``verify.make_responsive``: norm statistics and
affine parameters randomised, zero-initialised heads re-drawn; if the output still barely depends
on its input, every conv/linear weight is re-drawn with He initialisation, at the largest gain of
``HE_GAINS`` whose copy is not chaotic (float32 rounding moving the output by at most 1e-5); then BatchNorm
statistics are measured on one random batch, so activations stay near unit scale and float32
rounding stays far below the tolerance), so that a channel mix-up cannot hide. Stages, each
recorded with its figure and time:

- ``trace``: ``cg.trace`` works; groups, prunable groups;
- ``grow``: preserve growth (beta 0.6) leaves outputs unchanged, relative <= 1e-4;
- ``prune``: removing 50% of every prunable group (magnitude) and shrinking runs, the pruned
  model runs;
- ``masked``: masked == shrunk, relative <= 1e-4, against the kept-channel-statistics reference
  (``verify.kept_stats_reference``; the plain masked model's figure is recorded beside it);
- ``onnx``: the pruned model exported (``passes.export.export_onnx``), ONNX Runtime == PyTorch,
  relative <= 1e-4;
- ``tp``: Torch-Pruning's MetaPruner at ratio 0.5 (L1 importance, the classifier ignored) runs
  and the pruned model's forward works.

The two oracles (``grow``, ``masked``) run on a float64 copy: a responsive copy can be so
sensitive that float32 rounding alone moves its output by more than the tolerance (EfficientNet-B1:
a 1e-7 input change moves the output by 1.3e-3), so a float32 oracle would fail correct surgery.
Their float32 figures (``rel_float32``) and each model's float32 noise floor (``float32_floor``,
the output change from a 1e-7 relative input change) are recorded beside them. The ONNX stage
exports the float32 model.

Relative = max |a - b| / max |b|. Results are written after every model to
benchmarks/results/coverage_torchvision.json (a partial sweep is a valid file).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks")]

from common import machine, write_json  # noqa: E402
from tv import import_torchvision  # noqa: E402

import cgap_graph as cg  # noqa: E402
from cgap_graph.passes.cgap.grow import grow  # noqa: E402
from cgap_graph.passes.cgap.prune import prune_units, remove_units  # noqa: E402
from cgap_graph.passes.cgap.saliency import saliency  # noqa: E402
from cgap_graph.passes.export import export_onnx  # noqa: E402
from cgap_graph.verify import (  # noqa: E402
    calibrate_norms,
    input_sensitivity,
    kept_stats_reference,
    make_responsive,
    output_tensor,
)

TOL = 1e-4
STAGES = ["trace", "grow", "prune", "masked", "onnx", "tp"]
RESOLUTION = {"inception_v3": 299}
MIN_SENSITIVITY = 1e-3  # below this the output barely depends on the input: weights are re-drawn
# re-drawn He weights at full gain make the deep EfficientNets chaotic (a 1e-13 input change moved
# EfficientNet-V2-L's float64 output by 32%): the gain is lowered until float32 rounding moves the
# output by at most MAX_FLOOR, so that the float64 oracles resolve far below the tolerance
HE_GAINS = (1.0, 0.5, 0.25, 0.125, 0.0625)
MAX_FLOOR = 1e-5


def build(name: str, device: str = "cpu") -> tuple[nn.Module, tuple[int, ...]]:
    tv = import_torchvision()
    kw = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    torch.manual_seed(0)  # the builders initialise from the global generator: one model per name
    with torch.device(device):
        model = tv.models.get_model(name, weights=None, **kw)
    res = RESOLUTION.get(name, 224)
    return model.eval(), (1, 3, res, res)


def candidates() -> list[tuple[str, int]]:
    """(name, parameters) of torchvision's classification models, smallest first (counted on
    the meta device: nothing is allocated)."""
    tv = import_torchvision()
    sizes = []
    for name in tv.models.list_models(module=tv.models):
        try:
            model, _ = build(name, "meta")
        except NotImplementedError:  # a builder that computes widths with tensors (RegNet)
            model, _ = build(name)
        sizes.append((name, sum(p.numel() for p in model.parameters())))
    return sorted(sizes, key=lambda r: r[1])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = output_tensor(a).double(), output_tensor(b).double()
    return float((a - b).abs().max() / max(1e-12, float(b.abs().max())))


def head_of(model: nn.Module) -> nn.Module:
    """The classifier Torch-Pruning must leave alone: the last Linear (SqueezeNet: the last conv)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]


# ---- the worker: one model, stage by stage ----------------------------------------------------
class Recorder:
    """Stage results, written to ``path`` after each stage (a timeout keeps what was done)."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.row = path, {"model": name, "stages": {}}

    def save(self) -> None:
        self.path.write_text(json.dumps(self.row))

    def stage(self, key: str, fn) -> object:
        t0 = time.perf_counter()
        rec = self.row["stages"].setdefault(key, {})
        try:
            out = fn(rec)
            rec.setdefault("ok", True)
        except Exception as exc:  # a model a stage cannot handle: recorded, the sweep goes on
            msg = str(exc).strip().splitlines()[0][:240] if str(exc).strip() else ""
            rec.update(ok=False, error=f"{type(exc).__name__}: {msg}")
            out = None
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        self.save()
        return out


def _responsive(name: str, rec: dict):
    model, shape = build(name)
    make_responsive(model, seed=0)
    g = torch.Generator().manual_seed(0)
    xa, xb = torch.randn(2, *shape[1:], generator=g), torch.randn(2, *shape[1:], generator=g)
    rec["sensitivity"] = input_sensitivity(model, [xa], [xb])
    calib = [torch.randn(2, *shape[1:], generator=g)]
    if rec["sensitivity"] < MIN_SENSITIVITY:
        for gain in HE_GAINS:  # the largest gain whose copy is not chaotic
            make_responsive(model, seed=0, he_all=True, he_gain=gain)
            calibrate_norms(model, calib)
            rec.update(he_all=True, he_gain=gain, float32_floor=_float32_floor(model, xa))
            if rec["float32_floor"] <= MAX_FLOOR:
                break
    else:
        calibrate_norms(model, calib)
    rec["sensitivity"] = input_sensitivity(model, [xa], [xb])
    rec["params"] = sum(p.numel() for p in model.parameters())
    rec["float32_floor"] = _float32_floor(model, xa)
    rec["ok"] = rec["sensitivity"] > 0
    return model, shape, xa


def _trace(model, shape, rec):
    g = cg.trace(model, shape)
    rec.update(groups=len(g.groups), prunable=sum(grp.prunable for grp in g.groups),
               inexact=sum(bool(grp.prune_notes) for grp in g.groups))
    return g


def _float32_floor(model, x) -> float:
    """Output change (relative) from a float32-rounding-sized input change (1e-7): a float32
    oracle cannot resolve less than this, which is why the oracles run in float64."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        return rel(model(x * (1 + 1e-7 * torch.randn(x.shape, generator=g))), model(x))


def _grow(model, shape, x, rec):
    """Preserve growth in float64 (the oracle), its float32 figure beside it."""
    for dtype, key in ((torch.float32, "rel_float32"), (torch.float64, "rel")):
        m = copy.deepcopy(model).to(dtype)
        g = cg.trace(m, shape, input_dtype=dtype)
        with torch.no_grad():
            ref = m(x.to(dtype))
            rep = grow(g, saliency(g, mode="magnitude"), 0.6, init="preserve")
            rec["grown_groups"], rec["skipped_groups"] = len(rep.picked), len(rep.skipped)
            rec[key] = rel(g.module.eval()(x.to(dtype)), ref)
    rec["ok"] = rec["rel"] <= TOL


def _prune(model, shape, x, rec):
    shrunk = cg.trace(model, shape)
    rep = prune_units(shrunk, saliency(shrunk, mode="magnitude"), 0.5)
    before = sum(p.numel() for p in model.parameters())
    rec["params_kept"] = shrunk.param_count() / before
    rec["pruned_groups"], rec["inexact_groups"] = len(rep.removed), len(rep.inexact)
    with torch.no_grad():
        shrunk.module.eval()(x)
    return shrunk, rep


def _masked(model, shape, x, shrunk, rep, rec):
    masked = cg.trace(model, shape)
    remove_units(masked, rep.removed, shrink=False)
    with torch.no_grad():
        out = shrunk.module.eval()(x)
        rec["rel_plain"] = rel(masked.module.eval()(x), out)
        rec["rel_float32"] = rel(kept_stats_reference(masked, rep.removed, [x]), out)
    # the oracle in float64: the same units removed from a float64 copy
    m64, x64 = copy.deepcopy(model).double(), x.double()
    shrunk64, masked64 = (cg.trace(m64, shape, input_dtype=torch.float64) for _ in range(2))
    remove_units(shrunk64, rep.removed)
    remove_units(masked64, rep.removed, shrink=False)
    with torch.no_grad():
        rec["rel"] = rel(kept_stats_reference(masked64, rep.removed, [x64]), shrunk64.module.eval()(x64))
    rec["ok"] = rec["rel"] <= TOL


def _onnx(shrunk, shape, rec):
    with tempfile.TemporaryDirectory() as tmp:
        r = export_onnx(shrunk.module, shape, Path(tmp) / "m.onnx", tolerance=1e9)
    rec.update(rel=r.max_abs_diff / max(1e-12, r.output_scale), exporter=r.exporter, dynamic=r.dynamic_batch)
    rec["ok"] = rec["rel"] <= TOL


def _tp(model, x, rec):
    import torch_pruning as tp
    m = copy.deepcopy(model)
    before = sum(p.numel() for p in m.parameters())
    pruner = tp.pruner.MetaPruner(m, x[:1], importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=0.5, ignored_layers=[head_of(m)])
    pruner.step()
    with torch.no_grad():
        y = m.eval()(x)
    rec["params_kept"] = sum(p.numel() for p in m.parameters()) / before
    rec["ok"] = tuple(output_tensor(y).shape) == tuple(output_tensor(model(x)).shape)


def worker(name: str, out: Path, skip_onnx: bool, part: str) -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    r = Recorder(out, name)
    built = r.stage("build", lambda rec: _responsive(name, rec))
    if built is None:
        return
    model, shape, x = built
    if part == "tp":
        r.stage("tp", lambda rec: _tp(model, x, rec))
        return
    if part == "onnx":  # the export alone, of the same pruned model
        pr = r.stage("prune", lambda rec: _prune(model, shape, x, rec))
        if pr is not None:
            r.stage("onnx", lambda rec: _onnx(pr[0], shape, rec))
        return
    g = r.stage("trace", lambda rec: _trace(model, shape, rec))
    if g is not None:
        r.stage("grow", lambda rec: _grow(model, shape, x, rec))
        pr = r.stage("prune", lambda rec: _prune(model, shape, x, rec))
        if pr is not None:
            r.stage("masked", lambda rec: _masked(model, shape, x, pr[0], pr[1], rec))
            if not skip_onnx:
                r.stage("onnx", lambda rec: _onnx(pr[0], shape, rec))


# ---- the driver -------------------------------------------------------------------------------
def run_one(name: str, skip_onnx: bool, timeout: int, tp_timeout: int, onnx_only: bool = False) -> dict:
    """Ours, then Torch-Pruning, each in its own subprocess and time limit."""
    if onnx_only:
        return run_part(name, False, timeout, "onnx")
    row = run_part(name, skip_onnx, timeout, "ours")
    tp = run_part(name, skip_onnx, tp_timeout, "tp")
    row["stages"]["tp"] = tp["stages"].get("tp", {"ok": False, "error": tp["status"]})
    row["tp_status"], row["seconds"] = tp["status"], row["seconds"] + tp["seconds"]
    return row


def run_part(name: str, skip_onnx: bool, timeout: int, part: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, __file__, "--worker", name, "--part", part, "--out", str(out)] + \
            ["--skip-onnx"] * skip_onnx
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
            status = "done" if proc.returncode == 0 else f"exit {proc.returncode}: " + \
                (proc.stderr.strip().splitlines()[-1][:200] if proc.stderr.strip() else "")
        except subprocess.TimeoutExpired:
            status = f"timeout after {timeout} s"
        row = json.loads(out.read_text()) if out.exists() else {"model": name, "stages": {}}
    row["status"], row["seconds"] = status, round(time.perf_counter() - t0, 1)
    return row


def passed(row: dict, stage: str) -> bool | None:
    """True/False, or None when the stage was not run (skipped, or an earlier stage failed)."""
    rec = row["stages"].get(stage)
    return None if rec is None else bool(rec.get("ok"))


def summary(rows: list[dict], skip_onnx: bool) -> dict:
    stages = [s for s in STAGES if not (skip_onnx and s == "onnx")]
    return {s: sum(passed(r, s) is True for r in rows) for s in stages} | {"models": len(rows)}


def print_table(rows: list[dict], skip_onnx: bool) -> None:
    from rich.console import Console
    from rich.table import Table
    stages = [s for s in STAGES if not (skip_onnx and s == "onnx")]
    table = Table(title="torchvision coverage (relative figures; pass <= 1e-4)")
    for col in ["model", "params (M)", *stages, "note"]:
        table.add_column(col)
    for r in rows:
        cells = []
        for s in stages:
            rec, ok = r["stages"].get(s, {}), passed(r, s)
            fig = f" {rec['rel']:.1e}" if "rel" in rec else ""
            cells.append("-" if ok is None else ("[green]ok[/green]" if ok else "[red]FAIL[/red]") + fig)
        errs = [f"{s}: {rec['error']}" for s, rec in r["stages"].items() if rec.get("error")]
        note = "; ".join(errs)[:90] or ("" if r["status"] == "done" else r["status"])
        params = r["stages"].get("build", {}).get("params", 0) / 1e6
        table.add_row(r["model"], f"{params:.1f}", *cells, note)
    s = summary(rows, skip_onnx)
    table.add_row("[b]passed[/b]", "", *[f"{s[k]}/{s['models']}" for k in stages], "")
    Console(width=200).print(table)


def markdown(rows: list[dict], skip_onnx: bool) -> str:
    """The README's summary: how many models pass each stage, ours beside Torch-Pruning."""
    s = summary(rows, skip_onnx)
    ours = [k for k in STAGES if k in s and k != "tp"]
    head = "| models | " + " | ".join(ours) + " | Torch-Pruning prunes + runs |"
    line = "| " + " | ".join(["---"] * (len(ours) + 2)) + " |"
    body = f"| {s['models']} | " + " | ".join(str(s[k]) for k in ours) + f" | {s['tp']} |"
    return "\n".join([head, line, body])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=None, help="comma-separated subset (default: every model but the largest)")
    p.add_argument("--skip-onnx", action="store_true")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--timeout", type=int, default=900, help="seconds per model")
    p.add_argument("--skip-largest", type=int, default=10)
    p.add_argument("--name", default="coverage_torchvision", help="results file name")
    p.add_argument("--tp-timeout", type=int, default=300, help="seconds per model for Torch-Pruning")
    p.add_argument("--show", action="store_true", help="print the table of the existing results file only")
    p.add_argument("--update", action="store_true",
                   help="re-run --models and replace their rows in the existing results file")
    p.add_argument("--onnx-only", action="store_true",
                   help="with --update: run only the ONNX stage (of the same pruned model) and merge it into each row")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--part", default="ours", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, Path(args.out), args.skip_onnx, args.part)
    if args.show:
        result = json.loads((ROOT / "benchmarks" / "results" / f"{args.name}.json").read_text())
        print_table(result["rows"], result["skip_onnx"])
        return print(markdown(result["rows"], result["skip_onnx"]))
    if import_torchvision() is None:
        sys.exit("torchvision is not installed: pip install --no-deps torchvision==0.28.0")
    sized = candidates() if not args.models else []
    keep = len(sized) - args.skip_largest
    names = args.models.split(",") if args.models else [n for n, _ in sized[:keep]]
    rows: list[dict] = []
    result = {"machine": machine(), "tolerance": TOL, "skip_onnx": args.skip_onnx,
              "skipped_largest": [n for n, _ in sized[keep:]], "rows": rows}
    if args.update:
        result = json.loads((ROOT / "benchmarks" / "results" / f"{args.name}.json").read_text())
        rows = result["rows"]
        result.setdefault("updated", []).append({"models": names, "machine": machine(), "onnx_only": args.onnx_only})
        result["skip_onnx"] = result["skip_onnx"] and (args.skip_onnx or not args.onnx_only)
    elif args.onnx_only:
        sys.exit("--onnx-only merges into an existing results file: add --update")
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for row in pool.map(lambda n: run_one(n, args.skip_onnx, args.timeout, args.tp_timeout, args.onnx_only),
                            names):
            row["run_at"] = time.strftime("%Y-%m-%d %H:%M")
            at = next((i for i, r in enumerate(rows) if r["model"] == row["model"]), None)
            if at is None:
                rows.append(row)
            elif args.onnx_only:  # the other stages stay as they were measured
                rows[at]["stages"]["onnx"] = row["stages"].get("onnx", {"ok": False, "error": row["status"]})
                rows[at]["onnx_status"], rows[at]["onnx_run_at"] = row["status"], row["run_at"]
            else:
                rows[at] = row
            result["summary"] = summary(rows, result["skip_onnx"])
            write_json(args.name, result)
            print(row["model"], row["status"], {s: passed(row, s) for s in STAGES}, flush=True)
    print_table(rows, result["skip_onnx"])
    print(markdown(rows, result["skip_onnx"]))
    print(f"wrote {write_json(args.name, result)}")


if __name__ == "__main__":
    main()
