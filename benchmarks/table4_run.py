"""One resumable training run of the Table IV benchmark (a model and a method), on the fast path.

The epoch loop is ``cifar_fast``'s (device-resident data); every structural decision is the
project's: a :class:`cgap_graph.run.hook.CGaP` hook grows (Algorithm 2) and prunes (Algorithm 3)
at the end of each epoch on the ``TrainConfig`` schedule, exactly as ``train_run`` does, and the
learning rate comes from ``TrainConfig.lr_at``. Training FLOPs are counted as ``train_run``
counts them (3 x forward FLOPs per image, plus the saliency batches of each structural step).

A run folder holds ``metrics.jsonl`` (one line per epoch), ``checkpoint.pt`` (atomic, every
epoch: model in the safe cgap-graph format, optimizer state by parameter name, hook state,
metrics so far), then ``model.pt`` and ``summary.json``. Starting again resumes from the
checkpoint (the data order and augmentation of an epoch depend on the seed and epoch only); a
finished run whose settings match is reused; a folder holding a run of other settings is
refused with one line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from cifar_fast import DeviceData, FastOptions, SaliencyBatches, contiguous, epoch_generator, evaluate, train_epoch
from torch import nn

import cgap_graph as cg
from cgap_graph.errors import CgapError
from cgap_graph.io import serialize
from cgap_graph.io.atomic import atomic_write, atomic_write_text
from cgap_graph.run.checkpoint import named_state, restore_state
from cgap_graph.run.config import TrainConfig
from cgap_graph.run.hook import CGaP

INPUT = (1, 3, 32, 32)


@dataclass
class RunSpec:
    """What to train: ``settings`` fingerprints the run (a resumed run must match it)."""

    name: str
    out: Path
    config: TrainConfig
    make_model: Callable[[], nn.Module]
    settings: dict[str, Any]
    reference_widths: dict[str, int] | None = None


@dataclass
class _State:
    cgap: CGaP
    optimizer: torch.optim.Optimizer
    start: int = 1
    metrics: list | None = None
    train_flops: float = 0.0
    seconds: float = 0.0


def nonzero_params(model: nn.Module) -> int:
    """Non-zero parameters (Algorithm 3's zeroed weights inside surviving units do not count)."""
    return int(sum(int((p != 0).sum()) for p in model.parameters()))


def run(spec: RunSpec, train: DeviceData, test: DeviceData, opts: FastOptions, log: Callable[[str], None] = print,
        stop_after: int | None = None) -> dict[str, Any] | None:
    """Train (or resume, or reuse) one run; returns its summary. ``stop_after``: leave the run
    after that many epochs of this call, checkpointed (returns None; the next call resumes)."""
    spec.out.mkdir(parents=True, exist_ok=True)
    done = spec.out / "summary.json"
    if done.exists():
        summary = json.loads(done.read_text())
        _check_settings(spec, summary.get("settings"), "finished run")
        log(f"{spec.name}: reusing the finished run in {spec.out}")
        return {**summary, "reused": True}
    st = _open(spec, train, opts, log)
    for epoch in range(st.start, spec.config.epochs + 1):
        _epoch(spec, st, train, test, opts, epoch, log)
        if stop_after is not None and epoch - st.start + 1 >= stop_after and epoch < spec.config.epochs:
            log(f"{spec.name}: stopped after epoch {epoch} (--stop-after); run again to resume")
            return None
    return _finish(spec, st)


def _open(spec: RunSpec, train: DeviceData, opts: FastOptions, log) -> _State:
    ckpt = spec.out / "checkpoint.pt"
    sal = SaliencyBatches(train, spec.config.batch_size)
    saved = None
    if ckpt.exists():
        try:
            saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CgapError(f"{ckpt} is damaged ({type(exc).__name__}); delete it to start {spec.name} again") from None
        _check_settings(spec, json.loads(saved["settings"]), "checkpoint")
        model, _ = serialize.from_payload(saved["model"])
    else:
        for name in ("metrics.jsonl", "model.pt"):
            (spec.out / name).unlink(missing_ok=True)
        torch.manual_seed(spec.config.seed)
        model = spec.make_model()
    torch.manual_seed(spec.config.seed)
    hook = CGaP(model, INPUT, spec.config, saliency_data=sal, reference_widths=spec.reference_widths)
    hook.model.to(opts.device)
    optimizer = hook.make_optimizer()
    st = _State(hook, optimizer, metrics=[])
    if saved is not None:
        hook.load_state(saved["cgap"])
        restore_state(optimizer, hook.model, saved["optimizer"])
        for s in optimizer.state.values():  # restore_state keeps the saved (CPU) tensors
            for k, v in s.items():
                if isinstance(v, torch.Tensor):
                    s[k] = v.to(opts.device)
        torch.set_rng_state(saved["rng"])
        st.start, st.metrics = saved["epoch"] + 1, list(saved["metrics"])
        st.train_flops, st.seconds = saved["train_flops"], saved["seconds"]
        atomic_write_text(spec.out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in st.metrics))
        log(f"{spec.name}: resuming at epoch {st.start} of {spec.config.epochs}")
    opts.layout(hook.model)
    return st


def _check_settings(spec: RunSpec, found: dict | None, what: str) -> None:
    want = json.loads(json.dumps(spec.settings))
    if found != want:
        diff = sorted(k for k in set(want) | set(found or {}) if (found or {}).get(k) != want.get(k))
        shown = "; ".join(f"{k} {(found or {}).get(k)!r} there vs {want.get(k)!r} now" for k in diff[:4])
        raise CgapError(f"{spec.out} holds a {what} of other settings ({shown}); use another --out, or "
                        "--fresh to start these runs again")


def _epoch(spec: RunSpec, st: _State, train: DeviceData, test: DeviceData, opts: FastOptions, epoch: int,
           log) -> None:
    cfg, hook = spec.config, st.cgap
    t0 = time.perf_counter()
    lr = cfg.lr_at(epoch, hook.finetune_from)
    for g in st.optimizer.param_groups:
        g["lr"] = lr
    flops = hook.cg.flops()  # per image (the graph is traced at batch 1)
    step = hook.apply_masks if cfg.keep_zeros else None
    res = train_epoch(hook.model, train, st.optimizer, opts, epoch_generator(opts.device, cfg.seed, epoch), epoch,
                      after_step=(lambda m: step()) if step else None)
    st.train_flops += 3 * flops * res.samples
    widths_before = {str(g.id): g.width for g in hook.cg.groups}
    params_before = hook.cg.param_count()
    contiguous(hook.model, st.optimizer)
    _, st.optimizer, events = hook.on_epoch_end(epoch, res.accuracy, st.optimizer)
    opts.layout(hook.model)
    st.train_flops += 3 * flops * cfg.saliency_batches * cfg.batch_size * sum(e.structural for e in events)
    ev = evaluate(hook.model, test, opts)
    st.seconds += time.perf_counter() - t0
    kinds = {e.kind for e in events}
    phase = ("grow+prune" if kinds >= {"grow", "prune"} else "grow" if "grow" in kinds else
             "prune" if "prune" in kinds else "finetune" if hook.pruning_started else "train")
    row = {"epoch": epoch, "phase": phase, "lr": lr, "loss": res.loss, "train_acc": res.accuracy,
           "test_acc": ev.accuracy, "test_loss": ev.loss, "params_before": params_before,
           "params": hook.cg.param_count(),
           "flops": hook.cg.flops(), "widths": {str(g.id): g.width for g in hook.cg.groups},
           "widths_before": widths_before, "events": [str(e) for e in events],
           "train_flops_total": st.train_flops, "seconds": st.seconds}
    st.metrics.append(row)
    with open(spec.out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    _save_checkpoint(spec, st, epoch)
    log(f"{spec.name} epoch {epoch:3d}/{cfg.epochs} {phase:10s} lr {lr:.4g} loss {res.loss:.4f} "
        f"train {100 * res.accuracy:.2f}% test {100 * ev.accuracy:.2f}% params {row['params']:,} "
        f"{time.perf_counter() - t0:.1f}s" + (f" [{'; '.join(row['events'])}]" if events else ""))


def _save_checkpoint(spec: RunSpec, st: _State, epoch: int) -> None:
    model = st.cgap.model
    payload = {"epoch": epoch, "model": serialize.to_payload(model, {"run": spec.name}),
               "optimizer": _cpu(named_state(st.optimizer, model)), "cgap": st.cgap.state(),
               "rng": torch.get_rng_state(), "metrics": st.metrics, "train_flops": st.train_flops,
               "seconds": st.seconds, "settings": json.dumps(spec.settings)}
    atomic_write(spec.out / "checkpoint.pt", lambda tmp: torch.save(payload, tmp))


def _cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    return obj


def _finish(spec: RunSpec, st: _State) -> dict[str, Any]:
    hook = st.cgap
    model = contiguous(hook.model)
    cg.save_model(model, spec.out / "model.pt", meta={"run": spec.name})
    last = st.metrics[-1]
    summary = {"name": spec.name, "epochs": spec.config.epochs, "accuracy": last["test_acc"],
               "best_accuracy": max(m["test_acc"] for m in st.metrics), "train_accuracy": last["train_acc"],
               "params": hook.cg.param_count(), "nonzero_params": nonzero_params(model), "flops": hook.cg.flops(),
               "peak_params": max(max(m["params_before"], m["params"]) for m in st.metrics),
               "widths": [g.width for g in hook.cg.groups if g.resizable], "train_flops": st.train_flops,
               "target_params": spec.config.prune_target,
               "seconds": st.seconds, "seconds_per_epoch": st.seconds / max(1, len(st.metrics)),
               "pruned_at": [m["epoch"] for m in st.metrics if "prune" in m["phase"]],
               "grown_at": [m["epoch"] for m in st.metrics if "grow" in m["phase"]],
               "settings": spec.settings}
    atomic_write_text(spec.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
