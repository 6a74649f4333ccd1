"""Table I of the CGaP paper as a study: LeNet-5 on MNIST, several seeds per method, both counts.

    CGAP_DATA_DIR=../shared/data python benchmarks/table1_study.py [--epochs 30] [--seeds 0,1,2] [--workers 2]
    python benchmarks/table1_study.py --table        # aggregate what has finished, print, write JSON

Every run is one job (a subprocess with one CPU thread) whose summary lands in OUT/JOB/study.json,
so the study resumes where it stopped and runs ``--workers`` jobs at a time. Jobs:

- ``base{E}_s{k}``: LeNet-5 (20-50-500-10) trained for E epochs (paper schedule: SGD, lr 0.1 / 10 at
  every 30% of the epochs, momentum 0.9, weight decay 5e-4, batch 128);
- ``cgap_s{k}``: CGaP from a seed a quarter as wide (Algorithm 1: growth every 3 epochs, beta 0.6, the
  Eq. 5-10 initialiser; Algorithm 3 with Han et al.'s per-layer rates once the training accuracy passes
  tau_accu, from 30% to 60% of the epochs, down to the parameter target; then fine-tuning with the
  learning rate restarted);
- ``alg3_s{k}``: pruning-only as the paper defines it: Algorithm 3 alone (the same pruning schedule, no
  growth) applied to the trained baseline, down to CGaP's final parameter count, then fine-tuned;
- ``taylor_s{k}``: Torch-Pruning's global Taylor pruning of the trained baseline to CGaP's count, fine-tuned;
- ``alg3e_s{k}``, ``taylore_s{k}``: the same from a baseline of half the epochs, so that baseline +
  fine-tuning equals CGaP's epochs (the equal-total-epochs comparison); ``alg3f``/``taylorf``: from a
  baseline of ``--flops-epochs`` epochs, whose training costs about what a CGaP run costs (equal FLOPs);
- ``rand_s{k}``: CGaP with random growth (Fig. 7's ablation: which units are copied is random);
- ``seedw{W}_s0``: CGaP from other seed widths (Table V's robustness ablation);
- ``try_*``: CGaP variants tried on seed 0 (what was tried, including what did not help);
- ``var_{NAME}_s{k}`` (``--variants NAME,...``): a variant of ``variants()`` on every seed (seed 0 is the
  ``try_`` job where one has the same settings);
- ``taylorm_{NAME}_s{k}``, ``taylorme_{NAME}_s{k}`` (``--match NAME``): Torch-Pruning Taylor pruning-only
  to that variant's final count per seed, fine-tuned from the variant's restart learning rate, from the
  full and from the half baseline (45 and 30 epochs in all): a change to fine-tuning is given to both sides;
  with ``--match-flops`` also ``taylormf_{NAME}_s{k}`` from the ``--flops-epochs`` baseline (equal training FLOPs).

Every row reports the structured counts (parameters and FLOPs of the shrunk model, 2 x MACs) and the
non-zero counts (weights Algorithm 3 zeroed inside surviving units excluded; FLOPs = 2 x non-zero MACs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import RESULTS, machine, write_json  # noqa: E402
from table1_lenet5_mnist import HAN_RATES, _taylor_prune  # noqa: E402

import cgap_graph as cg  # noqa: E402
from cgap_graph import zoo  # noqa: E402
from cgap_graph.io.atomic import atomic_write_text  # noqa: E402
from cgap_graph.passes.cgap.seed import seed as seed_pass  # noqa: E402
from cgap_graph.run.config import TrainConfig  # noqa: E402
from cgap_graph.run.loop import train_run  # noqa: E402

SHAPE = (1, 1, 28, 28)
PAPER = {"LeNet5-Baseline": (99.30, 431_000, 4.59e6), "CGaP": (99.36, 8_000, 0.44e6)}
FT_LR = 0.01  # fine-tuning a trained network: the paper's schedule from a 10x smaller learning rate


def cgap_config(args, **over) -> TrainConfig:
    """The CGaP setting the study reports (overrides give the ablations and the variants tried)."""
    fields = dict(epochs=args.epochs, beta=0.6, f_growth=1 / 3, init="paper", sigma=0.5, mu=0.1,
                  tau_accu=args.tau_accu, f_pruning=1.0, gamma_w=0.5, gamma_w_layers=dict(HAN_RATES),
                  prune_start=0.3, prune_end=0.6, prune_target=args.target, saliency="taylor",
                  saliency_batches=10, restart_lr=0.01, train_limit=args.train_limit, test_limit=args.test_limit)
    fields.update(over)
    return TrainConfig(**fields)


KEEP_RATES = {"conv1": 0.2, "conv2": 0.5, "fc1": 0.95, "fc2": 0.81}  # per-layer rates that keep filters


def variants(epochs: int) -> dict[str, tuple[str, dict]]:
    """CGaP variants run on every seed (``--variants NAME,...``, jobs ``var_NAME_s{k}``): label, overrides."""
    long = epochs + max(1, epochs // 2)  # as many epochs as the pruning-only rows
    keep = {"gamma_w_layers": KEEP_RATES}
    c1_rates = {**KEEP_RATES, "conv1": 0.0}  # the filter-keeping rates with conv1 left alone
    return {
        "keepft45": ("CGaP, rates that keep filters, the same growth and pruning epochs, fine-tuned as long as "
                     "pruning-only", {**keep, "epochs": long, "prune_start": 0.3 * epochs / long,
                                      "prune_end": 0.6 * epochs / long}),
        "keepft45lr05": ("CGaP, rates that keep filters, fine-tuned as long as pruning-only from lr 0.05",
                         {**keep, "epochs": long, "prune_start": 0.3 * epochs / long,
                          "prune_end": 0.6 * epochs / long, "restart_lr": 0.05}),
        "keepc1lr05": ("CGaP, rates that keep filters and leave conv1 alone, lr restarted at 0.05",
                       {"gamma_w_layers": c1_rates, "restart_lr": 0.05}),
        # 2026-12-03, second round, built on keepc1lr05 (the best so far): lower conv2 rates (the matched
        # Taylor models keep 6-12 conv2 filters, most 10-12, where CGaP keeps 7-9) and a higher restart
        "c1c2b": ("CGaP, conv1 left alone, conv2 rate 0.15, lr restarted at 0.05",
                  {"gamma_w_layers": {**c1_rates, "conv2": 0.15}, "restart_lr": 0.05}),
        "c1c2": ("CGaP, conv1 left alone, conv2 rate 0.3, lr restarted at 0.05",
                 {"gamma_w_layers": {**c1_rates, "conv2": 0.3}, "restart_lr": 0.05}),
        "c1lr1": ("CGaP, conv1 left alone, lr restarted at 0.1", {"gamma_w_layers": c1_rates, "restart_lr": 0.1}),
        "keeprestore": ("CGaP, rates that keep filters, survivors get their zeroed weights back",
                        {**keep, "zero_survivors": False}),
        "keeplr05": ("CGaP, rates that keep filters, lr restarted at 0.05", {**keep, "restart_lr": 0.05}),
        "keepdecay": ("CGaP, rates that keep filters, lr divided by 10 at every half of the epochs",
                      {**keep, "lr_decay_every": 0.5}),
        "keepsal50": ("CGaP, rates that keep filters, Taylor scores over 50 batches",
                      {**keep, "saliency_batches": 50}),
    }


# job name -> (kind, dependencies, settings)
def job_table(args) -> dict[str, tuple[str, list[str], dict]]:
    jobs: dict[str, tuple[str, list[str], dict]] = {}
    half = max(1, args.epochs // 2)
    for k in args.seeds:
        jobs[f"base{args.epochs}_s{k}"] = ("baseline", [], {"seed": k, "epochs": args.epochs})
        jobs[f"cgap_s{k}"] = ("cgap", [], {"seed": k})
    for k in args.seeds:
        dep = [f"base{args.epochs}_s{k}", f"cgap_s{k}"]
        jobs[f"taylor_s{k}"] = ("taylor", dep, {"seed": k, "ft_epochs": half})
        jobs[f"alg3_s{k}"] = ("alg3", dep, {"seed": k, "ft_epochs": half})
    for k in args.seeds:
        jobs[f"rand_s{k}"] = ("cgap", [], {"seed": k, "over": {"growth_saliency": "random"}})
    for w in (0.125, 0.5):
        jobs[f"seedw{w}_s0"] = ("cgap", [], {"seed": 0, "seed_width": w})
    tried = {"try_budget_s0": {"budget": f"params={args.target}", "prune_target": None},
             "try_keepzeros_s0": {"keep_zeros": True},
             "try_keepconv_s0": {"gamma_w_layers": KEEP_RATES}}
    if args.more_tries:
        keep = tried["try_keepconv_s0"]["gamma_w_layers"]
        tried |= {"try_late_s0": {"prune_start": 0.5, "prune_end": 0.8}, "try_norestart_s0": {"restart_lr": None},
                  # growth that leaves the outputs unchanged (no accuracy dip after each growth step)
                  "try_preserve_s0": {"init": "preserve"},
                  # pruning over by half-way: 15 epochs of fine-tuning, as long as the pruning-only rows'
                  "try_short_s0": {"prune_end": 0.5},
                  "try_keepshort_s0": {"prune_end": 0.5, "gamma_w_layers": keep},
                  "try_keeppreserve_s0": {"init": "preserve", "gamma_w_layers": keep},
                  # as many epochs as the pruning-only rows (baseline + fine-tuning = 45 at --epochs 30)
                  "try_keeplong_s0": {"gamma_w_layers": keep, "epochs": args.epochs + half},
                  # the growth ratio: a smaller and a larger beta than the paper's 0.6
                  "try_keepbeta0.3_s0": {"gamma_w_layers": keep, "beta": 0.3},
                  "try_keepbeta1_s0": {"gamma_w_layers": keep, "beta": 1.0},
                  # more saliency batches (less noisy Taylor scores), a higher restart, slower decay
                  # (the variants of the same names), rates that keep conv1 too, a later start of pruning
                  **{f"try_{n}_s0": variants(args.epochs)[n][1] for n in ("keepsal50", "keeplr05", "keepdecay")},
                  "try_keepconv1_s0": {"gamma_w_layers": {**keep, "conv1": 0.1, "conv2": 0.4}},
                  "try_keepstart4_s0": {"gamma_w_layers": keep, "prune_start": 0.4}}
    for name, over in tried.items():
        jobs[name] = ("cgap", [], {"seed": 0, "over": over})
    for k in args.seeds[1:]:  # the variants that won on seed 0, confirmed on the other seeds
        jobs[f"try_keepconv_s{k}"] = ("cgap", [], {"seed": k, "over": tried["try_keepconv_s0"]})
        if args.more_tries:
            jobs[f"try_keepshort_s{k}"] = ("cgap", [], {"seed": k, "over": tried["try_keepshort_s0"]})
            jobs[f"try_keeplong_s{k}"] = ("cgap", [], {"seed": k, "over": tried["try_keeplong_s0"]})
    for name in args.variants:
        for k in args.seeds:
            if k == 0 and f"try_{name}_s0" in jobs:
                continue  # the same job, tried on seed 0 first
            jobs[f"var_{name}_s{k}"] = ("cgap", [], {"seed": k, "over": variants(args.epochs)[name][1]})
    # Taylor pruning-only matched to a variant: to its final count per seed, fine-tuned from the
    # variant's restart learning rate (45 epochs from the full baseline, 30 from the half one and, with
    # --match-flops, 20 from the --flops-epochs one)
    for m in args.match:
        lr = variants(args.epochs)[m][1].get("restart_lr", FT_LR)
        for k in args.seeds:
            var = f"try_{m}_s0" if k == 0 and f"try_{m}_s0" in jobs else f"var_{m}_s{k}"
            for e, tag in [(args.epochs, ""), (half, "e")] + [(args.flops_epochs, "f")] * args.match_flops:
                jobs.setdefault(f"base{e}_s{k}", ("baseline", [], {"seed": k, "epochs": e}))
                jobs[f"taylorm{tag}_{m}_s{k}"] = ("taylor", [f"base{e}_s{k}", var],
                                              {"seed": k, "ft_epochs": half if e == args.epochs else args.epochs - half,
                                               "ft_lr": lr})
    # equal total epochs (a baseline of half the epochs + fine-tuning) and equal training FLOPs
    # (a baseline of ``flops_epochs``, whose training costs about what a CGaP run costs)
    for k in args.equal_seeds:
        for e, tag in ((half, "e"), (args.flops_epochs, "f")):
            if f"base{e}_s{k}" not in jobs:
                jobs[f"base{e}_s{k}"] = ("baseline", [], {"seed": k, "epochs": e})
            dep = [f"base{e}_s{k}", f"cgap_s{k}"]
            jobs[f"taylor{tag}_s{k}"] = ("taylor", dep, {"seed": k, "ft_epochs": args.epochs - half})
            jobs[f"alg3{tag}_s{k}"] = ("alg3", dep, {"seed": k, "ft_epochs": args.epochs - half})
    return jobs


def nonzero_counts(model: nn.Module) -> tuple[int, int]:
    """Non-zero parameters, and 2 x the MACs of the non-zero weights of every conv and linear layer."""
    params = sum(int((p != 0).sum()) for p in model.parameters())
    macs = []

    def hook(mod, _inp, out):
        nz = int((mod.weight != 0).sum())
        macs.append(nz * (out[0, 0].numel() if isinstance(mod, nn.Conv2d) else 1))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(SHAPE))
    for h in handles:
        h.remove()
    return params, 2 * sum(macs)


def describe(run_dir: Path, res, seconds: float, **extra) -> dict:
    model = cg.load_model(str(run_dir / "model.pt")).model
    nz_params, nz_flops = nonzero_counts(model)
    g = cg.trace(model, SHAPE)
    return {"accuracy": res.test_accuracy, "params": res.params, "flops": res.flops, "nz_params": nz_params,
            "nz_flops": nz_flops, "widths": [gr.width for gr in g.groups], "train_flops": res.train_flops,
            "seconds": seconds, "loss_curve": [m.get("loss") for m in res.metrics],
            "acc_curve": [m.get("test_acc") for m in res.metrics], **extra}


def run_job(args, name: str) -> dict:
    kind, deps, s = job_table(args)[name]
    out = args.out / name
    seed = s["seed"]
    torch.manual_seed(seed)
    t = time.perf_counter()
    if kind == "baseline":
        cfg = TrainConfig(epochs=s["epochs"], f_growth=0, f_pruning=0, seed=seed, train_limit=args.train_limit,
                          test_limit=args.test_limit)
        res = train_run(zoo.build("lenet5"), SHAPE, "mnist", out, cfg, progress=False, overwrite=True)
        return describe(out, res, time.perf_counter() - t, epochs=s["epochs"])
    if kind == "cgap":
        g = cg.trace(zoo.build("lenet5"), SHAPE)
        rep = seed_pass(g, s.get("seed_width", args.seed_width), select="first", reinit=True, generator_seed=seed)
        seed_params = g.param_count()
        cfg = cgap_config(args, seed=seed, **s.get("over", {}))
        res = train_run(g.module, SHAPE, "mnist", out, cfg, reference_widths=rep.reference_widths,
                        progress=False, overwrite=True)
        peak = max(m["params"] for m in res.metrics)
        return describe(out, res, time.perf_counter() - t, epochs=cfg.epochs, seed_params=seed_params,
                        peak_params=peak)
    base_dir, cgap_dir = (args.out / d for d in deps)
    base = json.loads((base_dir / "study.json").read_text())
    target = json.loads((cgap_dir / "study.json").read_text())["params"]
    epochs = base["epochs"] + s["ft_epochs"]
    if kind == "taylor":
        warnings.filterwarnings("ignore")
        targs = argparse.Namespace(train_limit=args.train_limit, seed=seed)
        model, counts = _taylor_prune(targs, base_dir / "model.pt", target)  # stops at <= CGaP's count
        cfg = TrainConfig(epochs=s["ft_epochs"], lr=s.get("ft_lr", FT_LR), f_growth=0, f_pruning=0, seed=seed,
                          train_limit=args.train_limit, test_limit=args.test_limit)
        res = train_run(model, SHAPE, "mnist", out, cfg, progress=False, overwrite=True)
    else:  # Algorithm 3 alone: the CGaP hook with growth off, from the trained baseline
        model = cg.load_model(str(base_dir / "model.pt")).model
        cfg = cgap_config(args, epochs=s["ft_epochs"], lr=FT_LR, f_growth=0, prune_start=0.0, prune_end=0.5,
                          prune_target=target, seed=seed)
        res = train_run(model, SHAPE, "mnist", out, cfg, progress=False, overwrite=True)
    row = describe(out, res, time.perf_counter() - t, epochs=epochs, target=target)
    row["train_flops_total"] = res.train_flops + base["train_flops"]
    row["seconds_total"] = row["seconds"] + base["seconds"]
    return row


def schedule(args) -> None:
    """Run every job not yet finished, ``--workers`` at a time, each after its dependencies."""
    jobs = job_table(args)
    done = {n for n in jobs if (args.out / n / "study.json").exists()}
    external = {n for n in jobs if n not in done and _alive(args.out / f"{n}.pid")}  # a previous scheduler's
    todo = [n for n in jobs if n not in done and (not args.only or any(n.startswith(p) for p in args.only))]
    running: dict[str, subprocess.Popen] = {}
    failed: set[str] = set()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    base_cmd = [sys.executable, __file__, "--epochs", str(args.epochs), "--out", str(args.out),
                "--seeds", ",".join(map(str, args.seeds)), "--target", str(args.target),
                "--equal-seeds", ",".join(map(str, args.equal_seeds)), "--flops-epochs", str(args.flops_epochs)]
    base_cmd += ["--quick"] * args.quick + ["--more-tries"] * args.more_tries
    base_cmd += ["--variants", ",".join(args.variants)] if args.variants else []
    base_cmd += ["--match", ",".join(args.match)] if args.match else []
    base_cmd += ["--match-flops"] * args.match_flops
    todo = [n for n in todo if n not in external]
    while todo or running or external:
        for n in list(external):
            if (args.out / n / "study.json").exists() or not _alive(args.out / f"{n}.pid"):
                external.discard(n)
                (done if (args.out / n / "study.json").exists() else failed).add(n)
                print(f"[{time.strftime('%H:%M:%S')}] {n}: {'done' if n in done else 'FAILED'} (earlier scheduler)")
        for n, p in list(running.items()):
            if p.poll() is not None:
                (done if p.returncode == 0 else failed).add(n)
                print(f"[{time.strftime('%H:%M:%S')}] {n}: {'done' if p.returncode == 0 else 'FAILED'}", flush=True)
                del running[n]
        ready = [n for n in todo if all(d in done for d in jobs[n][1])]
        todo = [n for n in todo if not any(d in failed for d in jobs[n][1])]
        while ready and len(running) + len(external) < args.workers:
            n = ready.pop(0)
            todo.remove(n)
            log = open(args.out / f"{n}.log", "w")  # noqa: SIM115 (closed with the process)
            running[n] = subprocess.Popen(base_cmd + ["--job", n], stdout=log, stderr=subprocess.STDOUT, env=env)
            (args.out / f"{n}.pid").write_text(str(running[n].pid))
            print(f"[{time.strftime('%H:%M:%S')}] {n}: started", flush=True)
        if not ready and not running and not external and todo:
            break
        time.sleep(2)
    print(f"finished: {len(done)} done, {len(failed)} failed: {sorted(failed)}")


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
        return True
    except (OSError, ValueError):
        return False


def _agg(rows: list[dict], key: str) -> tuple[float, float]:
    vals = [r[key] for r in rows]
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


METHODS = [("baseline", "LeNet5-Baseline", "base{E}_s"), ("cgap", "CGaP", "cgap_s"),
           ("alg3", "Pruning-only: Algorithm 3 + fine-tuning", "alg3_s"),
           ("taylor", "Pruning-only: Torch-Pruning Taylor + fine-tuning", "taylor_s"),
           ("alg3e", "Algorithm 3, equal total epochs", "alg3e_s"),
           ("taylore", "Taylor, equal total epochs", "taylore_s"),
           ("alg3f", "Algorithm 3, equal training FLOPs", "alg3f_s"),
           ("taylorf", "Taylor, equal training FLOPs", "taylorf_s"),
           ("rand", "CGaP, random growth (Fig. 7)", "rand_s"),
           ("keepconv", "CGaP, per-layer rates that keep filters", "try_keepconv_s"),
           ("keepshort", "CGaP, rates that keep filters, pruning over by half-way", "try_keepshort_s"),
           ("keeplong", "CGaP, rates that keep filters, as many epochs as pruning-only", "try_keeplong_s")]


def variant_methods(epochs: int) -> list[tuple[str, str, str]]:
    """Each variant's row, then the Taylor pruning-only rows matched to it (where they ran)."""
    out = []
    for n, (label, over) in variants(epochs).items():
        lr = over.get("restart_lr", FT_LR)
        out += [(f"var_{n}", label, f"var_{n}_s"),
                (f"taylorm_{n}", f"Taylor + fine-tuning from lr {lr}, to the counts of the row above",
                 f"taylorm_{n}_s"),
                (f"taylorme_{n}", f"Taylor from lr {lr}, to the same counts, equal total epochs", f"taylorme_{n}_s"),
                (f"taylormf_{n}", f"Taylor from lr {lr}, to the same counts, equal training FLOPs",
                 f"taylormf_{n}_s")]
    return out


def markdown(rows: list[dict]) -> str:
    """The study's table as Markdown (mean +- std over seeds), for the README."""
    lines = ["| method | seeds | accuracy % | params | FLOPs | non-zero params | non-zero FLOPs | epochs "
             "| training FLOPs |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        pm = lambda k, scale=1.0, fmt="{:,.0f}": (f"{fmt.format(r[k + '_mean'] / scale)} +- "
                                                  f"{fmt.format(r[k + '_std'] / scale)}")
        lines.append(f"| {r['label']} | {len(r['seeds'])} | {pm('accuracy_pct', fmt='{:.2f}')} | {pm('params')} | "
                     f"{pm('flops', 1e6, '{:.3f}M')} | {pm('nz_params')} | {pm('nz_flops', 1e6, '{:.3f}M')} | "
                     f"{r['epochs']} | {pm('train_flops_all', 1e12, '{:.1f}T')} |")
    return "\n".join(lines)


def table(args) -> None:
    """Mean and standard deviation per method over the finished seeds; the ablations; JSON + print."""
    from rich.console import Console
    from rich.table import Table
    rows, runs = [], {}
    for n in job_table(args):
        f = args.out / n / "study.json"
        if f.exists():
            runs[n] = json.loads(f.read_text())
    for n, r in _previous_runs(args).items():  # runs of an earlier folder (a fresh checkout) are kept
        runs.setdefault(n, r)
    t = Table(title=f"Table I: LeNet-5 / MNIST, {args.epochs} epochs (mean +- std over seeds)", header_style="bold")
    for col in ("method", "seeds", "accuracy %", "params", "FLOPs", "non-zero params", "non-zero FLOPs",
                "epochs", "training FLOPs"):
        t.add_column(col, justify="left" if col == "method" else "right")
    half = max(1, args.epochs // 2)
    methods = METHODS + variant_methods(args.epochs)
    for key, label, prefix in methods:
        prefix = prefix.format(E=args.epochs)
        got = [runs[n] | {"job": n} for n in runs if (n.startswith(prefix) and n[len(prefix):].isdigit())
               or (key.startswith("var_") and n == f"try_{key[4:]}_s0")]
        if not got:
            continue
        for r in got:
            r["accuracy_pct"] = 100 * r["accuracy"]
            r["train_flops_all"] = r.get("train_flops_total", r["train_flops"])
        agg = {k: _agg(got, k) for k in ("accuracy_pct", "params", "flops", "nz_params", "nz_flops",
                                          "train_flops_all")}
        rows.append({"method": key, "label": label, "seeds": [r["job"] for r in got], "epochs": got[0]["epochs"],
                     **{f"{k}_mean": m for k, (m, _) in agg.items()}, **{f"{k}_std": s for k, (_, s) in agg.items()},
                     "runs": got})
        f = lambda k, scale=1.0, fmt="{:.0f}": f"{fmt.format(agg[k][0] / scale)} +- {fmt.format(agg[k][1] / scale)}"
        t.add_row(label, str(len(got)), f("accuracy_pct", fmt="{:.2f}"), f("params"), f("flops", 1e6, "{:.3f}M"),
                  f("nz_params"), f("nz_flops", 1e6, "{:.3f}M"), str(got[0]["epochs"]),
                  f("train_flops_all", 1e12, "{:.1f}T"))
    console = Console(width=200)
    console.print(t)
    print(markdown(rows))
    extra = {n: {k: runs[n][k] for k in ("accuracy", "params", "flops", "nz_params", "nz_flops", "widths",
                                          "loss_curve", "seed_params", "peak_params") if k in runs[n]}
             for n in runs if n.startswith(("seedw", "try_"))}
    if "cgap_s0" in runs:
        extra["cgap_s0 (seed width 0.25)"] = {k: runs["cgap_s0"][k] for k in ("accuracy", "params", "flops",
                                                                              "seed_params", "peak_params")}
    for n, r in extra.items():
        console.print(f"{n}: {100 * r['accuracy']:.2f}% at {r['params']:,} params, {r['flops'] / 1e6:.3f}M FLOPs")
    rows, extra = _keep_previous(args, rows, extra)
    result = {"machine": machine(), "epochs": args.epochs, "half_epochs": half, "target": args.target,
              "rows": rows, "single_runs": extra, "paper": PAPER}
    print(f"wrote {write_json('table1_study', result, args.quick)}")


def _saved(args) -> dict:
    """The saved JSON of this study, or {} when there is none or it has other epochs."""
    path = RESULTS / f"table1_study{'_quick' if args.quick else ''}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    return old if old.get("epochs") == args.epochs else {}


def _previous_runs(args) -> dict[str, dict]:
    """Every run of the saved JSON's rows, by job name."""
    old = _saved(args)
    return {r["job"]: {k: v for k, v in r.items() if k != "job"} for row in old.get("rows", []) for r in row["runs"]}


def _keep_previous(args, rows: list[dict], extra: dict) -> tuple[list[dict], dict]:
    """Rows and single runs of the saved JSON that this output folder has no runs for (a study
    resumed in a fresh checkout, or more tries run in another folder) are kept, not dropped."""
    old = _saved(args)
    if not old:
        return rows, extra
    have = {r["method"] for r in rows}
    order = [m for m, _, _ in METHODS + variant_methods(args.epochs)]
    merged = rows + [r for r in old.get("rows", []) if r["method"] not in have]
    merged.sort(key=lambda r: order.index(r["method"]) if r["method"] in order else len(order))
    return merged, {**old.get("single_runs", {}), **extra}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    p.add_argument("--equal-seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0],
                   help="seeds of the equal-epochs and equal-FLOPs pruning-only comparisons")
    p.add_argument("--flops-epochs", type=int, default=5,
                   help="baseline epochs of the equal-training-FLOPs comparison (~ a CGaP run's training FLOPs)")
    p.add_argument("--more-tries", action="store_true",
                   help="also: a later or shorter pruning window, no lr restart, function-preserving growth, "
                        "45 epochs, beta 0.3 and 1")
    p.add_argument("--variants", type=lambda s: [v for v in s.split(",") if v], default=[],
                   help="CGaP variants to run on every seed: " + ", ".join(variants(30)))
    p.add_argument("--match", type=lambda s: [v for v in s.split(",") if v], default=[],
                   help="also run Taylor pruning-only to these variants' counts, fine-tuned from their learning rate")
    p.add_argument("--match-flops", action="store_true",
                   help="with --match: also from the --flops-epochs baseline (jobs taylormf_NAME_s{k}, equal FLOPs)")
    p.add_argument("--seed-width", type=float, default=0.25)
    p.add_argument("--target", type=int, default=7900, help="CGaP's parameter target (the paper's row: 8K)")
    p.add_argument("--tau-accu", type=float, default=0.985)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--only", type=lambda s: s.split(","), default=None, help="job name prefixes to run")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "table1_study")
    p.add_argument("--job", help=argparse.SUPPRESS)
    p.add_argument("--table", action="store_true", help="aggregate the finished jobs and write the JSON")
    p.add_argument("--quick", action="store_true", help="3 epochs on 3,000 images: checks the script runs")
    args = p.parse_args()
    args.train_limit = args.test_limit = None
    unknown = [v for v in args.variants + args.match if v not in variants(args.epochs)]
    if unknown:
        p.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(variants(args.epochs))}")
    for m in args.match:
        if m not in args.variants:
            p.error(f"--match {m} needs that variant's runs: add it to --variants")
    if args.quick:
        args.epochs, args.train_limit, args.test_limit, args.tau_accu = 4, 3000, 1000, 0.5
    args.out.mkdir(parents=True, exist_ok=True)
    if args.job:
        torch.set_num_threads(1)
        row = run_job(args, args.job)
        atomic_write_text(args.out / args.job / "study.json", json.dumps(row, indent=1) + "\n")
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("curve")}))
    elif args.table:
        table(args)
    else:
        schedule(args)
        table(args)


if __name__ == "__main__":
    main()
