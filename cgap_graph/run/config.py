"""Hyper-parameters of a CGaP run (paper Sec. IV and V-A-c), settable from the command line or a
TOML file. Defaults are the paper's: SGD, lr 0.1 divided by 10 at every 30% of the epochs,
momentum 0.9, weight decay 5e-4, batch 128, beta 0.6, f_growth 1/3, sigma 0.5, mu 0.1,
f_pruning 1, gamma_F = gamma_W.

The schedule of Algorithm 1 needs two things the paper leaves implicit; both are settable:
``prune_start`` (no pruning before this fraction of the epochs, on top of the tau_accu gate)
and ``prune_end`` (the last pruning step; the rest of the run fine-tunes the final structure).
``prune_target`` optionally ends pruning early, once the model fits a parameter budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from cgap_graph.errors import CgapError


@dataclass
class TrainConfig:
    epochs: int = 60
    batch_size: int = 128
    lr: float = 0.1
    lr_decay_every: float = 0.3  # divide lr by 10 at every this fraction of the epochs
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "sgd"  # sgd | adam
    # growth (Algorithm 2)
    beta: float = 0.6
    f_growth: float = 1 / 3  # grow every 1/f_growth epochs
    init: str = "paper"  # paper | preserve | random
    sigma: float = 0.5
    mu: float = 0.1
    capacity: float = 1.0  # tau_capa: growth stops at capacity x the reference widths
    # pruning (Algorithm 3)
    tau_accu: float = 0.0  # training accuracy (0..1) that must be exceeded before pruning
    f_pruning: float = 1.0  # prune every 1/f_pruning epochs
    gamma_w: float = 0.5
    gamma_f: float | None = None  # default: gamma_w, as in the paper
    gamma_w_layers: dict[str, float] = field(default_factory=dict)  # per-layer gamma_W (module -> rate)
    prune_start: float = 0.5
    prune_end: float = 0.8
    prune_target: int | None = None  # stop pruning once the model has at most this many parameters
    zero_survivors: bool = True  # keep Alg. 3's zeroed weights in the units that stay (False: restore them)
    saliency: str = "taylor"  # taylor | magnitude | random
    saliency_batches: int = 10
    # run
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 1000
    train_limit: int | None = None  # use only the first N training images (quick runs)
    test_limit: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise CgapError(msg)
        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.batch_size >= 1, f"batch-size must be >= 1, got {self.batch_size}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(0 < self.lr_decay_every <= 1, f"lr-decay-every must be in (0, 1], got {self.lr_decay_every}")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        need(self.weight_decay >= 0, f"weight-decay must be >= 0, got {self.weight_decay}")
        need(self.optimizer in ("sgd", "adam"), f"optimizer must be sgd or adam, got '{self.optimizer}'")
        need(self.beta > 0, f"beta must be > 0 (the growth ratio, e.g. 0.6), got {self.beta}")
        need(0 <= self.f_growth <= 1, f"f-growth must be in [0, 1] (0: no growth), got {self.f_growth}")
        need(self.init in ("paper", "preserve", "random"), f"init must be paper, preserve or random, got '{self.init}'")
        need(self.sigma > 0, f"sigma must be > 0, got {self.sigma}")
        need(self.mu >= 0, f"mu must be >= 0, got {self.mu}")
        need(self.capacity > 0, f"capacity must be > 0 (a multiple of the reference widths), got {self.capacity}")
        need(0 <= self.tau_accu < 1, f"tau-accu must be in [0, 1) (a training accuracy), got {self.tau_accu}")
        need(0 <= self.f_pruning <= 1, f"f-pruning must be in [0, 1] (0: no pruning), got {self.f_pruning}")
        need(0 < self.gamma_w < 1, f"gamma-w must be in (0, 1), got {self.gamma_w}")
        need(self.gamma_f is None or 0 < self.gamma_f < 1, f"gamma-f must be in (0, 1), got {self.gamma_f}")
        for name, r in self.gamma_w_layers.items():
            need(isinstance(r, (int, float)) and 0 < r < 1, f"gamma-w for layer '{name}' must be in (0, 1), got {r}")
        need(0 <= self.prune_start <= self.prune_end <= 1,
             f"need 0 <= prune-start <= prune-end <= 1, got {self.prune_start} and {self.prune_end}")
        need(self.prune_target is None or self.prune_target >= 1,
             f"prune-target must be a positive number of parameters, got {self.prune_target}")
        need(self.saliency in ("taylor", "magnitude", "random"),
             f"saliency must be taylor, magnitude or random, got '{self.saliency}'")
        need(isinstance(self.zero_survivors, bool),
             f"zero-survivors must be true or false, got {self.zero_survivors!r}")
        need(self.saliency_batches >= 1, f"saliency-batches must be >= 1, got {self.saliency_batches}")
        return self

    @property
    def unit_rate(self) -> float:
        return self.gamma_w if self.gamma_f is None else self.gamma_f

    def lr_at(self, epoch: int) -> float:
        """Learning rate of a 1-based epoch: divided by 10 at every lr_decay_every of the run."""
        step = max(1, round(self.lr_decay_every * self.epochs))
        return self.lr * (0.1 ** ((epoch - 1) // step))

    def grows_at(self, epoch: int) -> bool:
        if self.f_growth <= 0:
            return False
        period = max(1, round(1 / self.f_growth))
        return epoch % period == 0

    def prunes_at(self, epoch: int, train_acc: float) -> bool:
        if self.f_pruning <= 0 or train_acc <= self.tau_accu:
            return False
        lo = max(1, int(round(self.prune_start * self.epochs)))
        hi = int(round(self.prune_end * self.epochs))
        period = max(1, round(1 / self.f_pruning))
        return lo <= epoch <= hi and (epoch - lo) % period == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults, then the TOML file (top level or a [train] table), then command-line values."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise CgapError(f"config file {p} does not exist")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise CgapError(f"config file {p} is not valid TOML: {exc}") from None
        data = data.get("train", data)
        known = {f.name for f in fields(TrainConfig)}
        for k, v in data.items():
            key = k.replace("-", "_")
            if key not in known:
                raise CgapError(f"config file {p}: unknown setting '{k}' (known: {', '.join(sorted(known))})")
            values[key] = v
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        cfg = TrainConfig(**values)
    except TypeError as exc:
        raise CgapError(f"bad setting: {exc}") from None
    return cfg.validate()
