"""A run's checkpoint: everything needed to continue a killed run exactly, in the safe format.

The model is stored as a cgap-graph payload (``io/serialize.py``), the optimizer state keyed by
parameter name (so it survives the architecture changing), plus the config, the hook's state
and both random states. ``resume_settings`` decides what ``--resume`` may change: a different
dataset, model or hyper-parameter would silently make another run than the one checkpointed, so
it is refused with the list of differences; a few settings are safe to change and are applied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cgap_graph.errors import CgapError
from cgap_graph.io import serialize
from cgap_graph.io.atomic import atomic_write
from cgap_graph.io.torch_load import load_weights_only
from cgap_graph.run.config import TrainConfig

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
DIST_REPORT = "distributed.json"
# settings a resumed run may change: they change neither the model nor the data order
SAFE_ON_RESUME = ("epochs", "device", "eval_batch_size", "test_limit")


def named_state(opt: torch.optim.Optimizer, model: torch.nn.Module) -> dict[str, Any]:
    """Optimizer state keyed by parameter name (survives rebuilding the module)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {"state": {names[id(p)]: s for p, s in opt.state.items() if id(p) in names},
            "groups": [{k: v for k, v in g.items() if k != "params"} | {"params": [names[id(p)] for p in g["params"]]}
                       for g in opt.param_groups]}


def restore_state(opt: torch.optim.Optimizer, model: torch.nn.Module, saved: dict[str, Any]) -> None:
    """Put saved optimizer state back, on each parameter's device: a checkpoint loads on the CPU,
    and a momentum buffer left there fails the first step of a resumed ``--device cuda`` run.
    Floating-point state takes the parameter's dtype too; ``step`` counters stay as saved (what
    ``Optimizer.load_state_dict`` does)."""
    params = dict(model.named_parameters())
    for group, sg in zip(opt.param_groups, saved["groups"]):
        group.update({k: v for k, v in sg.items() if k != "params"})
    for name, st in saved["state"].items():
        if name in params:
            opt.state[params[name]] = {k: _like(v, params[name], k) for k, v in st.items()}


def _like(value: Any, param: torch.Tensor, key: str) -> Any:
    if not isinstance(value, torch.Tensor) or key == "step":
        return value
    if value.is_floating_point():
        return value.to(device=param.device, dtype=param.dtype)
    return value.to(device=param.device)


def load_checkpoint(path: Path, out: Path) -> dict[str, Any]:
    if not path.exists():
        raise CgapError(f"--resume: no checkpoint in {out}; start the run without --resume")
    try:
        return load_weights_only(path)
    except Exception as exc:
        raise CgapError(f"--resume: {path} is damaged ({type(exc).__name__}); start a new run") from None


def save_checkpoint(path: Path, cgap, optimizer, config: TrainConfig, epoch: int, loader, meta) -> None:
    payload = {
        "format": "cgap-run", "version": 1, "epoch": epoch,
        "model": serialize.to_payload(cgap.model, meta),
        "optimizer": named_state(optimizer, cgap.model),
        "config": json.dumps(config.to_dict()),
        "cgap": cgap.state(),
        "rng": torch.get_rng_state(),
        "data_rng": loader.generator.get_state() if getattr(loader, "generator", None) is not None else None,
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def saved_meta(saved: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(saved["model"].get("meta", "{}"))
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError):
        return {}


def resume_settings(saved: dict[str, Any], overrides: dict[str, Any] | None, given_meta: dict[str, Any] | None
                    ) -> tuple[TrainConfig, list[str]]:
    """The config a resumed run continues with, and the changes applied (see module docstring)."""
    config = TrainConfig(**json.loads(saved["config"])).validate()
    meta = saved_meta(saved)
    differ, applied = [], []
    for key, value in (given_meta or {}).items():
        if value is not None and key in meta and meta[key] != value:
            differ.append(f"--{key} {meta[key]} (checkpoint) vs {value} (now)")
    for key, value in (overrides or {}).items():
        old = getattr(config, key)
        if value is None or value == old:
            continue
        if key in SAFE_ON_RESUME:
            applied.append(f"{key} {old} -> {value}")
            setattr(config, key, value)
        else:
            differ.append(f"--{key.replace('_', '-')} {old} (checkpoint) vs {value} (now)")
    if differ:
        raise CgapError("--resume continues the checkpointed run, whose settings differ: " + "; ".join(differ) +
                        f"; drop those options (only {', '.join(SAFE_ON_RESUME)} may change), or start a new run "
                        "with --overwrite or another --out")
    if config.epochs < saved["epoch"]:
        raise CgapError(f"--resume: --epochs {config.epochs} is fewer than the {saved['epoch']} epochs already run")
    return config.validate(), applied


__all__ = ["CHECKPOINT", "DIST_REPORT", "METRICS", "SAFE_ON_RESUME", "load_checkpoint", "named_state",
           "restore_state", "resume_settings", "save_checkpoint", "saved_meta"]
