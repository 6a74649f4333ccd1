"""The ``cgap-graph`` command line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import typer
from rich.console import Console

from cgap_graph import zoo
from cgap_graph.cli import cost as cli_cost
from cgap_graph.errors import CgapError, InputShapeError
from cgap_graph.io.model_io import load_model
from cgap_graph.ir.graph import trace

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Graph-IR structural surgery for PyTorch: find a model's coupled channel groups, and grow, "
         "prune and shrink them (Continuous Growth and Pruning).\n\n"
         "MODEL is a zoo name (see 'cgap-graph zoo'), a file saved by cgap-graph, a state dict with "
         "--arch module:factory, or a pickled model with --trust.",
    rich_markup_mode="rich",
)
console = Console()
err = Console(stderr=True, soft_wrap=True)  # one line per error, never wrapped

_DTYPES = {"float": torch.float32, "float32": torch.float32, "float16": torch.float16, "half": torch.float16,
           "bfloat16": torch.bfloat16, "long": torch.int64, "int64": torch.int64, "int": torch.int64}


def parse_shape(text: str) -> tuple[int, ...]:
    sep = "x" if "x" in text and "," not in text else ","
    try:
        shape = tuple(int(p) for p in text.split(sep))
    except ValueError:
        raise InputShapeError(f"--input-shape '{text}' is invalid: give comma-separated positive integers, "
                              "e.g. 1,3,32,32") from None
    if not shape or any(k <= 0 for k in shape):
        raise InputShapeError(f"--input-shape '{text}' is invalid: every size must be a positive integer, "
                              "e.g. 1,3,32,32")
    return shape


def parse_dtype(text: str) -> torch.dtype:
    if text not in _DTYPES:
        raise InputShapeError(f"--input-dtype '{text}' is unknown; use one of {', '.join(sorted(_DTYPES))}")
    return _DTYPES[text]


def _run(fn):
    """Run a command body: user errors become one red line and exit code 2."""
    try:
        return fn()
    except CgapError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]")
        raise typer.Exit(130) from None


def _load_and_trace(model: str, input_shape: list[str] | None, input_dtype: list[str] | None, arch: str | None,
                    arch_kwargs: str | None, trust: bool, width: float, leaf: list[str] | None):
    kwargs = {}
    if arch_kwargs:
        try:
            kwargs = json.loads(arch_kwargs)
        except json.JSONDecodeError as exc:
            raise CgapError(f"--arch-kwargs is not valid JSON ({exc.msg}); e.g. '{{\"num_classes\": 100}}'") from None
    loaded = load_model(model, arch=arch, arch_kwargs=kwargs, trust=trust, width=width)
    if input_shape:
        shapes = [parse_shape(s) for s in input_shape]
    elif loaded.input_shape is not None:
        shapes = [loaded.input_shape]
    else:
        raise InputShapeError(f"{model} does not say its input shape; pass --input-shape, e.g. 1,3,32,32")
    dtypes = [parse_dtype(d) for d in (input_dtype or ["float"])]
    if len(dtypes) == 1:
        dtypes = dtypes * len(shapes)
    if len(dtypes) != len(shapes):
        raise InputShapeError(f"{len(shapes)} --input-shape but {len(dtypes)} --input-dtype; give one per input")
    t0 = time.perf_counter()
    cg = trace(loaded.model, shapes, input_dtype=dtypes, leaf_modules=list(leaf or []))
    return loaded, cg, time.perf_counter() - t0


@app.command()
def inspect(
    model: str = typer.Argument(..., help="Zoo name or model file."),
    input_shape: list[str] | None = typer.Option(
        None, "--input-shape", "-s", help="Input shape, e.g. 1,3,32,32 (repeat for several inputs). "
        "Zoo models and cgap-graph files know theirs."),
    input_dtype: list[str] | None = typer.Option(None, "--input-dtype", help="float (default) or long (token ids)."),
    arch: str | None = typer.Option(None, "--arch", help="module:factory that builds the architecture of a "
                                       "state-dict file (imported from the current directory)."),
    arch_kwargs: str | None = typer.Option(None, "--arch-kwargs", help="JSON keyword arguments for --arch."),
    trust: bool = typer.Option(False, "--trust", help="Allow loading a pickled model (this runs code from the file)."),
    width: float = typer.Option(1.0, "--width", help="Width multiplier for zoo models."),
    leaf: list[str] | None = typer.Option(None, "--leaf", help="Keep this submodule opaque (its groups freeze)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    graph: Path | None = typer.Option(None, "--graph", help="Write the channel graph as GraphML to this file."),
    verify: bool = typer.Option(False, "--verify", help="Check every group by perturbing producers (slow)."),
):
    """Trace MODEL and print its channel groups, parameters and FLOPs.

    Each group is a set of coupled channels: pruning or growing one means changing every member
    (producer rows, consumer columns, norm parameters, reshapes) together. Example:

        cgap-graph inspect resnet56
        cgap-graph inspect model.pt --input-shape 1,3,224,224 --json
    """
    def body():
        loaded, cg, secs = _load_and_trace(model, input_shape, input_dtype, arch, arch_kwargs, trust, width, leaf)
        extra = {"model": model, "source": loaded.source, "analysis_seconds": round(secs, 4)}
        if graph is not None:
            cg.write_graphml(str(graph))
        check = None
        if verify:
            from cgap_graph.verify import perturbation_check
            check = perturbation_check(cg)
            extra["verify"] = {"unexpected": check.unexpected, "missing": check.missing, "checked": check.checked}
        if as_json:
            from cgap_graph.cli.report import summary
            print(json.dumps(summary(cg, extra), indent=2))
            return
        from cgap_graph.cli.report import print_inspect
        lines = [f"traced and analysed in {secs * 1e3:.1f} ms ({loaded.source})"]
        if graph is not None:
            lines.append(f"channel graph written to {graph}")
        print_inspect(cg, model, console, lines)
        if check is not None:
            if check.ok:
                console.print(f"[green]verify: all {check.checked} perturbation checks agree with the groups[/green]")
            else:
                for u in check.unexpected[:10]:
                    console.print(f"[red]verify: {u}[/red]")
                for m in check.missing[:10]:
                    console.print(f"[yellow]verify (over-coupled, safe): {m}[/yellow]")
    _run(body)


# ---- grow / prune / seed -------------------------------------------------------------------------------
_MODEL_HELP = "Zoo name or model file."


def _saliency_for(cg, data: str | None, data_dir: str | None, select: str | None, batches: int, batch_size: int,
                  seed: int):
    from cgap_graph.passes.cgap.saliency import saliency
    from cgap_graph.run.data import check_fits, loader
    if select is None:
        select = "taylor" if data else None
    if select is None:
        raise CgapError("give --data DATASET (Taylor saliency on real batches) or --select magnitude|random")
    if select == "taylor":
        if not data:
            raise CgapError("--select taylor needs --data DATASET (mnist, fashion-mnist, cifar10, mnist-mini)")
        check_fits(data, cg.input_specs[0].shape)
        if batch_size < 1:
            raise CgapError(f"--batch-size must be >= 1, got {batch_size}")
        return saliency(cg, loader(data, "train", batch_size, data_dir=data_dir, seed=seed), batches=batches), select
    if select not in ("magnitude", "random"):
        raise CgapError(f"--select must be taylor, magnitude or random, got '{select}'")
    return saliency(cg, mode=select, generator=torch.Generator().manual_seed(seed)), select


def _to_device(cg, device: str) -> None:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise CgapError(f"--device '{device}' is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CgapError(f"--device {device}: no CUDA device is available here; use --device cpu")
    if dev.type != "cpu":
        cg.module.to(dev)


def _print_change(cg, title: str, widths_before: dict[int, int], params_before: int, flops_before: int,
                  notes: list[str] = ()) -> None:
    from rich.table import Table

    from cgap_graph.cli.report import _fmt
    from cgap_graph.passes.cgap.seed import group_key
    console.print(f"[bold]{title}[/bold]")
    table = Table(header_style="bold")
    for col in ("group", "first producer", "width", "status"):
        table.add_column(col, justify="right" if col in ("group", "width") else "left")
    for g in cg.groups:
        before = widths_before.get(g.id, g.width)
        width = f"{before}" if before == g.width else f"{before} -> [bold]{g.width}[/bold]"
        status = "frozen: " + g.frozen if g.frozen else ("changed" if before != g.width else "")
        table.add_row(str(g.id), group_key(g), width, status)
    console.print(table)
    params, flops = cg.param_count(), cg.flops()
    console.print(f"parameters {params_before:,} -> {params:,} ({_fmt(params)})   FLOPs {_fmt(flops_before)} -> "
                  f"{_fmt(flops)}")
    for n in notes:
        console.print(f"[yellow]note[/yellow]: {n}")


def _save_result(cg, loaded, model: str, output: Path, step: dict, capacity: dict | None = None) -> None:
    from cgap_graph.io.model_io import save_model
    meta = dict(loaded.meta)
    meta["input_shape"] = list(cg.input_specs[0].shape)
    meta["widths"] = {str(g.id): g.width for g in cg.groups}
    meta["history"] = list(meta.get("history", [])) + [step]
    if capacity is not None:
        meta["capacity"] = capacity
    kind = save_model(cg.module, output, meta=meta, inputs=[model] if Path(model).exists() else [])
    console.print(f"wrote {output}" + (" (pickled: custom modules; load it with --trust)" if kind == "pickle" else ""))


@app.command()
def grow(
    model: str = typer.Argument(..., help=_MODEL_HELP),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the grown model."),
    beta: float = typer.Option(0.6, "--beta", help="Growth ratio: each group gains round(beta x width) units."),
    init: str = typer.Option("paper", "--init", help="paper (Eq. 5-10), preserve (outputs unchanged) or random."),
    sigma: float = typer.Option(0.5, "--sigma", help="Scaling factor of the paper initialiser (Eq. 5-10)."),
    mu: float = typer.Option(0.1, "--mu", help="Noise range U(-mu, mu) of the paper initialiser."),
    data: str | None = typer.Option(None, "--data", help="Dataset for Taylor saliency: mnist, fashion-mnist, "
                                       "cifar10, mnist-mini (read from --data-dir or $CGAP_DATA_DIR)."),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Folder holding the datasets."),
    select: str | None = typer.Option(None, "--select", help="taylor (default with --data), magnitude or random."),
    batches: int = typer.Option(10, "--batches", help="Batches of data for the saliency."),
    batch_size: int = typer.Option(64, "--batch-size"),
    capacity_mode: str = typer.Option("stop", "--capacity-mode", help="At the capacity limit (from 'seed'): "
                                      "stop (paper) or clip."),
    no_capacity: bool = typer.Option(False, "--no-capacity", help="Ignore a capacity limit stored in MODEL."),
    seed: int = typer.Option(0, "--seed", help="Random seed (noise, random selection)."),
    device: str = typer.Option("cpu", "--device", help="cpu (default) or cuda[:N] for the saliency pass."),
    input_shape: list[str] | None = typer.Option(None, "--input-shape", "-s"),
    arch: str | None = typer.Option(None, "--arch"),
    arch_kwargs: str | None = typer.Option(None, "--arch-kwargs"),
    trust: bool = typer.Option(False, "--trust", help="Allow loading a pickled model (runs code from the file)."),
    width: float = typer.Option(1.0, "--width", help="Width multiplier for zoo models."),
):
    """Grow MODEL (Algorithm 2): duplicate the most salient units of every growable group.

        cgap-graph grow model.pt --beta 0.6 --data cifar10 -o grown.pt
        cgap-graph grow seed.pt --beta 0.6 --select magnitude --init preserve -o grown.pt
    """
    def body():
        from cgap_graph.passes.cgap.grow import grow as grow_pass
        from cgap_graph.passes.cgap.seed import capacity_by_id
        if init not in ("paper", "preserve", "random"):
            raise CgapError(f"--init must be paper, preserve or random, got '{init}'")
        if capacity_mode not in ("stop", "clip"):
            raise CgapError(f"--capacity-mode must be stop or clip, got '{capacity_mode}'")
        from cgap_graph.passes.cgap.grow import _check_growth
        _check_growth(beta, sigma, mu)
        loaded, cg, _ = _load_and_trace(model, input_shape, None, arch, arch_kwargs, trust, width, None)
        _to_device(cg, device)
        sal, how = _saliency_for(cg, data, data_dir, select, batches, batch_size, seed)
        before = {g.id: g.width for g in cg.groups}
        p0, f0 = cg.param_count(), cg.flops()
        cap = None if no_capacity else loaded.meta.get("capacity")
        rep = grow_pass(cg, sal, beta, init=init, sigma=sigma, mu=mu, capacity=capacity_by_id(cg, cap),
                        capacity_mode=capacity_mode, seed=seed)
        notes = [f"group {gid} not grown: {why}" for gid, why in rep.skipped.items()]
        _print_change(cg, f"grow {model}: beta {beta}, init {init}, saliency {how}", before, p0, f0, notes)
        _save_result(cg, loaded, model, output, {"step": "grow", "beta": beta, "init": init, "sigma": sigma, "mu": mu,
                                                   "saliency": how, "data": data}, cap)
    _run(body)


@app.command()
def prune(
    model: str = typer.Argument(..., help=_MODEL_HELP),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the pruned model."),
    weight_rate: float = typer.Option(0.5, "--weight-rate", help="gamma_W: fraction of weights zeroed per layer."),
    unit_rate: float = typer.Option(0.5, "--unit-rate", help="gamma_F/gamma_N: a unit sparser than this is "
                                    "removed (with --mode units: the fraction of units removed per group)."),
    mode: str = typer.Option("alg3", "--mode", help="alg3 (weights, then sparse units) or units (lowest units)."),
    no_fold: bool = typer.Option(False, "--no-fold", help="Do not fold removed units' constants into readers."),
    data: str | None = typer.Option(None, "--data", help="Dataset for Taylor saliency (see grow --help)."),
    data_dir: str | None = typer.Option(None, "--data-dir"),
    select: str | None = typer.Option(None, "--select", help="taylor (default with --data), magnitude or random."),
    batches: int = typer.Option(10, "--batches"),
    batch_size: int = typer.Option(64, "--batch-size"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu (default) or cuda[:N] for the saliency pass."),
    input_shape: list[str] | None = typer.Option(None, "--input-shape", "-s"),
    arch: str | None = typer.Option(None, "--arch"),
    arch_kwargs: str | None = typer.Option(None, "--arch-kwargs"),
    trust: bool = typer.Option(False, "--trust"),
    width: float = typer.Option(1.0, "--width"),
):
    """Prune MODEL (Algorithm 3) and remove the pruned units physically.

        cgap-graph prune model.pt --weight-rate 0.5 --unit-rate 0.5 --data mnist -o small.pt
        cgap-graph prune model.pt --mode units --unit-rate 0.3 --select magnitude -o small.pt
    """
    def body():
        from cgap_graph.passes.cgap.grow import check_rates
        from cgap_graph.passes.cgap.prune import prune as prune_pass
        from cgap_graph.passes.cgap.prune import prune_units
        if mode not in ("alg3", "units"):
            raise CgapError(f"--mode must be alg3 or units, got '{mode}'")
        check_rates(**({"--weight-rate": weight_rate} if mode == "alg3" else {}), **{"--unit-rate": unit_rate})
        loaded, cg, _ = _load_and_trace(model, input_shape, None, arch, arch_kwargs, trust, width, None)
        _to_device(cg, device)
        sal, how = _saliency_for(cg, data, data_dir, select, batches, batch_size, seed)
        before = {g.id: g.width for g in cg.groups}
        p0, f0 = cg.param_count(), cg.flops()
        if mode == "alg3":
            rep = prune_pass(cg, sal, weight_rate, unit_rate, fold=not no_fold)
        else:
            rep = prune_units(cg, sal, unit_rate, fold=not no_fold)
        notes = rep.folded + [f"[red]not folded[/red] {n}" for n in rep.not_folded]
        if rep.weights_total:
            notes.insert(0, f"zeroed {rep.weights_zeroed:,} of {rep.weights_total:,} weights")
        _print_change(cg, f"prune {model}: {mode}, saliency {how}", before, p0, f0, notes)
        _save_result(cg, loaded, model, output, {"step": "prune", "mode": mode, "weight_rate": weight_rate,
                                                   "unit_rate": unit_rate, "saliency": how, "data": data},
                     loaded.meta.get("capacity"))
    _run(body)


@app.command("seed")
def seed_cmd(
    model: str = typer.Argument(..., help=_MODEL_HELP),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the seed."),
    width: float = typer.Option(..., "--width", help="Width multiplier in (0, 1]: the paper's seeds use 0.125."),
    select: str = typer.Option("magnitude", "--select", help="Which units to keep: magnitude or first."),
    reinit: bool = typer.Option(False, "--reinit", help="Draw fresh parameters (train the seed from scratch)."),
    input_shape: list[str] | None = typer.Option(None, "--input-shape", "-s"),
    arch: str | None = typer.Option(None, "--arch"),
    arch_kwargs: str | None = typer.Option(None, "--arch-kwargs"),
    trust: bool = typer.Option(False, "--trust"),
    zoo_width: float = typer.Option(1.0, "--zoo-width", help="Width of the zoo reference model."),
):
    """Make a seed: shrink every prunable group of MODEL to WIDTH of its size.

    The reference widths are stored in the seed as the capacity limit for later growth.

        cgap-graph seed vgg19 --width 0.125 -o seed.pt
    """
    def body():
        from cgap_graph.passes.cgap.seed import seed as seed_pass
        if not 0 < width <= 1:
            raise CgapError(f"--width must be in (0, 1], got {width} (the paper's seeds use 0.125)")
        loaded, cg, _ = _load_and_trace(model, input_shape, None, arch, arch_kwargs, trust, zoo_width, None)
        before = {g.id: g.width for g in cg.groups}
        p0, f0 = cg.param_count(), cg.flops()
        rep = seed_pass(cg, width, select=select, reinit=reinit)
        _print_change(cg, f"seed {model}: width {width}", before, p0, f0)
        _save_result(cg, loaded, model, output, {"step": "seed", "width": width, "select": select, "reinit": reinit},
                     rep.reference_widths)
    _run(body)


# ---- train / demo ----------------------------------------------------------------------------------------
_HYPER_HELP = {
    "epochs": "Training epochs (paper: 60 for MNIST, 200 for CIFAR-10).",
    "batch_size": "Batch size (paper: 128).",
    "lr": "Initial learning rate (paper: 0.1).",
    "lr_decay_every": "Divide the learning rate by 10 at every this fraction of the epochs (paper: 0.3).",
    "momentum": "SGD momentum (paper: 0.9).",
    "weight_decay": "Weight decay (paper: 5e-4).",
    "optimizer": "sgd (paper) or adam.",
    "beta": "Growth ratio (paper: 0.6).",
    "f_growth": "Growth frequency: grow every 1/f epochs (paper: 1/3; 0 disables growth).",
    "init": "Initialiser of grown units: paper, preserve or random.",
    "sigma": "Scaling factor of the paper initialiser (0.5).",
    "mu": "Noise range of the paper initialiser (0.1).",
    "capacity": "tau_capa: growth stops at this multiple of the reference widths (1.0).",
    "tau_accu": "Training accuracy (0..1) to exceed before pruning starts.",
    "f_pruning": "Pruning frequency: prune every 1/f epochs (paper: 1; 0 disables pruning).",
    "gamma_w": "Weight pruning rate gamma_W in (0, 1).",
    "gamma_f": "Unit sparsity threshold gamma_F/gamma_N (default: gamma_W).",
    "prune_start": "No pruning before this fraction of the epochs.",
    "prune_end": "Last pruning step at this fraction of the epochs; then fine-tune.",
    "prune_target": "Stop pruning once the model has at most this many parameters.",
    "zero_survivors": "Keep Algorithm 3's zeroed weights in the units that stay (paper); "
                      "--no-zero-survivors gives them back: the zeros only choose the units to remove.",
    "saliency": "taylor (paper), magnitude or random.",
    "saliency_batches": "Batches for each saliency estimate.",
    "seed": "Random seed.",
    "device": "cpu (default) or cuda[:N].",
    "eval_batch_size": "Batch size for evaluation.",
    "train_limit": "Use only the first N training images (quick runs).",
    "test_limit": "Use only the first N test images.",
}


def _hyper_params():
    import dataclasses
    import inspect as _inspect

    from cgap_graph.run.config import TrainConfig
    params = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("extra", "gamma_w_layers"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            typ, decls = bool, [f"{flag}/--no-{flag[2:]}"]
        else:
            typ = int if f.type in ("int", "int | None") else float if f.type in ("float", "float | None") else str
            decls = [flag]
        params.append(_inspect.Parameter(
            f.name, _inspect.Parameter.KEYWORD_ONLY, annotation=typ | None,
            default=typer.Option(None, *decls, help=_HYPER_HELP.get(f.name, ""),
                                 rich_help_panel="CGaP hyper-parameters (override --config)")))
    return params


def _load_for_training(model: str, dataset: str, input_shape, arch, arch_kwargs, trust, width: float):
    """The model to train and its input shape (--input-shape, else the file's, else the dataset's)."""
    from cgap_graph.run.data import info
    shapes = [parse_shape(s) for s in input_shape] if input_shape else None
    kwargs = json.loads(arch_kwargs) if arch_kwargs else {}
    loaded = load_model(model, arch=arch, arch_kwargs=kwargs, trust=trust, width=width)
    return loaded, shapes[0] if shapes else (loaded.input_shape or (1, *info(dataset).shape))


def _train_body(model: str, dataset: str, out: Path | None, config: Path | None, resume: bool, data_dir,
                width: float, seed_width: float, input_shape, arch, arch_kwargs, trust, hyper: dict):
    from cgap_graph.ir.graph import trace as _trace
    from cgap_graph.run.config import load_config
    from cgap_graph.run.train import train_run
    cfg = load_config(config, hyper)
    out = out or Path("runs") / f"{Path(model).stem}-{dataset}"
    if resume:
        from cgap_graph.run.data import info
        shape = (1, *info(dataset).shape)
        res = train_run(None, shape, dataset, out, cfg, data_dir=data_dir, resume=True, console=console)
        _print_run(res)
        return
    if not 0 < seed_width <= 1:
        raise CgapError(f"--seed-width must be in (0, 1], got {seed_width}")
    loaded, shape = _load_for_training(model, dataset, input_shape, arch, arch_kwargs, trust, width)
    torch.manual_seed(cfg.seed)
    cg = _trace(loaded.model, shape)
    reference = loaded.meta.get("capacity")
    if seed_width < 1:
        from cgap_graph.passes.cgap.seed import seed as seed_pass
        rep = seed_pass(cg, seed_width, select="first", reinit=loaded.source == "zoo", generator_seed=cfg.seed)
        reference = rep.reference_widths
    res = train_run(cg.module, shape, dataset, out, cfg, data_dir=data_dir, reference_widths=reference,
                    console=console, meta={"model": model, "dataset": dataset})
    _print_run(res)


def _print_run(res) -> None:
    from cgap_graph.cli.report import _fmt
    console.print(f"[bold]done[/bold]: {res.epochs} epochs, test accuracy {100 * res.test_accuracy:.2f}%, "
                  f"{res.params:,} parameters, FLOPs {_fmt(res.flops)}, widths "
                  f"{'-'.join(str(w) for w in res.widths.values())}; wrote {res.out_dir}/ (model.pt, metrics.jsonl, "
                  "params.png, widths.png, checkpoint.pt)")


def train(**kw):
    """Train with CGaP (Algorithm 1): grow while under capacity, prune once accurate, fine-tune.

    MODEL is a zoo name (start from a seed with --seed-width 0.125) or a model file (a seed made
    with 'cgap-graph seed' carries its capacity). Every epoch appends to OUT/metrics.jsonl and
    checkpoints to OUT/checkpoint.pt; --resume continues a killed run.

        cgap-graph train --model lenet5 --seed-width 0.25 --dataset mnist --epochs 60
        cgap-graph train --model seed.pt --dataset cifar10 --config cgap.toml
        cgap-graph train --dataset mnist --out runs/lenet5-mnist --resume
    """
    base = {k: kw.pop(k) for k in ("model", "dataset", "out", "config", "resume", "data_dir", "width", "seed_width",
                                   "input_shape", "arch", "arch_kwargs", "trust")}
    method = kw.pop("method")
    small_world = {k: kw.pop(k) for k in ("density", "rewire_p", "topology", "connection_prune_rate",
                                          "finetune_epochs", "finetune_lr")}
    layer_rates = kw.pop("gamma_w_layer") or []
    if layer_rates:
        parsed = {}
        for item in layer_rates:
            name, sep, value = item.partition("=")
            try:
                parsed[name] = float(value)
            except ValueError:
                sep = ""
            if not sep or not name:
                err.print(f"[red]error:[/red] --gamma-w-layer '{item}' must look like NAME=RATE, e.g. fc1=0.9")
                raise typer.Exit(2)
        kw["gamma_w_layers"] = parsed
    if method == "small-world":
        _run(lambda: _train_small_world_body(hyper=kw, small_world=small_world, **base))
        return
    if method != "cgap":
        err.print(f"[red]error:[/red] --method must be cgap or small-world, got '{method}'")
        raise typer.Exit(2)
    if small_world["density"] is not None:
        err.print("[red]error:[/red] --density is for --method small-world; add --method small-world")
        raise typer.Exit(2)
    _run(lambda: _train_body(hyper=kw, **base))


def _train_small_world_body(model: str, dataset: str, out: Path | None, config: Path | None, resume: bool,
                            data_dir, width: float, seed_width: float, input_shape, arch, arch_kwargs, trust,
                            hyper: dict, small_world: dict):
    """Small-World pruning: masks before training, training with the masks fixed, optimise, fine-tune."""
    from cgap_graph.run.config import load_config
    from cgap_graph.run.small_world import train_small_world
    cfg = load_config(config, hyper)
    out = out or Path("runs") / f"{Path(model).stem}-{dataset}-small-world"
    sw = {"p": small_world["rewire_p"], "topology": small_world["topology"],
          "prune_rate": small_world["connection_prune_rate"], "finetune_epochs": small_world["finetune_epochs"],
          "finetune_lr": small_world["finetune_lr"]}
    if resume:
        from cgap_graph.run.data import info
        res = train_small_world(None, (1, *info(dataset).shape), dataset, out, cfg, resume=True, data_dir=data_dir,
                                console=console)
    else:
        if seed_width != 1:
            raise CgapError("--seed-width is for CGaP; Small-World pruning starts from the full model")
        if small_world["density"] is None:
            raise CgapError("--method small-world needs --density, the fraction of weights to keep, e.g. 0.03")
        loaded, shape = _load_for_training(model, dataset, input_shape, arch, arch_kwargs, trust, width)
        torch.manual_seed(cfg.seed)
        res = train_small_world(loaded.model, shape, dataset, out, cfg, density=small_world["density"],
                                rescale_init=loaded.source == "zoo", data_dir=data_dir, console=console,
                                meta={"model": model, "dataset": dataset},
                                **{k: v for k, v in sw.items() if v is not None})
    console.print(f"[bold]done[/bold]: test accuracy {100 * res.test_accuracy:.2f}%, {res.params_kept:,} of "
                  f"{res.params_dense:,} parameters kept ({100 * res.kept_fraction:.2f}%), widths "
                  f"{'-'.join(str(w) for w in res.widths.values())}; wrote {res.out_dir}/ (model.pt, masks.pt, "
                  "topology.json, summary.json, train/, finetune/)")


def _install_train():
    import inspect as _inspect
    P = _inspect.Parameter
    base = [
        P("model", P.KEYWORD_ONLY, annotation=str, default=typer.Option("lenet5", "--model", help="Zoo name or file.")),
        P("dataset", P.KEYWORD_ONLY, annotation=str, default=typer.Option(
            ..., "--dataset", help="mnist, fashion-mnist, cifar10 or mnist-mini (built in).")),
        P("out", P.KEYWORD_ONLY, annotation=Path | None, default=typer.Option(
            None, "--out", help="Run directory (default: runs/MODEL-DATASET).")),
        P("config", P.KEYWORD_ONLY, annotation=Path | None, default=typer.Option(
            None, "--config", help="TOML file of hyper-parameters ([train] table or top level).")),
        P("resume", P.KEYWORD_ONLY, annotation=bool, default=typer.Option(
            False, "--resume", help="Continue the run in --out from its last checkpoint.")),
        P("data_dir", P.KEYWORD_ONLY, annotation=str | None, default=typer.Option(
            None, "--data-dir", help="Folder holding the datasets (default $CGAP_DATA_DIR).")),
        P("width", P.KEYWORD_ONLY, annotation=float, default=typer.Option(
            1.0, "--width", help="Width of the zoo reference model.")),
        P("seed_width", P.KEYWORD_ONLY, annotation=float, default=typer.Option(
            1.0, "--seed-width", help="Start from a seed this fraction of the reference widths.")),
        P("input_shape", P.KEYWORD_ONLY, annotation=list[str] | None, default=typer.Option(
            None, "--input-shape", "-s")),
        P("arch", P.KEYWORD_ONLY, annotation=str | None, default=typer.Option(None, "--arch")),
        P("arch_kwargs", P.KEYWORD_ONLY, annotation=str | None, default=typer.Option(None, "--arch-kwargs")),
        P("trust", P.KEYWORD_ONLY, annotation=bool, default=typer.Option(False, "--trust")),
        P("method", P.KEYWORD_ONLY, annotation=str, default=typer.Option(
            "cgap", "--method", help="cgap (grow and prune while training) or small-world (fixed sparse masks "
            "chosen before training, then optimise; needs --density).")),
        P("density", P.KEYWORD_ONLY, annotation=float | None, default=typer.Option(
            None, "--density", help="Fraction of Conv/Linear weights the masks keep, e.g. 0.03.",
            rich_help_panel="Small-World pruning (--method small-world)")),
        P("rewire_p", P.KEYWORD_ONLY, annotation=float | None, default=typer.Option(
            None, "--rewire-p", help="Rewiring probability in [0, 1] (default: chosen to maximise the "
            "small-world coefficient).", rich_help_panel="Small-World pruning (--method small-world)")),
        P("topology", P.KEYWORD_ONLY, annotation=str, default=typer.Option(
            "small-world", "--topology", help="small-world or random (the ablation: same density).",
            rich_help_panel="Small-World pruning (--method small-world)")),
        P("connection_prune_rate", P.KEYWORD_ONLY, annotation=float | None, default=typer.Option(
            None, "--connection-prune-rate", help="Optimise step: fraction of each layer's remaining "
            "connections pruned by saliency (default 0.3).",
            rich_help_panel="Small-World pruning (--method small-world)")),
        P("finetune_epochs", P.KEYWORD_ONLY, annotation=int | None, default=typer.Option(
            None, "--finetune-epochs", help="Fine-tuning epochs after the optimise step (default: a third of "
            "--epochs).", rich_help_panel="Small-World pruning (--method small-world)")),
        P("finetune_lr", P.KEYWORD_ONLY, annotation=float | None, default=typer.Option(
            None, "--finetune-lr", help="Fine-tuning learning rate (default: --lr / 10).",
            rich_help_panel="Small-World pruning (--method small-world)")),
        P("gamma_w_layer", P.KEYWORD_ONLY, annotation=list[str] | None, default=typer.Option(
            None, "--gamma-w-layer", help="Per-layer gamma_W as MODULE=RATE (repeat), e.g. fc1=0.92.",
            rich_help_panel="CGaP hyper-parameters (override --config)")),
    ]
    train.__signature__ = _inspect.Signature(base + _hyper_params())
    app.command()(train)


_install_train()


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Where to write the demo run."),
    epochs: int = typer.Option(10, "--epochs", help="Epochs (the demo takes about 2 s per epoch)."),
):
    """A short CGaP run on LeNet-5 with the built-in MNIST subset: nothing else needed.

    Starts from a seed a quarter of LeNet-5's widths, grows it twice, prunes it three times,
    fine-tunes, and writes the model, its metrics, plots and checkpoint to OUT; then exports the
    model to OUT/model.onnx (checked against PyTorch) and costs it on the paper's FPGA setup.
    """
    def body():
        from cgap_graph.ir.graph import trace as _trace
        from cgap_graph.passes.cgap.seed import seed as seed_pass
        from cgap_graph.run.config import TrainConfig
        from cgap_graph.run.train import train_run
        cfg = TrainConfig(epochs=epochs, batch_size=64, lr=0.05, lr_decay_every=0.5, f_growth=0.5, beta=0.6,
                          prune_start=0.6, prune_end=0.8, tau_accu=0.8, gamma_w=0.3, saliency_batches=4,
                          eval_batch_size=500).validate()
        torch.manual_seed(0)
        cg = _trace(zoo.build("lenet5"), (1, 1, 28, 28))
        rep = seed_pass(cg, 0.25, select="first", reinit=True)
        console.print("[bold]cgap-graph demo[/bold]: LeNet-5 seed (a quarter of 20-50-500-10) on the built-in "
                      "MNIST subset (3,000 training / 1,000 test images)")
        res = train_run(cg.module, (1, 1, 28, 28), "mnist-mini", out, cfg, reference_widths=rep.reference_widths,
                        console=console, meta={"model": "lenet5", "dataset": "mnist-mini"})
        _print_run(res)
        _demo_deploy(out)
    _run(body)


@app.command()
def export(
    model: str = typer.Argument(..., help=_MODEL_HELP),
    output: Path = typer.Option(..., "-o", "--output", help="The .onnx file to write."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (18: the exporter's own; 17-23 accepted)."),
    exporter: str = typer.Option("auto", "--exporter", help="auto (torch.export-based, falling back to the "
                                 "TorchScript exporter if it fails), dynamo or legacy."),
    no_shrink: bool = typer.Option(False, "--no-shrink", help="Keep masked (all-zero) units in the file."),
    static_batch: bool = typer.Option(False, "--static-batch", help="Fix the batch axis instead of a dynamic one."),
    tolerance: float = typer.Option(1e-4, "--tolerance", help="Max |ONNX Runtime - PyTorch| accepted, "
                                    "relative to the outputs' magnitude when above 1."),
    input_shape: list[str] | None = typer.Option(None, "--input-shape", "-s"),
    input_dtype: list[str] | None = typer.Option(None, "--input-dtype"),
    arch: str | None = typer.Option(None, "--arch"),
    arch_kwargs: str | None = typer.Option(None, "--arch-kwargs"),
    trust: bool = typer.Option(False, "--trust"),
    width: float = typer.Option(1.0, "--width"),
):
    """Export MODEL to ONNX for deployment tools, checked end to end.

    Masked units (all-zero filters) are removed first, so the file holds the small model.

    The file has a dynamic batch axis and passes the ONNX checker; ONNX Runtime runs it against PyTorch.

    The max difference is printed; above --tolerance nothing is written.

    Widths and the model's CGaP history go into the file's metadata (onnx.load(f).metadata_props).

        cgap-graph export runs/lenet5-mnist/model.pt -o lenet5.onnx
        cgap-graph export resnet56 -o resnet56.onnx --opset 20
    """
    def body():
        from cgap_graph.passes.export import export_onnx
        if tolerance <= 0:
            raise CgapError(f"--tolerance must be > 0, got {tolerance}")
        loaded, cg, _ = _load_and_trace(model, input_shape, input_dtype, arch, arch_kwargs, trust, width, None)
        meta = dict(loaded.meta)
        meta.setdefault("source", model)
        rep = export_onnx(cg, None, output, opset=opset, meta=meta, shrink=not no_shrink, exporter=exporter,
                          tolerance=tolerance, dynamic_batch=not static_batch,
                          inputs=[model] if Path(model).exists() else [])
        console.print(f"[bold]export {model}[/bold]: {rep.exporter} exporter, opset {rep.opset}, "
                      f"{'dynamic' if rep.dynamic_batch else 'fixed'} batch axis, {rep.params:,} parameters")
        console.print("widths: " + ", ".join(f"{k.removesuffix('.weight[0]')} {v}" for k, v in rep.widths.items()))
        for k, n in rep.removed.items():
            console.print(f"shrunk {n} masked unit(s) of {k}")
        for n in rep.notes:
            console.print(f"[yellow]note:[/yellow] {n}")
        console.print(f"ONNX checker: ok; ONNX Runtime vs PyTorch: max |diff| {rep.max_abs_diff:.2e} on outputs "
                      f"up to {rep.output_scale:.3g} (tolerance {rep.tolerance:g} x max(1, |output|))")
        console.print(f"wrote {output}")
    _run(body)


app.command("cost")(cli_cost.cost)


def _demo_deploy(out: Path) -> None:
    """The demo's last step: the trained model to ONNX, and its FPGA cost next to LeNet-5's."""
    from cgap_graph.io.atomic import atomic_write_text
    from cgap_graph.passes.export import export_onnx
    from cgap_graph.passes.fpga.cost import cost_onnx
    trained = load_model(str(out / "model.pt"))
    rep = export_onnx(trained.model, (1, 1, 28, 28), out / "model.onnx", meta=trained.meta)
    console.print(f"wrote {out / 'model.onnx'} (ONNX Runtime vs PyTorch: max |diff| {rep.max_abs_diff:.1e})")
    small = cost_onnx(out / "model.onnx", name="CGaP LeNet-5")
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(zoo.build("lenet5"), (1, 1, 28, 28), Path(tmp) / "lenet5.onnx")
        base = cost_onnx(Path(tmp) / "lenet5.onnx", name="LeNet-5")
    atomic_write_text(out / "fpga_cost.json", small.to_json() + "\n")
    tb, ts = base.totals(), small.totals()

    def pct(k: str) -> str:
        return f"{100 * (ts[k] / tb[k] - 1):+.0f}%"
    console.print(f"FPGA cost per inference (paper's setup, 300 MHz): latency {ts['latency_ms'] * 1e3:.1f} us "
                  f"({pct('latency_ms')} vs LeNet-5), DRAM energy {ts['dram_energy_pj'] * 1e-6:.2f} uJ "
                  f"({pct('dram_energy_pj')}), buffer energy {ts['buffer_energy_pj'] * 1e-6:.2f} uJ "
                  f"({pct('buffer_energy_pj')}); wrote {out / 'fpga_cost.json'}")


@app.command("zoo")
def zoo_cmd():
    """List the built-in models (use their names as MODEL)."""
    from rich.table import Table
    table = Table(header_style="bold")
    table.add_column("name")
    table.add_column("input")
    table.add_column("parameters", justify="right")
    table.add_column("description")
    for name, entry in zoo.ZOO.items():
        n = sum(p.numel() for p in zoo.build(name).parameters())
        table.add_row(name, "x".join(map(str, entry.input_shape)), f"{n:,}", entry.description)
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
