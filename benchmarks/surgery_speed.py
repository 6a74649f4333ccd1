"""Surgery end to end against Torch-Pruning and against the clone-time limit (issue 12).

    python benchmarks/surgery_speed.py [--repeats 3] [--models resnet18,vit_b_16] [--quick]

For each model, in one interleaved run (one thread, medians of ``--repeats``, the order of the
steps rotated each repeat):

- (a) trace + analysis (``cgap_graph.trace``) against Torch-Pruning's ``DependencyGraph.build_dependency``;
- (b) from the ``nn.Module``: trace + magnitude scores + remove 50% of every prunable group + shrink,
  against Torch-Pruning's MetaPruner (graph build + L1 importance + one step at ratio 0.5, the
  classifier head ignored). Both change the model they are given, each on its own deep copy made
  untimed (``trace(..., inplace=True)``, as Torch-Pruning prunes in place); ``prune_copy`` is the
  default path, which leaves the model untouched and so copies every weight itself;
- (c) trace + magnitude scores + grow every growable group by beta 0.6 (``preserve``, in place);
- (d) the limit: cloning the model's parameters once (``state_dict`` clone): a surgery must at
  least copy what it keeps.

Untimed, on a copy whose norms and zero-initialised parameters are randomised so a channel mix-up
cannot hide: masked == shrunk (max |diff| relative to max |output|) after (b). Then a transformer of
over 1B parameters is traced and a pruning plan made on the meta device (time and peak memory, in
a subprocess). Writes benchmarks/results/surgery_speed.json.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks")]

from common import RESULTS, machine, write_json  # noqa: E402
from tv import import_torchvision  # noqa: E402

import cgap_graph as cg  # noqa: E402
from cgap_graph.passes.cgap.grow import grow  # noqa: E402
from cgap_graph.passes.cgap.prune import prune_units, remove_units  # noqa: E402
from cgap_graph.passes.cgap.saliency import saliency  # noqa: E402
from cgap_graph.verify import make_responsive  # noqa: E402

TORCHVISION = [("resnet18", 224), ("resnet50", 224), ("mobilenet_v2", 224), ("mobilenet_v3_large", 224),
               ("efficientnet_b0", 224), ("densenet121", 224), ("googlenet", 224), ("inception_v3", 299),
               ("regnet_y_400mf", 224), ("convnext_tiny", 224), ("vit_b_16", 224), ("swin_t", 224)]
ZOO = ["resnet56", "resnet110", "vgg16", "densenet", "mobilenetv2", "se_resnet", "vit"]


def build(name: str):
    """(model, input shape, classifier head) for a torchvision or zoo name."""
    if name in ZOO:
        model = cg.zoo.build(name).eval()
        return model, cg.zoo.input_shape(name)
    import torchvision.models as M
    res = dict(TORCHVISION)[name]
    kw = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    model = getattr(M, name)(**kw).eval()
    return model, (1, 3, res, res)


def head_of(model: nn.Module) -> nn.Module:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1]


def ours_prune(model, shape, inplace: bool = False):
    g = cg.trace(model, shape, inplace=inplace)
    rep = prune_units(g, saliency(g, mode="magnitude"), 0.5)
    return g, rep


def ours_grow(model, shape, inplace: bool = False):
    g = cg.trace(model, shape, inplace=inplace)
    grow(g, saliency(g, mode="magnitude"), 0.6, init="preserve")
    return g


def tp_build(model, example):
    import torch_pruning as tp
    return tp.DependencyGraph().build_dependency(model, example_inputs=example)


def tp_prune(model, example):
    import torch_pruning as tp
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=0.5, ignored_layers=[head_of(model)])
    pruner.step()
    return model


def clone(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def timed(fn) -> float:
    gc.collect()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def masked_vs_shrunk(model, shape) -> tuple[float, bool]:
    """Relative max |masked - shrunk| after removing the lowest half of every group, and whether
    any removed group reports inexact (normalised across channels)."""
    probe = make_responsive(copy.deepcopy(model)).eval()
    x = torch.randn(2, *shape[1:], generator=torch.Generator().manual_seed(0))
    shrunk = cg.trace(probe, shape)
    sal = saliency(shrunk, mode="magnitude")
    rep = prune_units(shrunk, sal, 0.5)
    masked = cg.trace(probe, shape)
    remove_units(masked, rep.removed, shrink=False)
    with torch.no_grad():
        a, b = masked.module(x), shrunk.module(x)
    return float((a - b).abs().max() / max(1e-12, float(a.abs().max()))), bool(rep.inexact)


TOOL_LIMIT = 300  # seconds a single Torch-Pruning run may take before it is recorded as timed out


def _with_limit(fn, seconds: int):
    """Run ``fn`` with a SIGALRM limit (Torch-Pruning on Swin-T ran for over 10 minutes)."""
    def stop(*_):
        raise TimeoutError(f"over {seconds} s")
    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        return fn()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def measure(name: str, repeats: int) -> dict:
    warnings.filterwarnings("ignore")
    model, shape = build(name)
    example = torch.randn(*shape)
    row = {"model": name, "input": list(shape), "params": sum(p.numel() for p in model.parameters())}
    # "prune", "grow" and Torch-Pruning's step change the model they are given: each gets a fresh
    # deep copy, made untimed; "prune_copy" is the default path, which copies every weight itself
    fns = {
        "trace": lambda m: cg.trace(m, shape),
        "tp_build": lambda m: tp_build(m, example),
        "prune": lambda m: ours_prune(m, shape, inplace=True),
        "tp_prune": lambda m: tp_prune(m, example),
        "prune_copy": lambda m: ours_prune(m, shape),
        "grow": lambda m: ours_grow(m, shape, inplace=True),
        "clone": lambda m: clone(m),
    }
    consumes = {"prune", "tp_prune", "grow"}
    times = {k: [] for k in fns}
    errors = {}
    keys = list(fns)
    for rep in range(repeats):
        # the order rotates each repeat: what ran before moves a step's time by up to 1.5x here
        # (memory the allocator kept or gave back), so no step always follows the same one
        for key in keys[rep % len(keys):] + keys[:rep % len(keys)]:
            fn = fns[key]
            if key in errors:
                continue
            try:
                m = copy.deepcopy(model) if key in consumes else model
                if key == "tp_prune":
                    times[key].append(_with_limit(lambda m=m: timed(lambda: fn(m)), TOOL_LIMIT))
                else:
                    times[key].append(timed(lambda m=m, fn=fn: fn(m)))
            except Exception as exc:  # a tool that cannot handle the model: recorded, not fatal
                errors[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    for key, ts in times.items():
        row[key] = statistics.median(ts) if ts else None
    row["errors"] = errors
    try:
        row["masked_vs_shrunk"], row["inexact_groups"] = masked_vs_shrunk(model, shape)
    except Exception as exc:
        row["masked_vs_shrunk"], errors["oracle"] = None, f"{type(exc).__name__}: {str(exc)[:160]}"
    return row


BIG_PLAN = r"""
import json, resource, sys, time, torch
import cgap_graph as cg
from cgap_graph.zoo.transformer import VisionTransformer
def peak_mb():
    # VmHWM starts afresh at exec; ru_maxrss would carry the parent benchmark's peak over a fork
    try:
        line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
with torch.device("meta"):
    model = VisionTransformer(dim=2304, depth=24, heads=18, num_classes=1000)
params = sum(p.numel() for p in model.parameters())
t1 = time.perf_counter()
g = cg.trace(model, (1, 3, 32, 32))
t2 = time.perf_counter()
plan = {grp.id: list(range(grp.width // 2)) for grp in g.groups if grp.prunable}
widths = {grp.id: len(v) for grp, v in zip([g.group(i) for i in plan], plan.values())}
t3 = time.perf_counter()
print(json.dumps({"params": params, "build_s": t1 - t0, "trace_s": t2 - t1, "plan_s": t3 - t2,
                  "groups": len(g.groups), "prunable": len(plan),
                  "peak_rss_mb": peak_mb()}))
"""


def big_plan() -> dict:
    out = subprocess.run([sys.executable, "-c", BIG_PLAN], capture_output=True, text=True, timeout=600,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--models", default=None, help="comma-separated subset")
    p.add_argument("--append", action="store_true", help="keep the saved rows of the models not in --models")
    p.add_argument("--quick", action="store_true", help="two zoo models, one repeat: checks the script runs")
    args = p.parse_args()
    torch.set_num_threads(1)
    _cap_memory()
    have_tv = import_torchvision() is not None
    names = [n for n, _ in TORCHVISION] * have_tv + ZOO
    if args.models:
        names = args.models.split(",")
    if args.quick:
        names, args.repeats = ["resnet56", "vit"], 1
    rows = []
    if args.append and (RESULTS / "surgery_speed.json").exists():  # keep the rows of models not re-run
        rows = [r for r in json.loads((RESULTS / "surgery_speed.json").read_text())["rows"] if r["model"] not in names]
    result = {"machine": machine(), "repeats": args.repeats, "rows": rows, "big_plan": {}, "torchvision": have_tv}
    for name in names:
        row = measure(name, args.repeats)
        rows.append(row)
        print(_line(row), flush=True)
        write_json("surgery_speed", result, args.quick)  # after every model: a killed run keeps its rows
    result["big_plan"] = big = big_plan() if not args.quick else {}
    if big:
        print(f"1B plan: {big}")
    print(f"wrote {write_json('surgery_speed', result, args.quick)}")


def _cap_memory(fraction: float = 0.75) -> None:
    """Cap this process's address space, so that a tool that runs away (Torch-Pruning on Swin-T
    filled 24 GB within its time limit) fails with MemoryError, recorded, instead of the kernel
    killing the whole benchmark."""
    try:
        import resource
        limit = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * fraction)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (ImportError, ValueError, OSError):
        pass


def _ratio(a, b):
    return f"{a / b:6.1f}x" if a and b else "   n/a"


def _line(r: dict) -> str:
    ms = lambda k: f"{1e3 * r[k]:8.1f}" if r.get(k) else "     n/a"  # noqa: E731
    return (f"{r['model']:20s} {r['params'] / 1e6:7.1f}M  trace {ms('trace')} tp {ms('tp_build')} "
            f"{_ratio(r.get('tp_build'), r.get('trace'))} | prune {ms('prune')} tp {ms('tp_prune')} "
            f"{_ratio(r.get('tp_prune'), r.get('prune'))} (copying {ms('prune_copy')}) | grow {ms('grow')} "
            f"| clone {ms('clone')} "
            f"prune/clone {_ratio(r.get('prune'), r.get('clone'))} | m==s {r.get('masked_vs_shrunk')} "
            f"{'inexact' if r.get('inexact_groups') else ''} {r['errors'] or ''}")


def markdown(result: dict) -> str:
    """The README table of a result JSON (``--show``)."""
    out = ["| model | params | trace | TP build | (a) | prune | MetaPruner | (b) | prune, copying | grow | clone "
           "| prune / clone | grow / clone | masked vs shrunk |", "| --- " + "| ---: " * 13 + "|"]
    ms = lambda r, k: f"{1e3 * r[k]:,.0f} ms" if r.get(k) else "n/a"  # noqa: E731
    x = lambda a, b: f"{a / b:.1f}x" if a and b else "n/a"  # noqa: E731
    for r in result["rows"]:
        ms_err = r.get("masked_vs_shrunk")
        oracle = "n/a" if ms_err is None else f"{ms_err:.1e}"
        oracle += " (inexact reported)" if r.get("inexact_groups") else ""
        out.append(f"| {r['model']} | {r['params'] / 1e6:.1f}M | {ms(r, 'trace')} | {ms(r, 'tp_build')} | "
                   f"{x(r.get('tp_build'), r.get('trace'))} | {ms(r, 'prune')} | {ms(r, 'tp_prune')} | "
                   f"{x(r.get('tp_prune'), r.get('prune'))} | {ms(r, 'prune_copy')} | {ms(r, 'grow')} | "
                   f"{ms(r, 'clone')} | "
                   f"{x(r.get('prune'), r.get('clone'))} | {x(r.get('grow'), r.get('clone'))} | {oracle} |")
    return "\n".join(out)


if __name__ == "__main__":
    if sys.argv[1:] == ["--show"]:
        print(markdown(json.loads((RESULTS / "surgery_speed.json").read_text())))
    else:
        main()
