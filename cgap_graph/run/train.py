"""CGaP training (Algorithm 1) on any model, and the hook that plugs it into your own loop.

``CGaP`` is the hook: call ``on_epoch_end`` after each epoch of your training loop; on the
schedule of the config it grows (Algorithm 2) while under the capacity limit, prunes (Algorithm 3)
once the training accuracy exceeds tau_accu, and hands back the resized model with an optimizer
whose state followed its channels::

    cgap = CGaP(model, (1, 1, 28, 28), TrainConfig(epochs=30), saliency_data=train_loader)
    optimizer = cgap.make_optimizer()
    for epoch in range(1, 31):
        train_one_epoch(cgap.model, optimizer, train_loader)      # your code
        model, optimizer, events = cgap.on_epoch_end(epoch, train_accuracy, optimizer)

``train_run`` is the whole loop behind ``cgap-graph train``: data, learning-rate schedule,
evaluation, one JSON line of metrics per epoch, an atomic checkpoint per epoch (``resume=True``
continues a killed run at the same epoch, architecture and random state), plots, and a NaN loss
that stops the run with the last good checkpoint kept. Under torchrun the same loop runs
data-parallel, every rank taking the same structural decisions (``distributed.py``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cgap_graph.errors import CgapError
from cgap_graph.io import serialize
from cgap_graph.io.atomic import atomic_write, atomic_write_text
from cgap_graph.ir.graph import ChannelGraph, trace
from cgap_graph.run.config import TrainConfig

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
DIST_REPORT = "distributed.json"


class TrainingDiverged(CgapError):
    """The loss became NaN or infinite."""


# ---- the hook ------------------------------------------------------------------------------------------
class CGaP:
    """Algorithm 1 as an epoch-end hook (see module docstring)."""

    def __init__(self, model: nn.Module | ChannelGraph, input_shape: tuple[int, ...] | None = None,
                 config: TrainConfig | None = None, *, saliency_data: Iterable | None = None,
                 reference_widths: dict[str, int] | None = None, loss_fn: Callable = F.cross_entropy,
                 input_dtype: torch.dtype = torch.float32) -> None:
        from cgap_graph.passes.cgap.seed import group_key
        self.config = (config or TrainConfig()).validate()
        self.cg = model if isinstance(model, ChannelGraph) else trace(model, input_shape, input_dtype=input_dtype)
        self.saliency_data = saliency_data
        self.loss_fn = loss_fn
        if reference_widths is None:  # no reference: the starting widths x capacity
            reference_widths = {group_key(g): g.width for g in self.cg.groups if g.resizable}
        self.reference_widths = dict(reference_widths)
        self.growth_done = self.config.f_growth <= 0
        self.pruning_started = False
        self.history: list[dict[str, Any]] = []
        # data-parallel runs: saliency gradients are averaged across ranks and rank 0's scores
        # used by all, so every rank grows and prunes the same units (see distributed.py)
        self.dist: Any = None

    @property
    def model(self) -> torch.fx.GraphModule:
        return self.cg.module

    def make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "adam":
            return torch.optim.Adam(self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        return torch.optim.SGD(self.model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)

    def capacity(self) -> dict[int, int]:
        from cgap_graph.passes.cgap.seed import capacity_by_id
        cap = {k: max(1, int(math.floor(w * self.config.capacity))) for k, w in self.reference_widths.items()}
        return capacity_by_id(self.cg, cap)

    def _saliency(self, epoch: int):
        from cgap_graph.passes.cgap.saliency import unit_scores, weight_scores
        c = self.config
        if c.saliency == "taylor" and self.saliency_data is None:
            raise CgapError("Taylor saliency needs saliency_data (a loader of training batches) or "
                            "config.saliency = 'magnitude'")
        gen = getattr(self.saliency_data, "generator", None)
        if isinstance(gen, torch.Generator):  # the batches depend on the epoch only: resumable
            gen.manual_seed(c.seed * 1000 + epoch)
        sal = weight_scores(self.cg, self.saliency_data, mode=c.saliency, batches=c.saliency_batches,
                            loss_fn=self.loss_fn, train_mode=self.model.training,
                            generator=torch.Generator().manual_seed(c.seed * 1000 + epoch),
                            reduce_grads=self.dist.mean_ if self.dist is not None and c.saliency == "taylor" else None)
        if self.dist is not None:
            self.dist.broadcast_(list(sal.weights.values()))
        return unit_scores(self.cg, sal)

    def on_epoch_end(self, epoch: int, train_accuracy: float, optimizer: torch.optim.Optimizer
                     ) -> tuple[torch.fx.GraphModule, torch.optim.Optimizer, list[str]]:
        """Grow and/or prune as the schedule says; returns (model, optimizer, events)."""
        from cgap_graph.passes.cgap.grow import grow
        from cgap_graph.passes.cgap.optim import carry_optimizer
        from cgap_graph.passes.cgap.prune import prune
        c = self.config
        events: list[str] = []
        if c.grows_at(epoch) and not self.growth_done and not self.pruning_started:
            rep = grow(self.cg, self._saliency(epoch), c.beta, init=c.init, sigma=c.sigma, mu=c.mu,
                       capacity=self.capacity(), seed=c.seed * 1000 + epoch)
            if rep.picked:
                optimizer = carry_optimizer(optimizer, self.model, rep.surgery)
                events.append(f"grew {len(rep.picked)} groups")
            else:
                self.growth_done = True
                events.append("growth stopped: capacity reached")
        done = c.prune_target is not None and self.cg.param_count() <= c.prune_target
        if c.prunes_at(epoch, train_accuracy) and not done:
            self.pruning_started = True
            rep = prune(self.cg, self._saliency(epoch), c.gamma_w,
                        c.gamma_f if c.gamma_f is not None or not c.gamma_w_layers else None,
                        layer_rates=c.gamma_w_layers or None, target_params=c.prune_target,
                        zero_survivors=c.zero_survivors)
            if rep.surgery is not None and rep.surgery.changed:
                optimizer = carry_optimizer(optimizer, self.model, rep.surgery)
            removed = sum(len(v) for v in rep.removed.values())
            events.append(f"pruned {removed} units")
        self.history.append({"epoch": epoch, "events": events})
        return self.model, optimizer, events

    def state(self) -> dict[str, Any]:
        return {"growth_done": self.growth_done, "pruning_started": self.pruning_started,
                "reference_widths": self.reference_widths, "history": self.history}

    def load_state(self, st: dict[str, Any]) -> None:
        self.growth_done = st["growth_done"]
        self.pruning_started = st["pruning_started"]
        self.reference_widths = dict(st["reference_widths"])
        self.history = list(st["history"])


# ---- epochs ---------------------------------------------------------------------------------------------
@dataclass
class EpochResult:
    loss: float
    accuracy: float
    samples: int


def train_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, device: torch.device,
                loss_fn: Callable = F.cross_entropy, progress: Callable[[int], None] | None = None,
                epoch: int = 0, after_step: Callable[[nn.Module], None] | None = None) -> EpochResult:
    """One epoch of SGD. ``after_step(model)`` runs after every optimizer step (e.g. to keep
    fixed connectivity masks applied)."""
    model.train()
    total_loss, correct, n = 0.0, 0, 0
    for i, (x, y) in enumerate(loader):
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        out = model(x)
        loss = loss_fn(out, y)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss.item()} at epoch {epoch}, batch {i + 1}")
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step(model)
        total_loss += loss.item() * len(y)
        correct += (out.argmax(1) == y).sum().item()
        n += len(y)
        if progress is not None:
            progress(len(y))
    return EpochResult(total_loss / max(1, n), correct / max(1, n), n)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, loss_fn: Callable = F.cross_entropy
             ) -> EpochResult:
    was = model.training
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        out = model(x)
        total_loss += loss_fn(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
        n += len(y)
    model.train(was)
    return EpochResult(total_loss / max(1, n), correct / max(1, n), n)


# ---- the full run ---------------------------------------------------------------------------------------
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


def _named_state(opt: torch.optim.Optimizer, model: nn.Module) -> dict[str, Any]:
    """Optimizer state keyed by parameter name (survives rebuilding the module)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {"state": {names[id(p)]: s for p, s in opt.state.items() if id(p) in names},
            "groups": [{k: v for k, v in g.items() if k != "params"} | {"params": [names[id(p)] for p in g["params"]]}
                       for g in opt.param_groups]}


def _restore_state(opt: torch.optim.Optimizer, model: nn.Module, saved: dict[str, Any]) -> None:
    params = dict(model.named_parameters())
    for group, sg in zip(opt.param_groups, saved["groups"]):
        group.update({k: v for k, v in sg.items() if k != "params"})
    for name, st in saved["state"].items():
        if name in params:
            opt.state[params[name]] = st


def _check_output_dir(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    probe = out / ".write-test"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise CgapError(f"cannot write to {out} ({exc.strerror}); choose another --out") from None


def train_run(model: nn.Module, input_shape: tuple[int, ...], dataset: str, out_dir: str | Path,
              config: TrainConfig, *, data_dir: str | None = None, resume: bool = False,
              reference_widths: dict[str, int] | None = None, console=None, progress: bool = True,
              stop_after: int | None = None, meta: dict[str, Any] | None = None,
              loss_fn: Callable = F.cross_entropy, after_step: Callable[[nn.Module], None] | None = None
              ) -> RunResult:
    """Algorithm 1 end to end (see module docstring). ``stop_after`` ends the run after that many
    epochs of this call (used to test resuming). ``loss_fn(logits, targets, reduction=...)`` is used
    for training, saliency and evaluation alike. ``after_step(model)`` runs after every optimizer
    step (give it again when resuming).

    Under torchrun (WORLD_SIZE > 1) the run is data-parallel (see ``distributed.py``):
    ``config.batch_size`` is the global batch, split across the ranks; training, saliency and
    evaluation metrics are reduced over all ranks; only rank 0 writes files and prints (the
    console of the other ranks is silenced)."""
    from cgap_graph.io.model_io import save_model
    from cgap_graph.run import data as D
    from cgap_graph.run import distributed
    config.validate()
    out = Path(out_dir)
    D.check_fits(dataset, input_shape)
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CgapError(f"--device {config.device}: no CUDA device is available here; use --device cpu")
    ctx = distributed.setup(config.device)  # None: one process, nothing below changes
    main = ctx is None or ctx.is_main
    if ctx is not None:
        device = ctx.device(device)
    ckpt_path = out / CHECKPOINT
    start = 1
    saved = None
    if resume:  # every rank resumes from rank 0's checkpoint (no shared file system needed); the
        # saved settings win over the ones passed now, loaders included
        saved = _load_checkpoint(ckpt_path, out) if ctx is None else ctx.from_main(
            lambda: _load_checkpoint(ckpt_path, out))
        gm, _ = serialize.from_payload(saved["model"])
        model = gm
        config = TrainConfig(**json.loads(saved["config"])).validate()
        start = saved["epoch"] + 1
    if ctx is not None:
        if config.batch_size < ctx.world_size:
            raise CgapError(f"--batch-size {config.batch_size} is the global batch: it must be at least the "
                            f"number of processes ({ctx.world_size})")
    # every input is checked before anything is written: no partial output on bad input
    train_loader = D.loader(dataset, "train", config.batch_size, data_dir=data_dir, limit=config.train_limit,
                            seed=config.seed)
    test_loader = D.loader(dataset, "test", config.eval_batch_size, data_dir=data_dir, limit=config.test_limit,
                           shuffle=False)
    saliency_loader = D.loader(dataset, "train", config.batch_size, data_dir=data_dir, limit=config.train_limit,
                               seed=config.seed + 1, augment=False)
    if ctx is not None:  # each rank takes its slice of the same global batches
        train_loader, test_loader, saliency_loader = map(ctx.shard, (train_loader, test_loader, saliency_loader))
    if ctx is None:
        _check_output_dir(out)
    else:  # only rank 0 writes; if it cannot, every rank stops with its error
        ctx.from_main(lambda: _check_output_dir(out))
    torch.manual_seed(config.seed)
    cgap = CGaP(model, input_shape, config, saliency_data=saliency_loader, reference_widths=reference_widths,
                loss_fn=loss_fn)
    cgap.dist = ctx
    cgap.model.to(device)
    optimizer = cgap.make_optimizer()
    metrics: list[dict[str, Any]] = []
    metrics_path = out / METRICS
    if saved is not None:
        cgap.load_state(saved["cgap"])
        _restore_state(optimizer, cgap.model, saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        train_loader.generator.set_state(saved["data_rng"])  # also drives the augmentation
        if main and metrics_path.exists():  # drop lines of epochs after the checkpoint
            metrics = [json.loads(ln) for ln in metrics_path.read_text().splitlines() if ln.strip()]
            metrics = [m for m in metrics if m["epoch"] < start]
            atomic_write_text(metrics_path, "".join(json.dumps(m) + "\n" for m in metrics))
        if ctx is not None:
            metrics = ctx.from_main(lambda: metrics)
    elif main and metrics_path.exists():
        metrics_path.unlink()
    if console is None:
        from rich.console import Console
        console = Console()
    if not main:
        console.quiet = True  # one log per run: rank 0's
    net = cgap.model if ctx is None else ctx.wrap(cgap.model, device)  # what the training steps run
    step_hook = after_step if ctx is None or after_step is None else (lambda m: after_step(m.module))
    prints: list[dict[str, Any]] = []
    t_run = time.perf_counter() - (metrics[-1]["seconds"] if metrics else 0.0)
    train_flops = metrics[-1]["train_flops_total"] if metrics else 0.0
    n_train = len(train_loader.dataset)
    last = start - 1
    with distributed.guard(ctx):  # a lost rank becomes one clear error, not a traceback
        for epoch in range(start, config.epochs + 1):
            lr = config.lr_at(epoch)
            for g in optimizer.param_groups:
                g["lr"] = lr
            flops_before = cgap.cg.flops() / cgap.cg.input_specs[0].shape[0]
            res = _run_epoch(cgap, train_loader, optimizer, device, epoch, config.epochs, console, progress, step_hook,
                             net)
            if ctx is not None:  # global metrics (they gate pruning); rank 0's buffers for everyone
                res = _reduce(ctx, res)
                ctx.broadcast_(list(cgap.model.buffers()))
            train_flops += 3 * flops_before * res.samples  # forward + backward ~ 3 forwards
            widths_before = {g.id: g.width for g in cgap.cg.groups}
            sal_before = flops_before
            params_before = [id(p) for p in cgap.model.parameters()]
            model_, optimizer, events = cgap.on_epoch_end(epoch, res.accuracy, optimizer)
            if ctx is not None:
                prints = ctx.check_in_step(cgap.model, {g.id: g.width for g in cgap.cg.groups}, f"after epoch {epoch}")
                if events or [id(p) for p in cgap.model.parameters()] != params_before:
                    net = ctx.wrap(cgap.model, device)  # the architecture changed: a new DDP over it
            if events:  # the saliency batches of a structural step
                train_flops += 3 * sal_before * config.saliency_batches * config.batch_size * sum(
                    1 for e in events if e.startswith(("grew", "pruned")))
            test = evaluate(cgap.model, test_loader, device, loss_fn)
            if ctx is not None:  # each rank evaluated its slice of the test set
                test = _reduce(ctx, test)
            grew = any(e.startswith("grew") for e in events)
            pruned = any(e.startswith("pruned") for e in events)
            phase = ("grow+prune" if grew and pruned else "grow" if grew else "prune" if pruned else
                     "finetune" if cgap.pruning_started else "train")
            row = {"epoch": epoch, "phase": phase, "lr": lr, "loss": res.loss, "train_acc": res.accuracy,
                   "test_acc": test.accuracy, "test_loss": test.loss, "params": cgap.cg.param_count(),
                   "flops": cgap.cg.flops() / cgap.cg.input_specs[0].shape[0],
                   "widths": {str(g.id): g.width for g in cgap.cg.groups},
                   "widths_before": {str(k): v for k, v in widths_before.items()},
                   "events": events, "train_flops_total": train_flops,
                   "seconds": time.perf_counter() - t_run, "samples": n_train}
            if ctx is not None:
                row["world_size"] = ctx.world_size
            metrics.append(row)
            if main:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                _save_checkpoint(ckpt_path, cgap, optimizer, config, epoch, train_loader, meta)
            widths = "-".join(str(g.width) for g in cgap.cg.groups)
            console.print(f"epoch {epoch:3d}/{config.epochs} {phase:10s} lr {lr:.4g}  loss {res.loss:.4f}  "
                          f"train {100 * res.accuracy:.2f}%  test {100 * test.accuracy:.2f}%  "
                          f"params {row['params']:,}  widths {widths}" + (f"  [{'; '.join(events)}]" if events else ""),
                          soft_wrap=True)
            last = epoch
            if stop_after is not None and epoch - start + 1 >= stop_after:
                break
    final = RunResult(out, last, metrics[-1]["test_acc"] if metrics else float("nan"), cgap.cg.param_count(),
                      cgap.cg.flops(), {g.id: g.width for g in cgap.cg.groups}, train_flops,
                      time.perf_counter() - t_run, metrics)
    if ctx is not None and main:  # each rank's final fingerprint (check_in_step proved them equal)
        atomic_write_text(out / DIST_REPORT, json.dumps({
            "world_size": ctx.world_size, "backend": ctx.backend, "epoch": last, "ranks": prints}, indent=2) + "\n")
    if last == config.epochs and main:
        cgap.model.cpu()
        save_model(cgap.model, out / "model.pt", meta={**(meta or {}), "input_shape": list(input_shape),
                                                       "capacity": cgap.reference_widths,
                                                       "widths": {str(k): v for k, v in final.widths.items()}})
        _write_plots(out, metrics, cgap)
        atomic_write_text(out / "summary.json", json.dumps({
            "epochs": last, "test_accuracy": final.test_accuracy, "params": final.params, "flops": final.flops,
            "widths": final.widths, "train_flops": train_flops, "seconds": final.seconds,
            "config": config.to_dict()}, indent=2) + "\n")
    return final


def _run_epoch(cgap, loader, optimizer, device, epoch, epochs, console, progress, after_step=None,
               net=None) -> EpochResult:
    net = cgap.model if net is None else net  # the DDP wrapper in data-parallel runs
    if not progress or not console.is_terminal:
        return train_epoch(net, loader, optimizer, device, cgap.loss_fn, epoch=epoch, after_step=after_step)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    with Progress(TextColumn(f"epoch {epoch}/{epochs}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("train", total=getattr(loader.batch_sampler, "num_samples", len(loader.dataset)))
        return train_epoch(net, loader, optimizer, device, cgap.loss_fn, epoch=epoch,
                           progress=lambda n: bar.advance(task, n), after_step=after_step)


def _reduce(ctx, res: EpochResult) -> EpochResult:
    """Loss, accuracy and sample count over all ranks' shards."""
    loss, correct, n = ctx.sums([res.loss * res.samples, res.accuracy * res.samples, res.samples])
    return EpochResult(loss / max(1.0, n), round(correct) / max(1.0, n), int(n))


def _load_checkpoint(path: Path, out: Path) -> dict[str, Any]:
    if not path.exists():
        raise CgapError(f"--resume: no checkpoint in {out}; start the run without --resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CgapError(f"--resume: {path} is damaged ({type(exc).__name__}); start a new run") from None


def _save_checkpoint(path: Path, cgap: CGaP, optimizer, config: TrainConfig, epoch: int, loader, meta) -> None:
    payload = {
        "format": "cgap-run", "version": 1, "epoch": epoch,
        "model": serialize.to_payload(cgap.model, meta),
        "optimizer": _named_state(optimizer, cgap.model),
        "config": json.dumps(config.to_dict()),
        "cgap": cgap.state(),
        "rng": torch.get_rng_state(),
        "data_rng": loader.generator.get_state(),
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _write_plots(out: Path, metrics: list[dict[str, Any]], cgap: CGaP) -> None:
    from cgap_graph.passes.cgap.seed import group_key
    from cgap_graph.run.plots import plot_params, plot_widths
    plot_params(metrics, out / "params.png")
    ref = [cgap.reference_widths.get(group_key(g)) for g in cgap.cg.groups if g.resizable]
    final = [g.width for g in cgap.cg.groups if g.resizable]
    labels = [group_key(g).split(".weight")[0] for g in cgap.cg.groups if g.resizable]
    plot_widths(labels, final, ref, out / "widths.png")
