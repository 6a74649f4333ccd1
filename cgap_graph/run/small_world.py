"""Small-World pruning end to end (issue #6): masks before training, training, optimising.

    res = train_small_world(zoo.build("lenet5"), (1, 1, 28, 28), "mnist", "runs/sw", TrainConfig(epochs=30),
                            density=0.04)
    res.params_kept, res.kept_fraction, res.test_accuracy

1. ``passes.small_world.build_masks``: Small-World (or, ``topology="random"``, random) masks at
   ``density`` of the Conv/Linear weights, saved to ``OUT/masks.pt`` with their report
   ``OUT/topology.json``;
2. plain training with the masks fixed (``train_run`` with no growth or pruning; the masks are
   re-applied after every optimizer step) into ``OUT/train/``;
3. ``passes.small_world_optimise.optimise``: dead units removed, the lowest-saliency
   ``prune_rate`` of each layer's connections pruned, dead units removed again; then fine-tuning
   with the new masks kept (``finetune_epochs``, ``finetune_lr``) into ``OUT/finetune/``;
4. the final shrunk model in ``OUT/model.pt``, its numbers in ``OUT/summary.json``.

``resume=True`` continues a stopped run where it stopped, with the masks and settings it saved
(``OUT/settings.json``), whatever is passed now. Every input is checked before anything is written.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cgap_graph.errors import CgapError
from cgap_graph.io.atomic import atomic_write_text
from cgap_graph.io.model_io import load_model, save_model
from cgap_graph.io.outputs import check_run_dir
from cgap_graph.ir.graph import trace
from cgap_graph.passes.small_world import (
    TOPOLOGIES,
    MaskKeeper,
    apply_masks,
    build_masks,
    load_masks,
    rescale_init,
    save_masks,
)
from cgap_graph.passes.small_world.budget import check_density
from cgap_graph.passes.small_world.optimise import kept_params, optimise
from cgap_graph.passes.small_world.topology import check_probability
from cgap_graph.run.checkpoint import CHECKPOINT
from cgap_graph.run.config import TrainConfig
from cgap_graph.run.epochs import evaluate
from cgap_graph.run.loop import RunResult, train_run
from cgap_graph.run.sources import Source, make_loader, open_source, parse_floats
from cgap_graph.run.tasks import make_task

SETTINGS = "settings.json"
MASKS = "masks.pt"
_FILES = (MASKS, SETTINGS, "topology.json", "summary.json", "model.pt", "train/model.pt", "finetune/model.pt")


@dataclass
class SmallWorldResult(RunResult):
    """``RunResult`` of the whole run (``params``: tensor entries of the final shrunk model, as
    ``train_run`` counts them) plus what Small-World pruning is judged on."""

    params_kept: int = 0  # nonzero Conv/Linear weights + every other parameter entry, final model
    params_dense: int = 0  # parameters of the model before masking
    kept_fraction: float = math.nan
    density: float = math.nan  # of the masks before training (Conv/Linear weights)
    p: float | None = None
    topology: str = "small-world"
    stage: str = "done"  # where a run stopped by stop_after is: "train" | "finetune" | "done"
    train_result: RunResult | None = None
    optimise: dict[str, Any] = field(default_factory=dict)


def _settings(density, p, exclude, topology, prune_rate, saliency, finetune_epochs, finetune_lr, seed, allocation,
              rescale, config: TrainConfig, input_shape, dataset, model) -> dict[str, Any]:
    """Every option checked (one-line errors, before anything is written), as saved for resuming."""
    if model is None:
        raise CgapError("no model: pass the model to prune (model=None is only for resume=True)")
    if density is None:
        raise CgapError("no density: give the fraction of connections to keep, e.g. density=0.03 (--density 0.03)")
    if topology not in TOPOLOGIES:
        raise CgapError(f"topology must be one of {', '.join(TOPOLOGIES)}, got '{topology}'")
    if saliency not in ("taylor", "magnitude"):
        raise CgapError(f"saliency must be taylor or magnitude, got '{saliency}'")
    ft_epochs = max(1, round(config.epochs / 3)) if finetune_epochs is None else finetune_epochs
    if not isinstance(ft_epochs, int) or ft_epochs < 0:
        raise CgapError(f"finetune_epochs must be an integer >= 0, got {finetune_epochs}")
    ft_lr = config.lr / 10 if finetune_lr is None else finetune_lr
    if not isinstance(ft_lr, (int, float)) or not ft_lr > 0:
        raise CgapError(f"finetune_lr must be > 0, got {finetune_lr}")
    if isinstance(exclude, str):
        raise CgapError(f"exclude must be a list of layer names, got the string '{exclude}'; use ['{exclude}']")
    return {"density": check_density(density),
            "p": None if p is None else check_probability("p (the rewiring probability)", p),
            "exclude": list(exclude), "topology": topology,
            "prune_rate": check_probability("prune_rate", prune_rate), "saliency": saliency,
            "finetune_epochs": ft_epochs, "finetune_lr": float(ft_lr),
            "seed": config.seed if seed is None else int(seed), "allocation": allocation,
            "rescale_init": bool(rescale),
            "input_shape": list(input_shape), "dataset": dataset, "config": config.to_dict(),
            "params_dense": sum(q.numel() for q in model.parameters())}


@dataclass
class _Run:
    """What every stage of one run needs."""

    out: Path
    settings: dict[str, Any]
    cfg: TrainConfig
    dataset: str
    data_dir: str | None
    console: Any
    progress: bool
    stop_after: int | None
    meta: dict[str, Any]
    overwrite: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.settings["input_shape"])

    def train(self, model, run_dir: Path, cfg: TrainConfig, masks, resume: bool) -> RunResult:
        return train_run(model, self.shape, self.dataset, run_dir, cfg, data_dir=self.data_dir, resume=resume,
                         console=self.console, progress=self.progress, stop_after=self.stop_after, meta=self.meta,
                         after_step=MaskKeeper(masks), overwrite=self.overwrite and not resume)


def train_small_world(model: nn.Module | None, input_shape: Sequence[int], dataset: str, out_dir: str | Path,
                      config: TrainConfig, *, density: float | None = None, p: float | None = None,
                      exclude: Sequence[str] = (), topology: str = "small-world", prune_rate: float = 0.3,
                      saliency: str = "taylor", finetune_epochs: int | None = None, finetune_lr: float | None = None,
                      seed: int | None = None, allocation: str = "balanced", rescale_init: bool = True,
                      data_dir: str | None = None, resume: bool = False, progress: bool = True, console=None,
                      stop_after: int | None = None, meta: dict[str, Any] | None = None, overwrite: bool = False,
                      inputs: Sequence[str | Path] = ()) -> SmallWorldResult:
    """Small-World pruning of ``model`` (see module docstring). ``config`` is the training schedule
    (growth and pruning are turned off: ``f_growth = f_pruning = 0``); ``finetune_epochs`` defaults
    to a third of ``config.epochs``, ``finetune_lr`` to ``config.lr / 10``. ``rescale_init`` scales
    the kept weights of a freshly initialised model to its sparse fan-in (``passes.small_world.
    rescale_init``); turn it off for a trained model. ``stop_after`` ends the call after that many
    epochs of the current stage (to test resuming). With ``resume=True``, ``model`` and ``density``
    may be None: the run continues with what it saved. A folder that holds a run is refused
    without ``resume`` or ``overwrite``, and no file the run writes may be one of ``inputs``."""
    out = Path(out_dir)
    if console is None:
        from rich.console import Console
        console = Console()
    cfg = replace(config, f_growth=0, f_pruning=0).validate()
    if resume:
        settings, masks, model = _reopen(out, model)
    else:
        settings = _settings(density, p, exclude, topology, prune_rate, saliency, finetune_epochs, finetune_lr,
                             seed, allocation, rescale_init, cfg, input_shape, dataset, model)
        check_run_dir(out, _FILES, inputs, resume=False, overwrite=overwrite, create=False)
        masks, model = _start(out, model, settings, data_dir, console if progress else None)
    meta = {**(meta or {}), "small_world": {k: settings[k] for k in ("density", "p_chosen", "topology", "exclude")}}
    run = _Run(out, settings, TrainConfig(**settings["config"]).validate(), settings["dataset"], data_dir, console,
               progress, stop_after, meta, overwrite)
    first = _train_stage(run, model, masks, resume)
    if first.epochs < run.cfg.epochs:
        return _result(out, settings, first, None, {}, stage="train")
    second, report = _optimise_stage(run, masks, resume)
    if second.epochs < settings["finetune_epochs"]:
        return _result(out, settings, first, second, report, stage="finetune")
    return _finish(out, settings, first, second, report, run.meta)


def _start(out: Path, model: nn.Module, settings: dict[str, Any], data_dir, console) -> tuple[dict, nn.Module]:
    """Step 1: check the data, build and save the masks and settings; a masked copy of the model."""
    dataset, shape = settings["dataset"], tuple(settings["input_shape"])
    open_source(dataset, shape, data_dir=data_dir)  # missing or unfit data fails now, before anything is written
    sw = build_masks(model, shape, settings["density"], topology=settings["topology"], p=settings["p"],
                     exclude=settings["exclude"], seed=settings["seed"], allocation=settings["allocation"])
    settings["p_chosen"] = sw.report.p
    out.mkdir(parents=True, exist_ok=True)
    save_masks(out / MASKS, sw.masks)
    atomic_write_text(out / "topology.json", json.dumps(sw.report.to_dict(), indent=2) + "\n")
    atomic_write_text(out / SETTINGS, json.dumps(settings, indent=2) + "\n")
    if console is not None:
        sw.report.print(console)
    model = copy.deepcopy(model)
    (rescale_init if settings["rescale_init"] else apply_masks)(model, sw.masks)
    return sw.masks, model


def _reopen(out: Path, model: nn.Module | None) -> tuple[dict, dict, nn.Module | None]:
    """Resume: the saved settings and masks; a masked copy of ``model`` if one is given."""
    settings = _load_settings(out)
    masks = load_masks(out / MASKS)
    if model is not None:
        model = copy.deepcopy(model)
        (rescale_init if settings["rescale_init"] else apply_masks)(model, masks)
    return settings, masks, model


def _train_stage(run: _Run, model: nn.Module | None, masks, resume: bool) -> RunResult:
    """Step 2: training with the masks fixed, into OUT/train (or what a resumed run already did)."""
    train_dir = run.out / "train"
    if resume and (train_dir / "summary.json").exists():
        return _finished_result(train_dir)
    again = resume and (train_dir / CHECKPOINT).exists()
    if resume and not again and model is None:
        raise CgapError(f"resume: no checkpoint in {train_dir}; start the run again without resume")
    return run.train(None if again else model, train_dir, run.cfg, masks, again)


def _optimise_stage(run: _Run, masks, resume: bool) -> tuple[RunResult, dict[str, Any]]:
    """Step 3: optimise the trained model, then fine-tune it with the new masks, into OUT/finetune."""
    ft_dir = run.out / "finetune"
    ft_epochs = run.settings["finetune_epochs"]
    ft_cfg = replace(run.cfg, epochs=max(1, ft_epochs), lr=run.settings["finetune_lr"])
    if resume and (ft_dir / "summary.json").exists():
        return _finished_result(ft_dir), _read_json(ft_dir / "optimise.json")
    if resume and (ft_dir / CHECKPOINT).exists():
        return (run.train(None, ft_dir, ft_cfg, load_masks(ft_dir / MASKS), True),
                _read_json(ft_dir / "optimise.json"))
    cg, new_masks, report = _optimise(run.out / "train", run.shape, run.dataset, masks, run.settings, run.cfg,
                                      run.data_dir)
    ft_dir.mkdir(parents=True, exist_ok=True)
    save_masks(ft_dir / MASKS, new_masks)
    atomic_write_text(ft_dir / "optimise.json", json.dumps(report, indent=2) + "\n")
    if run.progress:
        removed = report["removed_dead"] | report["removed_after_pruning"]
        run.console.print(f"optimised: {report['params_before']:,} -> {report['params_after']:,} parameters kept, "
                          f"pruned {sum(report['pruned'].values()):,} connections, removed units {removed or 'none'}")
    if ft_epochs == 0:
        return _evaluate_only(cg, run.shape, run.dataset, ft_dir, ft_cfg, run.data_dir, run.meta), report
    return run.train(cg.module, ft_dir, ft_cfg, new_masks, False), report


def _optimise(train_dir: Path, shape, dataset, masks, settings, cfg: TrainConfig, data_dir):
    trained = load_model(str(train_dir / "model.pt")).model
    cg = trace(trained, shape)
    loader = make_loader(_source(dataset, shape, cfg, data_dir), "train", cfg.batch_size, limit=cfg.train_limit,
                         seed=cfg.seed + 1, augment=False)
    new_masks, rep = optimise(cg, masks, rate=settings["prune_rate"], data=loader, saliency=settings["saliency"],
                              batches=cfg.saliency_batches)
    return cg, new_masks, rep.to_dict()


def _evaluate_only(cg, shape, dataset, ft_dir: Path, cfg: TrainConfig, data_dir, meta) -> RunResult:
    """No fine-tuning: the optimised model as it is, evaluated and saved like a finished run."""
    test = make_loader(_source(dataset, shape, cfg, data_dir), "test", cfg.eval_batch_size, limit=cfg.test_limit,
                       shuffle=False)
    task = make_task(cfg.loss, cfg.metric).fit(cg.output_shapes())
    acc = evaluate(cg.module, test, torch.device("cpu"), task.loss, task.metric).accuracy
    save_model(cg.module, ft_dir / "model.pt", meta={**meta, "input_shape": list(shape)})
    res = RunResult(ft_dir, 0, acc, cg.param_count(), cg.flops(), {g.id: g.width for g in cg.groups}, 0.0, 0.0)
    atomic_write_text(ft_dir / "summary.json", json.dumps(_summary_of(res), indent=2) + "\n")
    return res


def _source(dataset: str, shape, cfg: TrainConfig, data_dir) -> Source:
    return open_source(dataset, shape, data_dir=data_dir, val_split=cfg.val_split, seed=cfg.seed,
                       mean=parse_floats(cfg.mean, "mean"), std=parse_floats(cfg.std, "std"))


def _summary_of(res: RunResult) -> dict[str, Any]:
    return {"epochs": res.epochs, "test_accuracy": res.test_accuracy, "params": res.params, "flops": res.flops,
            "widths": res.widths, "train_flops": res.train_flops, "seconds": res.seconds}


def _finished_result(run_dir: Path) -> RunResult:
    s = _read_json(run_dir / "summary.json")
    metrics = []
    if (run_dir / "metrics.jsonl").exists():
        metrics = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return RunResult(run_dir, s["epochs"], s["test_accuracy"], s["params"], s["flops"],
                     {int(k): v for k, v in s["widths"].items()}, s["train_flops"], s["seconds"], metrics)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CgapError(f"resume: {path} is missing or damaged ({type(exc).__name__}); start a new run") from None


def _load_settings(out: Path) -> dict[str, Any]:
    if not (out / SETTINGS).exists():
        raise CgapError(f"resume: no Small-World run in {out} ({SETTINGS} is missing); start without resume")
    return _read_json(out / SETTINGS)


def _result(out: Path, settings, first: RunResult, second: RunResult | None, report, stage: str,
            params_kept: int = 0) -> SmallWorldResult:
    last = second or first
    metrics = [{**m, "stage": "train"} for m in first.metrics] + \
              ([{**m, "stage": "finetune"} for m in second.metrics] if second else [])
    dense = settings["params_dense"]
    return SmallWorldResult(
        out, first.epochs + (second.epochs if second else 0), last.test_accuracy, last.params, last.flops,
        last.widths, first.train_flops + (second.train_flops if second else 0.0),
        first.seconds + (second.seconds if second else 0.0), metrics, params_kept=params_kept, params_dense=dense,
        kept_fraction=params_kept / dense if params_kept else math.nan, density=settings["density"],
        p=settings.get("p_chosen"), topology=settings["topology"], stage=stage, train_result=first, optimise=report)


def _finish(out: Path, settings, first: RunResult, second: RunResult, report, meta) -> SmallWorldResult:
    """The final shrunk model to ``OUT/model.pt`` and the run's numbers to ``OUT/summary.json``."""
    final = load_model(str(second.out_dir / "model.pt")).model
    kept = kept_params(final)
    res = _result(out, settings, first, second, report, "done", kept)
    save_model(final, out / "model.pt", meta={**meta, "input_shape": settings["input_shape"], "params_kept": kept})
    summary = {**_summary_of(res), "params_kept": kept, "params_dense": res.params_dense,
               "kept_fraction": res.kept_fraction, "params_kept_counts": "nonzero Conv/Linear weights + all biases "
               "and other parameters of the final shrunk model", "density": res.density, "p": res.p,
               "topology": res.topology, "accuracy_after_training": first.test_accuracy,
               "settings": settings, "optimise": report}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return res
