"""Table IV of the CGaP paper: ResNet-20/56/110 and VGG-16 on CIFAR-10 (baseline, CGaP, pruning-only).

    CGAP_DATA_DIR=../shared/data python benchmarks/table4_cifar10.py --device cuda [--bf16] \\
        [--models resnet20,vgg16] [--methods baseline,cgap,pruning-only] [--epochs 200]
    python benchmarks/table4_cifar10.py --quick        # CPU smoke run (~1 min): proves the script works

The paper's schedule (Sec. V-A-c) is the default: 200 epochs, SGD, lr 0.1 divided by 10 at every
30% of the epochs, momentum 0.9, weight decay 5e-4, batch 128; growth ratio beta 0.6 every 3
epochs (f_growth 1/3) up to the baseline widths (tau_capa), Eq. 5-10 initialiser (sigma 0.5,
mu 0.1); Algorithm 3 every epoch (f_pruning 1) with gamma_F = gamma_W. What the paper leaves open
is set here and stated in the JSON: the seed is 1/8 of the reference widths (its VGG-19 seed has
8 of 64 filters in conv1_1, Fig. 9); gamma_W = 0.5 in every layer (it follows Li et al. for VGG
and network slimming for ResNets, which prune about half the filters of the layers they prune);
pruning starts once the training accuracy exceeds tau_accu = 0.8, in the window 30%-60% of the
run, and stops at a parameter budget: the paper's own CGaP size as a fraction of its baseline
(ResNet-20, not in the paper, takes ResNet-56's fraction). A shorter ``--epochs`` grows
proportionally more often so growth ends at the same fraction of the run (every 3 epochs at 200).

- baseline: the full-width model trained for ``--epochs``;
- CGaP: seed -> grow -> prune -> fine-tune, driven by the project's CGaP hook (cgap_graph.run.hook);
- pruning-only (the paper's definition: prune and fine-tune, no growth): Algorithm 3 through the
  same hook applied to the trained baseline every epoch until it fits CGaP's final size, then
  fine-tuned (``--ft-epochs``, 30% of the run by default, from lr 0.01).

Training runs on ``cifar_fast``'s resident-data path (crop/flip as tensor ops, channels-last and
``--bf16`` on the GPU); ``table4_run`` checkpoints every epoch, so the same command resumes a killed
run. Rows are written to the results JSON after each run, beside the paper's Table IV numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cifar_fast import DeviceData, FastOptions, bf16_channels_last_safe  # noqa: E402
from common import machine  # noqa: E402
from table4_run import RunSpec, run  # noqa: E402

import cgap_graph as cg  # noqa: E402
from cgap_graph import zoo  # noqa: E402
from cgap_graph.errors import CgapError  # noqa: E402
from cgap_graph.io.atomic import atomic_write_text  # noqa: E402
from cgap_graph.passes.cgap.seed import seed as seed_pass  # noqa: E402
from cgap_graph.run import data  # noqa: E402
from cgap_graph.run.config import TrainConfig  # noqa: E402

MODELS = ("resnet20", "resnet56", "resnet110", "vgg16")
METHODS = ("baseline", "cgap", "pruning-only")
# Table IV of the paper: (method, accuracy %, FLOPs, FLOPs pruned %, params, params pruned %)
PAPER = {
    "vgg16": [("VGG16-Baseline", 93.25, 630e6, None, 15.3e6, None),
              ("Pruning [14] (Li et al.)", 93.40, 410e6, 34.9, 5.4e6, 64.7),
              ("CGaP", 93.59, 280e6, 56.2, 4.5e6, 70.6)],
    "resnet56": [("ResNet-56-Baseline", 93.03, 268e6, None, 0.85e6, None),
                 ("Pruning [25] (Liu et al.)", 92.56, 182e6, 32.1, 0.73e6, 14.1),
                 ("CGaP", 93.20, 181e6, 32.5, 0.53e6, 37.6)],
    "resnet110": [("ResNet-110-Baseline", 93.34, 523e6, None, 1.72e6, None),
                  ("Pruning [14] (Li et al.)", 93.11, 310e6, 40.7, 1.16e6, 32.6),
                  ("Pruning [26] (He et al.)", 93.52, 300e6, 40.8, None, None),
                  ("CGaP", 93.43, 192e6, 63.3, 0.62e6, 64.0)],
}
# CGaP's final size as a fraction of the baseline, from the paper's rows (ResNet-20: ResNet-56's)
TARGET_FRAC = {"vgg16": 4.5 / 15.3, "resnet56": 0.53 / 0.85, "resnet110": 0.62 / 1.72, "resnet20": 0.53 / 0.85}
QUICK = dict(epochs=4, train_limit=512, test_limit=256, width=0.5, seed_width=0.25, growth_every=1,
             prune_start=0.75, prune_end=0.75, tau_accu=0.0, target_frac=0.25, ft_epochs=2, saliency_batches=2,
             batch_size=64)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a = p.add_argument
    a("--device", default="cpu", help="cpu, cuda or cuda:N")
    a("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    a("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    a("--epochs", type=int, default=200)
    a("--bf16", action="store_true", help="bf16 autocast for the training and evaluation forward passes")
    a("--channels-last", choices=("auto", "on", "off"), default="auto", help="auto: on for CUDA")
    a("--batch-size", type=int, default=128)
    a("--seed", type=int, default=0)
    a("--width", type=float, default=1.0, help="reference width multiplier (1: the paper's models)")
    a("--seed-width", type=float, default=0.125, help="CGaP's seed, a fraction of the reference widths")
    a("--beta", type=float, default=0.6)
    a("--growth-every", type=int, default=None, help="epochs between growths (default: 3 at 200 epochs, scaled)")
    a("--tau-accu", type=float, default=0.8, help="training accuracy that must be exceeded before pruning")
    a("--gamma-w", type=float, default=0.5, help="Algorithm 3's weight (and unit) pruning rate")
    a("--prune-start", type=float, default=0.3)
    a("--prune-end", type=float, default=0.6)
    a("--target-frac", type=float, default=None, help="parameter budget as a fraction of the baseline "
      "(default: the paper's CGaP fraction per model; 0: no budget, Algorithm 3's rates alone)")
    a("--ft-epochs", type=int, default=None, help="pruning-only fine-tuning epochs (default: 30%% of --epochs)")
    a("--ft-lr", type=float, default=0.01)
    a("--saliency-batches", type=int, default=10)
    a("--train-limit", type=int, default=None)
    a("--test-limit", type=int, default=None)
    a("--data-dir", default=None, help="folder holding cifar-10/ (default: $CGAP_DATA_DIR)")
    a("--out", type=Path, default=None, help="run folders (default: runs/table4, quick: runs/table4_quick)")
    a("--results", type=Path, default=None, help="results JSON (default: benchmarks/results/table4_cifar10.json; "
      "other schedules get their own name; quick: OUT/table4_cifar10_quick.json)")
    a("--fresh", action="store_true", help="delete these models' run folders (all methods) first, not resume")
    a("--stop-after", type=int, default=None, help="leave each run after N epochs of this call (resume test)")
    a("--plan", action="store_true", help="print each run's schedule and exit (no training)")
    a("--threads", type=int, default=None, help="torch CPU threads")
    a("--quick", action="store_true", help="CPU smoke run: 512 images, 4 epochs, half-width ResNet-20")
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            if getattr(args, k) == p.get_default(k):
                setattr(args, k, v)
        if args.models == p.get_default("models"):
            args.models = "resnet20"
    return _check(p, args)


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for kind, got, known in (("model", args.models, MODELS), ("method", args.methods, METHODS)):
        bad = [m for m in got if m not in known]
        if bad or not got:
            p.error(f"unknown {kind} {', '.join(bad) or '(none given)'}; choose from {', '.join(known)}")
    if args.epochs < 1:
        p.error(f"--epochs must be at least 1, got {args.epochs}")
    if args.growth_every is None:
        args.growth_every = max(1, round(3 * args.epochs / 200))
    if args.ft_epochs is None:
        args.ft_epochs = max(1, round(0.3 * args.epochs))
    tag = "quick" if args.quick else ("" if args.epochs == 200 and args.width == 1 and not args.train_limit
                                      else f"e{args.epochs}" + (f"_n{args.train_limit}" if args.train_limit else ""))
    args.out = args.out or ROOT / "runs" / ("table4_quick" if args.quick else "table4")
    default = (args.out / "table4_cifar10_quick.json" if args.quick else
               ROOT / "benchmarks" / "results" / f"table4_cifar10{'_' + tag if tag else ''}.json")
    args.results = args.results or default
    return args


def base_config(args, **kw) -> TrainConfig:
    return TrainConfig(batch_size=args.batch_size, seed=args.seed, saliency_batches=args.saliency_batches,
                       device=args.device, train_limit=args.train_limit, test_limit=args.test_limit,
                       **kw).validate()


def reference_params(args, model: str) -> int:
    return cg.trace(zoo.build(model, width=args.width), (1, 3, 32, 32)).param_count()


def target_of(args, model: str) -> int | None:
    frac = TARGET_FRAC[model] if args.target_frac is None else args.target_frac
    return None if frac <= 0 else max(1, int(round(frac * reference_params(args, model))))


def schedule(args) -> dict:
    """The settings every run of this invocation shares (part of each run's fingerprint)."""
    return {"width": args.width, "train_limit": args.train_limit, "test_limit": args.test_limit,
            "bf16": args.bf16, "quick": args.quick}


def spec_baseline(args, model: str) -> RunSpec:
    cfg = base_config(args, epochs=args.epochs, f_growth=0, f_pruning=0)
    return RunSpec(f"{model}/baseline", args.out / model / "baseline", cfg,
                   lambda: zoo.build(model, width=args.width),
                   {"model": model, "method": "baseline", **schedule(args), **cfg.to_dict(), "device": None})


def spec_cgap(args, model: str) -> RunSpec:
    cfg = base_config(args, epochs=args.epochs, beta=args.beta, f_growth=1 / args.growth_every, init="paper",
                      sigma=0.5, mu=0.1, tau_accu=args.tau_accu, f_pruning=1.0, gamma_w=args.gamma_w,
                      prune_start=args.prune_start, prune_end=args.prune_end, prune_target=target_of(args, model),
                      saliency="taylor")
    g = cg.trace(zoo.build(model, width=args.width), (1, 3, 32, 32))
    rep = seed_pass(g, args.seed_width, select="first", reinit=True, generator_seed=args.seed)
    return RunSpec(f"{model}/cgap", args.out / model / "cgap", cfg, lambda: g.module,
                   {"model": model, "method": "cgap", "seed_width": args.seed_width, **schedule(args),
                    **cfg.to_dict(), "device": None}, reference_widths=rep.reference_widths)


def spec_pruning_only(args, model: str, baseline: dict, target: int | None) -> RunSpec:
    cfg = base_config(args, epochs=args.ft_epochs, lr=args.ft_lr, f_growth=0, f_pruning=1.0, tau_accu=0.0,
                      gamma_w=args.gamma_w, prune_start=0.0, prune_end=0.5, prune_target=target, saliency="taylor")
    path = args.out / model / "baseline" / "model.pt"
    return RunSpec(f"{model}/pruning-only", args.out / model / "pruning_only", cfg,
                   lambda: cg.load_model(str(path)).model,
                   {"model": model, "method": "pruning-only", **schedule(args), **cfg.to_dict(), "device": None,
                    "from_baseline": [baseline["epochs"], baseline["accuracy"], baseline["params"]]})


def _row(model: str, method: str, summary: dict, base: dict | None) -> dict:
    row = {"model": model, "method": method, **{k: v for k, v in summary.items() if k != "settings"}}
    if base is not None:
        row["params_pruned_pct"] = 100 * (1 - summary["params"] / base["params"])
        row["flops_pruned_pct"] = 100 * (1 - summary["flops"] / base["flops"])
    if method == "pruning-only" and base is not None:  # it also paid for training the baseline
        row["train_flops_total"] = summary["train_flops"] + base["train_flops"]
        row["seconds_total"] = summary["seconds"] + base["seconds"]
    return row


def run_model(args, model: str, train: DeviceData, test: DeviceData, opts: FastOptions, emit) -> bool:
    """The methods asked for, in order; pruning-only needs the trained baseline (run if missing).
    False when ``--stop-after`` left a run unfinished."""
    base = None
    go = lambda spec: run(spec, train, test, opts, stop_after=args.stop_after)  # noqa: E731
    if "baseline" in args.methods or "pruning-only" in args.methods:
        base = go(spec_baseline(args, model))
        if base is None:
            return False
        if "baseline" in args.methods:
            emit(_row(model, "baseline", base, None))
    target = target_of(args, model)
    finished = args.out / model / "cgap" / "summary.json"
    if "cgap" not in args.methods and finished.exists():  # a CGaP run of an earlier call sets the size
        target = json.loads(finished.read_text())["params"]
    if "cgap" in args.methods:
        summary = go(spec_cgap(args, model))
        if summary is None:
            return False
        target = summary["params"]
        emit(_row(model, "cgap", summary, base))
    if "pruning-only" in args.methods:
        summary = go(spec_pruning_only(args, model, base, target))
        if summary is None:
            return False
        emit(_row(model, "pruning-only", summary, base))
    return True


def plan(args) -> None:
    """Each run's schedule, without training (checks the arguments and the data)."""
    data.load_arrays("cifar10", "test", args.data_dir)
    for model in args.models:
        ref = reference_params(args, model)
        flops = cg.trace(zoo.build(model, width=args.width), (1, 3, 32, 32)).flops()
        n = args.train_limit or 50_000
        step = max(1, round(0.3 * args.epochs))
        print(f"{model}: reference {ref:,} params, {flops / 1e6:.1f}M FLOPs; baseline {args.epochs} epochs, "
              f"lr 0.1 / 10 after epochs {list(range(step, args.epochs, step))}, "
              f"~{3 * flops * n * args.epochs / 1e15:.2f} PFLOP of training")
        print(f"  cgap: seed x{args.seed_width}, grow x{1 + args.beta:.1f} every {args.growth_every} epochs up to the "
              f"reference, prune (gamma_W {args.gamma_w}) at train acc > {args.tau_accu} in epochs "
              f"{max(1, round(args.prune_start * args.epochs))}-{round(args.prune_end * args.epochs)} "
              f"to <= {target_of(args, model)} params")
        print(f"  pruning-only: trained baseline -> CGaP's final size, {args.ft_epochs} epochs from lr {args.ft_lr}")
    print(f"methods {', '.join(args.methods)}; runs in {args.out}; results to {args.results}; device {args.device}"
          f"{' (bf16)' if args.bf16 else ''}")


def write_results(args, rows: list[dict]) -> None:
    """Rows of this invocation, plus earlier ones of other models/methods on the same schedule."""
    sched = {**schedule(args), "epochs": args.epochs, "ft_epochs": args.ft_epochs}
    keep = []
    if args.results.exists():
        try:
            old = json.loads(args.results.read_text())
            if old.get("schedule") == sched:
                done = {(r["model"], r["method"]) for r in rows}
                keep = [r for r in old.get("rows", []) if (r["model"], r["method"]) not in done]
        except (json.JSONDecodeError, KeyError, TypeError):
            keep = []
    out = {"machine": machine(), "device": args.device, "schedule": sched,
           "args": {k: str(v) for k, v in vars(args).items()}, "paper": PAPER, "rows": keep + rows}
    if args.device.startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.results, json.dumps(out, indent=2) + "\n")


def _paper_row(model: str, method: str):
    rows = PAPER.get(model, [])
    want = {"baseline": "Baseline", "cgap": "CGaP", "pruning-only": "Pruning"}[method]
    return next((r for r in rows if want in r[0]), None)


def _fmt(v, unit: float, suffix: str, digits: int = 2) -> str:
    return "-" if v is None else f"{v / unit:.{digits}f}{suffix}"


def _si(v: float) -> str:
    """FLOPs with a unit that keeps 3 significant digits (G, T or P)."""
    unit, suffix = next(((u, s) for u, s in ((1e15, "P"), (1e12, "T")) if v >= u), (1e9, "G"))
    return f"{v / unit:.3g}{suffix}"


def print_table(args, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"Table IV: CIFAR-10, {args.epochs} epochs ({args.device}{', bf16' if args.bf16 else ''})"
              + (" [QUICK: smoke run, numbers mean nothing]" if args.quick else ""), header_style="bold")
    for col in ("model", "method", "acc", "params", "pruned", "nonzero", "FLOPs", "pruned", "train FLOPs",
                "wall", "s/epoch", "paper acc", "paper params", "paper FLOPs"):
        t.add_column(col, justify="left" if col in ("model", "method") else "right")
    for r in rows:
        p = _paper_row(r["model"], r["method"])
        tf = r.get("train_flops_total", r["train_flops"])
        wall = r.get("seconds_total", r["seconds"])
        pct = lambda k: "-" if k not in r else f"{r[k]:.1f}%"  # noqa: E731
        t.add_row(r["model"], r["method"], f"{100 * r['accuracy']:.2f}%", _fmt(r["params"], 1e6, "M", 3),
                  pct("params_pruned_pct"), _fmt(r["nonzero_params"], 1e6, "M", 3), _fmt(r["flops"], 1e6, "M", 1),
                  pct("flops_pruned_pct"), _si(tf), f"{wall / 60:.1f} min",
                  f"{r['seconds_per_epoch']:.1f}", "-" if p is None else f"{p[1]:.2f}%", _fmt(p and p[4], 1e6, "M"),
                  _fmt(p and p[2], 1e6, "M", 0))
    for model in dict.fromkeys(r["model"] for r in rows):
        for name, acc, flops, _fp, params, _pp in PAPER.get(model, [])[1:-1]:
            if _paper_row(model, "pruning-only")[0] != name:  # the paper's other pruning rows
                t.add_row(model, f"(paper) {name}", "-", "-", "-", "-", "-", "-", "-", "-", "-", f"{acc:.2f}%",
                          _fmt(params, 1e6, "M"), _fmt(flops, 1e6, "M", 0))
    Console(width=200).print(t)
    print("training FLOPs: 3 x forward FLOPs per image, saliency batches included; pruning-only's include "
          "the baseline it starts from. FLOPs = 2 x MACs (the paper's count).")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.plan:
            plan(args)
            return 0
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise CgapError(f"--device {args.device}: no CUDA device here; use --device cpu (or --quick)")
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.set_float32_matmul_precision("high")
        cl = args.channels_last == "on" or (args.channels_last == "auto" and device.type == "cuda")
        if args.bf16 and cl and not bf16_channels_last_safe(device):
            raise CgapError("--bf16 with --channels-last on: this CPU has no native bf16 and PyTorch's backward "
                            "crashes on that combination here; drop one of them (or use --device cuda)")
        opts = FastOptions(device, bf16=args.bf16, channels_last=cl, batch_size=args.batch_size)
        for m in args.models:  # every setting checked before anything trains
            spec_cgap(args, m), spec_pruning_only(args, m, {"epochs": 0, "accuracy": 0, "params": 0}, None)
        if args.fresh:

            for m in args.models:
                shutil.rmtree(args.out / m, ignore_errors=True)
        t = time.perf_counter()
        train = DeviceData.load("train", device, args.train_limit, args.data_dir)
        test = DeviceData.load("test", device, args.test_limit, args.data_dir)
        print(f"CIFAR-10 on {device}: {len(train)} training, {len(test)} test images ({time.perf_counter() - t:.1f}s)")
        rows: list[dict] = []

        def emit(row: dict) -> None:
            rows.append(row)
            write_results(args, rows)

        for model in args.models:
            if not run_model(args, model, train, test, opts, emit):
                print("stopped (--stop-after): the same command resumes")
                return 0
    except CgapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_table(args, rows)
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
