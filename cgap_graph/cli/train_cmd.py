"""``cgap-graph train``: a CGaP run (Algorithm 1) or a Small-World run, every hyper-parameter an option.

The hyper-parameter options are generated from ``TrainConfig``'s fields, so the command line, the
TOML file and the Python API name the same settings.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import torch
import typer

from cgap_graph.cli.common import ARCH, ARCH_KWARGS, INPUT_SHAPE, TRUST, ModelRequest, console, keyword, run_command
from cgap_graph.cli.report import fmt_count
from cgap_graph.errors import CgapError, check_number
from cgap_graph.ir.graph import trace
from cgap_graph.passes.cgap.seed import seed as seed_pass
from cgap_graph.run.checkpoint import CHECKPOINT, load_checkpoint, saved_meta
from cgap_graph.run.config import TrainConfig, load_config, read_config
from cgap_graph.run.data import info as data_info
from cgap_graph.run.loop import train_run
from cgap_graph.run.small_world import train_small_world
from cgap_graph.run.sources import kind_of, open_source

HYPER_HELP = {
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
    "budget": "Prune towards a deployment budget instead, reached at --prune-end: params=9500, flops=0.5M, "
              "fpga-latency=1.5ms, fpga-energy=20uJ or ort-latency=2ms@1 (see 'cgap-graph prune --help').",
    "round_to": "Keep every grown or pruned width a multiple of N (8, 16 or the FPGA array's pof).",
    "zero_survivors": "Keep Algorithm 3's zeroed weights in the units that stay (paper); "
                      "--no-zero-survivors gives them back: the zeros only choose the units to remove.",
    "saliency": "taylor (paper), magnitude or random.",
    "growth_saliency": "Scores that growth picks units by (default: --saliency); random: the paper's Fig. 7 ablation.",
    "keep_zeros": "The weights Algorithm 3 zeroed in the units that stay remain zero to the end (masked after "
                  "every step), so the final model is as sparse as the paper's pruning-only rows count it.",
    "restart_lr": "Once pruning is over, restart the learning rate at this value, decayed over the epochs left.",
    "saliency_batches": "Batches for each saliency estimate.",
    "seed": "Random seed.",
    "device": "cpu (default) or cuda[:N].",
    "eval_batch_size": "Batch size for evaluation.",
    "train_limit": "Use only the first N training images (quick runs).",
    "test_limit": "Use only the first N test images.",
    "loss": "cross-entropy (classification), pixel-cross-entropy (segmentation: logits N,C,H,W vs labels N,H,W), "
            "mse (regression) or module:function(output, target) -> scalar tensor.",
    "metric": "What the logs report and tau_accu gates (higher is better): accuracy, miou, neg-mse, r2 or "
              "module:function(output, target) -> float. Default: accuracy, miou for pixel-cross-entropy, neg-mse "
              "for mse.",
    "val_split": "Data without a test split (an image folder without train/ and val/, arrays with only x and y): "
                 "this seeded fraction is held out for testing (0.2).",
    "mean": "Per-channel mean for normalising images, e.g. 0.5,0.5,0.5 (default: computed on the training split).",
    "std": "Per-channel standard deviation for normalising images (default: computed on the training split).",
}
_SW = "Small-World pruning (--method small-world)"
_SW_KEYS = ("density", "rewire_p", "topology", "connection_prune_rate", "finetune_epochs", "finetune_lr")
_BASE_KEYS = ("model", "dataset", "out", "config", "resume", "overwrite", "data_dir", "width", "seed_width",
              "input_shape", "arch", "arch_kwargs", "trust", "tensorboard")
DATASET_HELP = ("mnist, fashion-mnist, cifar10 or mnist-mini (built in); an image folder (CLASS/IMAGE.png, "
                "optionally train/ and val/ inside); an .npz or .pt file with x and y arrays; or module:function "
                "returning (train, test) datasets or loaders, imported from the current directory.")


def train(**kw):
    """Train with CGaP (Algorithm 1): grow while under capacity, prune once accurate, fine-tune.

    MODEL is a zoo name (start from a seed with --seed-width 0.125) or a model file (a seed made
    with 'cgap-graph seed' carries its capacity). Every epoch appends to OUT/metrics.jsonl and
    checkpoints to OUT/checkpoint.pt; --resume continues a killed run (the same options, or none:
    the checkpoint keeps them; only --epochs, --device, --eval-batch-size and --test-limit may
    change).

    \b
        cgap-graph train --model lenet5 --seed-width 0.25 --dataset mnist --epochs 60
        cgap-graph train --model seed.pt --dataset cifar10 --config cgap.toml
        cgap-graph train --out runs/lenet5-mnist --resume
        cgap-graph train --arch mymodel.py:Net --input-shape 1,3,32,32 --dataset images/ --seed-width 0.5
    """
    base = {k: kw.pop(k) for k in _BASE_KEYS}
    method = kw.pop("method")
    small_world = {k: kw.pop(k) for k in _SW_KEYS}
    layer_rates = kw.pop("gamma_w_layer") or []
    stem = Path(base["model"] or (base["arch"] or "lenet5").partition(":")[0]).stem
    out = base.pop("out") or Path("runs") / f"{stem}-{Path(base['dataset'] or 'run').stem}"
    hint = f"the last finished epoch is in {out}/checkpoint.pt; continue with: cgap-graph train --out {out} --resume"

    def body():
        kw["gamma_w_layers"] = _layer_rates(layer_rates) if layer_rates else None
        if method == "small-world":
            return _small_world(out, kw, small_world, **base)
        if method != "cgap":
            raise CgapError(f"--method must be cgap or small-world, got '{method}'")
        if small_world["density"] is not None:
            raise CgapError("--density is for --method small-world; add --method small-world")
        return _cgap(out, kw, **base)
    run_command(body, on_interrupt=hint)


def _layer_rates(items: list[str]) -> dict[str, float]:
    parsed = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            parsed[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise CgapError(f"--gamma-w-layer '{item}' must look like NAME=RATE, e.g. fc1=0.9")
        check_number(f"gamma_w_layer {name}", parsed[name], 0.0, 1.0, lo_open=True, hi_open=True)
    return parsed


def _request(model, input_shape, arch, arch_kwargs, trust, width) -> ModelRequest:
    """MODEL; with --arch and no --model, the user's architecture built fresh."""
    return ModelRequest(model or ("" if arch else "lenet5"), input_shape, None, arch, arch_kwargs, trust, width)


def _shape_of_data(dataset: str, data_dir) -> tuple[int, ...] | None:
    """The input shape the data implies (a built-in's, an array file's samples), if any."""
    if kind_of(dataset) == "folder":
        return None
    return (1, *open_source(dataset, None, data_dir=data_dir).sample_shape)


def _explicit(config: Path | None, hyper: dict[str, Any]) -> dict[str, Any]:
    """The settings the user gave (TOML file, then options), as --resume compares them."""
    given = read_config(config) if config is not None else {}
    given.update({k: v for k, v in hyper.items() if v is not None})
    return given


def _cgap(out: Path, hyper: dict, model, dataset, config, resume, overwrite, data_dir, width, seed_width,
          input_shape, arch, arch_kwargs, trust, tensorboard):
    inputs = [p for p in (model, config) if p is not None and Path(p).exists()]
    if resume:
        shape, saved_dataset = _resumed(out)
        if dataset is None and saved_dataset is None:
            raise CgapError(f"--resume: the checkpoint in {out} does not name its dataset; give --dataset")
        res = train_run(None, shape, dataset or saved_dataset, out, None, data_dir=data_dir,
                        resume=True, console=console, overrides=_explicit(config, hyper),
                        meta={"model": model} if model else None, inputs=inputs, tensorboard=tensorboard)
        return _print_run(res)
    if dataset is None:
        raise CgapError("give --dataset (mnist, fashion-mnist, cifar10, mnist-mini, an image folder, an .npz/.pt "
                        "file or module:function)")
    cfg = load_config(config, hyper)
    check_number("seed_width", seed_width, 0.0, 1.0, lo_open=True, meaning="a fraction of the reference widths")
    req = _request(model, input_shape, arch, arch_kwargs, trust, width)
    loaded = req.load()
    shape = req.shapes(loaded, _shape_of_data(dataset, data_dir))[0]
    torch.manual_seed(cfg.seed)
    cg = trace(loaded.model, shape)
    reference = loaded.meta.get("capacity")
    if seed_width < 1:
        rep = seed_pass(cg, seed_width, select="first", reinit=loaded.source in ("zoo", "arch"),
                        generator_seed=cfg.seed)
        reference = rep.reference_widths
    res = train_run(cg.module, shape, dataset, out, cfg, data_dir=data_dir, reference_widths=reference,
                    console=console, meta={"model": req.model or arch, "dataset": dataset}, overwrite=overwrite,
                    inputs=req.inputs + inputs, tensorboard=tensorboard)
    _print_run(res)


def _resumed(out: Path) -> tuple[tuple[int, ...], str | None]:
    """Input shape and dataset of the checkpointed run (older checkpoints may name neither)."""
    meta = saved_meta(load_checkpoint(out / CHECKPOINT, out))
    dataset = meta.get("dataset")
    shape = meta.get("input_shape") or (1, *data_info(dataset or "mnist").shape)
    return tuple(shape), dataset


def _small_world(out: Path, hyper: dict, small_world: dict, model, dataset, config, resume, overwrite, data_dir,
                 width, seed_width, input_shape, arch, arch_kwargs, trust, tensorboard):
    """Small-World pruning: masks before training, training with the masks fixed, optimise, fine-tune."""
    if dataset is None:
        raise CgapError("give --dataset (mnist, fashion-mnist, cifar10, mnist-mini, an image folder, an .npz/.pt "
                        "file or module:function)")
    if tensorboard is not None:
        raise CgapError("--tensorboard is for --method cgap for now; Small-World runs write metrics.jsonl")
    cfg = load_config(config, hyper)
    sw = {"p": small_world["rewire_p"], "topology": small_world["topology"],
          "prune_rate": small_world["connection_prune_rate"], "finetune_epochs": small_world["finetune_epochs"],
          "finetune_lr": small_world["finetune_lr"]}
    if resume:
        res = train_small_world(None, _shape_of_data(dataset, data_dir) or (1, 3, 32, 32), dataset, out, cfg,
                                resume=True, data_dir=data_dir, console=console)
    else:
        if seed_width != 1:
            raise CgapError("--seed-width is for CGaP; Small-World pruning starts from the full model")
        if small_world["density"] is None:
            raise CgapError("--method small-world needs --density, the fraction of weights to keep, e.g. 0.03")
        req = _request(model, input_shape, arch, arch_kwargs, trust, width)
        loaded = req.load()
        shape = req.shapes(loaded, _shape_of_data(dataset, data_dir))[0]
        torch.manual_seed(cfg.seed)
        res = train_small_world(loaded.model, shape, dataset, out, cfg, density=small_world["density"],
                                rescale_init=loaded.source in ("zoo", "arch"), data_dir=data_dir, console=console,
                                meta={"model": req.model, "dataset": dataset}, overwrite=overwrite,
                                inputs=req.inputs + [p for p in (config,) if p is not None],
                                **{k: v for k, v in sw.items() if v is not None})
    console.print(f"done: test accuracy {100 * res.test_accuracy:.2f}%, {res.params_kept:,} of "
                  f"{res.params_dense:,} parameters kept ({100 * res.kept_fraction:.2f}%), widths "
                  f"{'-'.join(str(w) for w in res.widths.values())}; wrote {res.out_dir}/ (model.pt, masks.pt, "
                  "topology.json, summary.json, train/, finetune/)", markup=False)


def _print_run(res) -> None:
    metric = getattr(res, "metric", "accuracy")
    shown = f"accuracy {100 * res.test_accuracy:.2f}%" if metric == "accuracy" else f"{metric} {res.test_accuracy:.4f}"
    console.print(f"done: {res.epochs} epochs, test {shown}, "
                  f"{res.params:,} parameters, FLOPs {fmt_count(res.flops)}, widths "
                  f"{'-'.join(str(w) for w in res.widths.values())}; wrote {res.out_dir}/ (model.pt, metrics.jsonl, "
                  "params.png, widths.png, checkpoint.pt)", markup=False)


# ---- the generated signature ---------------------------------------------------------------------------------
def _opt(name: str, annotation: Any, default: Any, *decls: str, help: str = "", metavar: str | None = None,
         panel: str | None = None) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=typer.Option(
        default, *decls, help=help, metavar=metavar, rich_help_panel=panel))


def _base_params() -> list[inspect.Parameter]:
    return [
        _opt("model", str | None, None, "--model", metavar="MODEL", help="Zoo name or model file (default lenet5)."),
        _opt("dataset", str | None, None, "--dataset", metavar="DATASET", help=DATASET_HELP + " A resumed run "
             "knows its own."),
        _opt("out", Path | None, None, "--out", metavar="DIR", help="Run folder (default runs/MODEL-DATASET)."),
        _opt("config", Path | None, None, "--config", metavar="FILE", help="TOML file of hyper-parameters ([train] "
             "table or top level); options given here win."),
        _opt("resume", bool, False, "--resume", help="Continue the run in --out from its last checkpoint."),
        _opt("tensorboard", Path | None, None, "--tensorboard", metavar="DIR", help="Also write TensorBoard event "
             "files to DIR: loss, metric, parameters, FLOPs, widths per group and the growth/pruning events."),
        _opt("overwrite", bool, False, "--overwrite", help="Start a new run in an --out that holds one (its files "
             "are replaced)."),
        _opt("data_dir", str | None, None, "--data-dir", metavar="DIR", help="Folder holding the datasets "
             "(default $CGAP_DATA_DIR)."),
        _opt("width", float, 1.0, "--width", metavar="W", help="Width of the zoo reference model."),
        _opt("seed_width", float, 1.0, "--seed-width", metavar="W", help="Start from a seed this fraction of the "
             "reference widths, e.g. 0.125."),
        keyword("input_shape", INPUT_SHAPE, list[str] | None), keyword("arch", ARCH, str | None),
        keyword("arch_kwargs", ARCH_KWARGS, str | None), keyword("trust", TRUST, bool),
        _opt("method", str, "cgap", "--method", metavar="METHOD", help="cgap (grow and prune while training) or "
             "small-world (fixed sparse masks chosen before training, then optimise; needs --density)."),
        _opt("density", float | None, None, "--density", metavar="D", panel=_SW,
             help="Fraction of Conv/Linear weights the masks keep, e.g. 0.03."),
        _opt("rewire_p", float | None, None, "--rewire-p", metavar="P", panel=_SW, help="Rewiring probability in "
             "[0, 1] (default: chosen to maximise the small-world coefficient)."),
        _opt("topology", str, "small-world", "--topology", metavar="T", panel=_SW,
             help="small-world or random (the ablation: same density)."),
        _opt("connection_prune_rate", float | None, None, "--connection-prune-rate", metavar="R", panel=_SW,
             help="Optimise step: fraction of each layer's remaining connections pruned by saliency (default 0.3)."),
        _opt("finetune_epochs", int | None, None, "--finetune-epochs", metavar="N", panel=_SW,
             help="Fine-tuning epochs after the optimise step (default: a third of --epochs)."),
        _opt("finetune_lr", float | None, None, "--finetune-lr", metavar="LR", panel=_SW,
             help="Fine-tuning learning rate (default: --lr / 10)."),
        _opt("gamma_w_layer", list[str] | None, None, "--gamma-w-layer", metavar="MODULE=RATE",
             help="Per-layer gamma_W (repeat), e.g. fc1=0.92."),
    ]


def _hyper_params() -> list[inspect.Parameter]:
    params = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("extra", "gamma_w_layers"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            params.append(_opt(f.name, bool | None, None, f"{flag}/--no-{flag[2:]}", help=HYPER_HELP.get(f.name, "")))
            continue
        typ, metavar = ((int, "N") if f.type in ("int", "int | None") else
                        (float, "X") if f.type in ("float", "float | None") else (str, "TEXT"))
        params.append(_opt(f.name, typ | None, None, flag, metavar=metavar, help=HYPER_HELP.get(f.name, "")))
    return params


train.__signature__ = inspect.Signature(_base_params() + _hyper_params())
