"""``train_run``: the whole CGaP loop behind ``cgap-graph train``.

Data, learning-rate schedule, evaluation, one JSON line of metrics per epoch, an atomic
checkpoint per epoch (``resume=True`` continues a killed run at the same epoch, architecture and
random state), plots, and a NaN loss that stops the run with the last good checkpoint kept.
Under torchrun the same loop runs data-parallel, every rank taking the same structural
decisions (``distributed.py``). A run folder is never reused by accident: one that holds a run
is continued only with ``resume=True`` or replaced only with ``overwrite=True``, and no file the
run writes may be one of its ``inputs``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cgap_graph.errors import CgapError
from cgap_graph.io import serialize
from cgap_graph.io.atomic import atomic_write_text
from cgap_graph.io.model_io import save_model
from cgap_graph.io.outputs import check_run_dir
from cgap_graph.passes.cgap.seed import group_key
from cgap_graph.run import distributed
from cgap_graph.run.checkpoint import (
    CHECKPOINT,
    DIST_REPORT,
    METRICS,
    load_checkpoint,
    restore_state,
    resume_settings,
    save_checkpoint,
)
from cgap_graph.run.config import TrainConfig
from cgap_graph.run.epochs import EpochResult, evaluate, train_epoch
from cgap_graph.run.hook import CGaP, Event
from cgap_graph.run.plots import plot_params, plot_widths
from cgap_graph.run.progress import epoch_bar
from cgap_graph.run.sources import Source, check_source, make_loader, open_source, parse_floats
from cgap_graph.run.tasks import Task, make_task
from cgap_graph.run.tensorboard_log import TensorBoardLog

RUN_FILES = (CHECKPOINT, METRICS, "model.pt", "summary.json", "params.png", "widths.png", DIST_REPORT)


@dataclass
class RunResult:
    out_dir: Path
    epochs: int
    test_accuracy: float
    params: int
    flops: int
    widths: dict[int, int]
    train_flops: float
    seconds: float
    metrics: list[dict[str, Any]] = field(default_factory=list)
    metric: str = "accuracy"  # what test_accuracy measures (--metric)


@dataclass
class _Run:
    """The state of one run between epochs."""

    out: Path
    dataset: str
    input_shape: tuple[int, ...]
    config: TrainConfig
    cgap: CGaP
    optimizer: torch.optim.Optimizer
    loaders: tuple
    device: torch.device
    ctx: Any
    console: Any
    progress: bool
    meta: dict[str, Any] | None
    task: Task
    metrics: list[dict[str, Any]] = field(default_factory=list)
    net: nn.Module | None = None
    step_hook: Callable | None = None
    train_flops: float = 0.0
    t_run: float = 0.0
    start: int = 1
    prints: list = field(default_factory=list)
    tb: TensorBoardLog | None = None

    @property
    def main(self) -> bool:
        return self.ctx is None or self.ctx.is_main


def train_run(model: nn.Module | None, input_shape: tuple[int, ...], dataset: str, out_dir: str | Path,
              config: TrainConfig | None, *, data_dir: str | None = None, resume: bool = False,
              reference_widths: dict[str, int] | None = None, console=None, progress: bool = True,
              stop_after: int | None = None, meta: dict[str, Any] | None = None,
              loss_fn: Callable | None = None, after_step: Callable[[nn.Module], None] | None = None,
              overwrite: bool = False, inputs: Sequence[str | Path] = (), overrides: dict[str, Any] | None = None,
              tensorboard: str | Path | None = None) -> RunResult:
    """Algorithm 1 end to end (see module docstring). ``stop_after`` ends the run after that many
    epochs of this call (used to test resuming). ``dataset`` is any data source (``sources.py``: a
    built-in name, an image folder, an .npz/.pt file, module:function). The loss and metric are
    ``config.loss`` and ``config.metric`` (``tasks.py``); ``loss_fn(logits, targets, reduction=...)``
    replaces the loss for training, saliency and evaluation alike. ``tensorboard``: a folder for
    TensorBoard event files. ``after_step(model)`` runs after every optimizer
    step (give it again when resuming).

    With ``resume=True`` the checkpoint's model and settings are used (``model`` and ``config`` are
    ignored); ``overrides`` are settings the caller asks for explicitly, checked against the
    checkpoint (a mismatch is refused, a safe change applied, see ``checkpoint.py``), and so is
    ``meta``'s model and dataset.

    Under torchrun (WORLD_SIZE > 1) the run is data-parallel (see ``distributed.py``):
    ``config.batch_size`` is the global batch, split across the ranks; training, saliency and
    evaluation metrics are reduced over all ranks; only rank 0 writes files and prints (the
    console of the other ranks is silenced)."""
    if console is None:
        from rich.console import Console
        console = Console()
    run = _open(model, tuple(input_shape), dataset, Path(out_dir), config, data_dir, resume, reference_widths,
                console, progress, meta, loss_fn, after_step, overwrite, inputs, overrides)
    start = last = run.start
    last -= 1
    if tensorboard is not None and run.main:
        run.tb = TensorBoardLog(tensorboard, start)
    try:
        with distributed.guard(run.ctx):  # a lost rank becomes one clear error, not a traceback
            for epoch in range(start, run.config.epochs + 1):
                _epoch(run, epoch)
                last = epoch
                if stop_after is not None and epoch - start + 1 >= stop_after:
                    break
    finally:
        if run.tb is not None:
            run.tb.close()
    return _finish(run, last)


def _open(model, input_shape, dataset, out, config, data_dir, resume, reference_widths, console, progress, meta,
          loss_fn, after_step, overwrite, inputs, overrides) -> _Run:
    """Check every input, then set up the hook, optimizer and loaders (nothing is written before)."""
    hint = (overrides or {}).get("device") or (config.device if config is not None else "cpu")
    ctx = distributed.setup(hint)
    saved = None
    if resume:  # every rank resumes from rank 0's checkpoint (no shared file system needed)
        read = lambda: load_checkpoint(out / CHECKPOINT, out)  # noqa: E731
        saved = read() if ctx is None else ctx.from_main(read)
        config, applied = resume_settings(saved, overrides, {"dataset": dataset, **(meta or {})})
        model, _ = serialize.from_payload(saved["model"])
    else:
        config.validate()
    task = make_task(config.loss, config.metric)
    if loss_fn is not None:
        task.loss = loss_fn
    src = open_source(dataset, input_shape, data_dir=data_dir, val_split=config.val_split, seed=config.seed,
                      mean=parse_floats(config.mean, "mean"), std=parse_floats(config.std, "std"))
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CgapError(f"--device {config.device}: no CUDA device is available here; use --device cpu")
    if ctx is not None:
        device = ctx.device(device)
        if config.batch_size < ctx.world_size:
            raise CgapError(f"--batch-size {config.batch_size} is the global batch: it must be at least the "
                            f"number of processes ({ctx.world_size})")
    loaders = _loaders(src, config, ctx)
    torch.manual_seed(config.seed)
    cgap = CGaP(model, input_shape, config, saliency_data=loaders[2], reference_widths=reference_widths,
                loss_fn=task.loss)
    check_source(src, input_shape, cgap.cg.output_shapes(), task)
    task.fit(cgap.cg.output_shapes())
    check = lambda: check_run_dir(out, RUN_FILES, inputs, resume=resume, overwrite=overwrite)  # noqa: E731
    check() if ctx is None else ctx.from_main(check)  # the data fit the model: now the folder is made
    for line in src.notes:
        console.print(f"note: {dataset}: {line}", markup=False)
    cgap.dist = ctx
    cgap.model.to(device)
    run = _Run(out, dataset, input_shape, config, cgap, cgap.make_optimizer(), loaders, device, ctx, console,
               progress, meta, task)
    if saved is not None:
        _restore(run, saved)
        console.print(f"resuming {out} at epoch {saved['epoch'] + 1} of {config.epochs}" +
                      (f" ({'; '.join(applied)})" if applied else ""), soft_wrap=True, markup=False)
    elif run.main:
        for name in RUN_FILES:  # overwrite=True: the old run's files go, none is mixed into the new one
            (out / name).unlink(missing_ok=True)
    if not run.main:
        console.quiet = True  # one log per run: rank 0's
    run.net = cgap.model if ctx is None else ctx.wrap(cgap.model, device)  # what the training steps run
    run.step_hook = after_step if ctx is None or after_step is None else (lambda m: after_step(m.module))
    if config.keep_zeros:  # the zeroed weights stay zero: masks first, then the caller's hook
        run.step_hook = _masked_steps(cgap, run.step_hook)
    run.t_run = time.perf_counter() - (run.metrics[-1]["seconds"] if run.metrics else 0.0)
    run.train_flops = run.metrics[-1]["train_flops_total"] if run.metrics else 0.0
    return run


def _masked_steps(cgap: CGaP, user_hook: Callable | None) -> Callable:
    def step(model: nn.Module) -> None:
        cgap.apply_masks()
        if user_hook is not None:
            user_hook(model)
    return step


def _loaders(src: Source, config: TrainConfig, ctx) -> tuple:
    train = make_loader(src, "train", config.batch_size, limit=config.train_limit, seed=config.seed)
    test = make_loader(src, "test", config.eval_batch_size, limit=config.test_limit, shuffle=False)
    sal = make_loader(src, "train", config.batch_size, limit=config.train_limit, seed=config.seed + 1,
                      augment=False)
    if ctx is not None:  # each rank takes its slice of the same global batches
        train, test, sal = map(ctx.shard, (train, test, sal))
    return train, test, sal


def _restore(run: _Run, saved: dict[str, Any]) -> None:
    run.cgap.load_state(saved["cgap"])
    restore_state(run.optimizer, run.cgap.model, saved["optimizer"])
    torch.set_rng_state(saved["rng"])
    if saved.get("data_rng") is not None and run.loaders[0].generator is not None:
        run.loaders[0].generator.set_state(saved["data_rng"])  # also drives the augmentation
    path = run.out / METRICS
    metrics: list[dict[str, Any]] = []
    if run.main and path.exists():  # drop lines of epochs after the checkpoint
        metrics = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
        metrics = [m for m in metrics if m["epoch"] <= saved["epoch"]]
        atomic_write_text(path, "".join(json.dumps(m) + "\n" for m in metrics))
    run.metrics = metrics if run.ctx is None else run.ctx.from_main(lambda: metrics)
    run.start = saved["epoch"] + 1


def _epoch(run: _Run, epoch: int) -> None:
    """One epoch: train, structural step on schedule, evaluate, log, checkpoint."""
    cgap, ctx, config = run.cgap, run.ctx, run.config
    lr = config.lr_at(epoch, cgap.finetune_from)
    for g in run.optimizer.param_groups:
        g["lr"] = lr
    flops_before = cgap.cg.flops() / cgap.cg.input_specs[0].shape[0]
    res = _train_one(run, epoch)
    if ctx is not None:  # global metrics (they gate pruning); rank 0's buffers for everyone
        res = _reduce(ctx, res, run.task.metric)
        ctx.broadcast_(list(cgap.model.buffers()))
    run.train_flops += 3 * flops_before * res.samples  # forward + backward ~ 3 forwards
    widths_before = {g.id: g.width for g in cgap.cg.groups}
    params_before = [id(p) for p in cgap.model.parameters()]
    _, run.optimizer, events = cgap.on_epoch_end(epoch, res.accuracy, run.optimizer)
    if ctx is not None:
        run.prints = ctx.check_in_step(cgap.model, {g.id: g.width for g in cgap.cg.groups}, f"after epoch {epoch}")
        if events or [id(p) for p in cgap.model.parameters()] != params_before:
            run.net = ctx.wrap(cgap.model, run.device)  # the architecture changed: a new DDP over it
    # the saliency batches of each structural step
    run.train_flops += 3 * flops_before * config.saliency_batches * config.batch_size * sum(
        1 for e in events if e.structural)
    test = evaluate(cgap.model, run.loaders[1], run.device, cgap.loss_fn, run.task.metric)
    if ctx is not None:  # each rank evaluated its slice of the test set
        test = _reduce(ctx, test, run.task.metric)
    row = _metrics_row(run, epoch, lr, res, test, events, widths_before)
    run.metrics.append(row)
    if run.main:
        with open(run.out / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")
        save_checkpoint(run.out / CHECKPOINT, cgap, run.optimizer, config, epoch, run.loaders[0], _ckpt_meta(run))
        if run.tb is not None:
            run.tb.epoch(row, run.task.metric.name.replace(":", "."),
                         {str(g.id): group_key(g).split(".weight")[0] for g in cgap.cg.groups})
    widths = "-".join(str(g.width) for g in cgap.cg.groups)
    name = run.task.metric.name
    shown = (f"train {100 * res.accuracy:.2f}%  test {100 * test.accuracy:.2f}%" if name == "accuracy" else
             f"train {name} {res.accuracy:.4f}  test {name} {test.accuracy:.4f}")
    run.console.print(f"epoch {epoch:3d}/{config.epochs} {row['phase']:10s} lr {lr:.4g}  loss {res.loss:.4f}  "
                      f"{shown}  params {row['params']:,}  "
                      f"widths {widths}" + (f"  [{'; '.join(map(str, events))}]" if events else ""),
                      soft_wrap=True, markup=False)


def _ckpt_meta(run: _Run) -> dict[str, Any]:
    return {**(run.meta or {}), "dataset": run.dataset, "input_shape": list(run.input_shape)}


def _metrics_row(run: _Run, epoch: int, lr: float, res: EpochResult, test: EpochResult, events: list[Event],
                 widths_before: dict[int, int]) -> dict[str, Any]:
    cg = run.cgap.cg
    kinds = {e.kind for e in events}
    phase = ("grow+prune" if kinds >= {"grow", "prune"} else "grow" if "grow" in kinds else
             "prune" if "prune" in kinds else "finetune" if run.cgap.pruning_started else "train")
    row = {"epoch": epoch, "phase": phase, "lr": lr, "loss": res.loss, "train_acc": res.accuracy,
           "test_acc": test.accuracy, "test_loss": test.loss, "metric": run.task.metric.name,
           "train_metric": res.accuracy, "test_metric": test.accuracy, "params": cg.param_count(),
           "flops": cg.flops() / cg.input_specs[0].shape[0],
           "widths": {str(g.id): g.width for g in cg.groups},
           "widths_before": {str(k): v for k, v in widths_before.items()},
           "events": [str(e) for e in events], "train_flops_total": run.train_flops,
           "event_counts": {("grown_groups" if e.kind == "grow" else "pruned_units"): e.count
                            for e in events if e.structural},
           "seconds": time.perf_counter() - run.t_run, "samples": len(run.loaders[0].dataset)}
    if run.ctx is not None:
        row["world_size"] = run.ctx.world_size
    return row


def _train_one(run: _Run, epoch: int) -> EpochResult:
    cgap, loader, console = run.cgap, run.loaders[0], run.console
    kw = dict(epoch=epoch, after_step=run.step_hook, metric=run.task.metric)
    if not run.progress or not console.is_terminal:
        return train_epoch(run.net, loader, run.optimizer, run.device, cgap.loss_fn, **kw)
    total = getattr(loader.batch_sampler, "num_samples", None) or len(loader.dataset)
    with epoch_bar(console, f"epoch {epoch}/{run.config.epochs}", total, run.task.metric.name) as advance:
        return train_epoch(run.net, loader, run.optimizer, run.device, cgap.loss_fn, progress=advance, **kw)


def _reduce(ctx, res: EpochResult, metric) -> EpochResult:
    """Loss, the metric's sums and the sample count over all ranks' shards."""
    loss, n, *state = ctx.sums([res.loss * res.samples, res.samples, *res.state])
    return EpochResult(loss / max(1.0, n), metric.value(state), int(n), state)


def _finish(run: _Run, last: int) -> RunResult:
    cg, metrics = run.cgap.cg, run.metrics
    final = RunResult(run.out, last, metrics[-1]["test_acc"] if metrics else float("nan"), cg.param_count(),
                      cg.flops(), {g.id: g.width for g in cg.groups}, run.train_flops,
                      time.perf_counter() - run.t_run, metrics, run.task.metric.name)
    if run.ctx is not None and run.main:  # each rank's final fingerprint (check_in_step proved them equal)
        atomic_write_text(run.out / DIST_REPORT, json.dumps({
            "world_size": run.ctx.world_size, "backend": run.ctx.backend, "epoch": last, "ranks": run.prints},
            indent=2) + "\n")
    if last == run.config.epochs and run.main:
        run.cgap.model.cpu()
        save_model(run.cgap.model, run.out / "model.pt", meta={
            **(run.meta or {}), "input_shape": list(run.input_shape), "capacity": run.cgap.reference_widths,
            "widths": {str(k): v for k, v in final.widths.items()}})
        _write_plots(run.out, metrics, run.cgap)
        atomic_write_text(run.out / "summary.json", json.dumps({
            "epochs": last, "test_accuracy": final.test_accuracy, "params": final.params, "flops": final.flops,
            "widths": final.widths, "train_flops": run.train_flops, "seconds": final.seconds,
            "metric": run.task.metric.name,
            "config": run.config.to_dict()}, indent=2) + "\n")
    return final


def _write_plots(out: Path, metrics: list[dict[str, Any]], cgap: CGaP) -> None:
    plot_params(metrics, out / "params.png")
    resizable = [g for g in cgap.cg.groups if g.resizable]
    ref = [cgap.reference_widths.get(group_key(g)) for g in resizable]
    labels = [group_key(g).split(".weight")[0] for g in resizable]
    plot_widths(labels, [g.width for g in resizable], ref, out / "widths.png")


__all__ = ["RUN_FILES", "RunResult", "train_run"]
