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

from cgap_graph.errors import BadValue, CgapError, check_number
from cgap_graph.passes.cgap.budget import parse_budget
from cgap_graph.run.tasks import BOUNDED, DEFAULT_METRIC, LOSSES, METRICS


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
    gamma_w_layers: dict[str, float] = field(default_factory=dict)  # per-layer gamma_W (module -> rate; 0: not pruned)
    prune_start: float = 0.5
    prune_end: float = 0.8
    prune_target: int | None = None  # stop pruning once the model has at most this many parameters
    budget: str | None = None  # prune towards METRIC=VALUE (passes/cgap/budget.py), reached at prune_end
    round_to: int = 1  # keep every resized width a multiple of this
    zero_survivors: bool = True  # keep Alg. 3's zeroed weights in the units that stay (False: restore them)
    keep_zeros: bool = False  # the weights Alg. 3 zeroed in the units that stay remain zero (masked) to the end
    restart_lr: float | None = None  # once pruning is over, restart the lr here, decayed over the epochs left
    saliency: str = "taylor"  # taylor | magnitude | random
    growth_saliency: str | None = None  # the scores growth picks by (Alg. 2); default: saliency. random: Fig. 7
    saliency_batches: int = 10
    # run
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 1000
    train_limit: int | None = None  # use only the first N training images (quick runs)
    test_limit: int | None = None
    # the task and the data (run/tasks.py, run/sources.py)
    loss: str = "cross-entropy"  # cross-entropy | pixel-cross-entropy | mse | module:function
    metric: str | None = None  # accuracy | miou | neg-mse | r2 | module:function; default: the loss's
    val_split: float = 0.2  # data without a test split: this seeded fraction is held out for testing
    mean: str | None = None  # per-channel normalisation of images, e.g. "0.5,0.5,0.5" (default: training stats)
    std: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        """Every setting in its range (finite numbers only), or :class:`BadValue` naming it."""
        for name, lo, hi, lo_open, hi_open, meaning in _RANGES:
            value = getattr(self, name)
            if value is not None:
                check_number(name, value, lo, hi, lo_open=lo_open, hi_open=hi_open, meaning=meaning)
        for name, allowed in [*_CHOICES.items(), *_OPTIONAL_CHOICES.items()]:
            if getattr(self, name) not in allowed and not (name in _OPTIONAL_CHOICES and getattr(self, name) is None):
                raise BadValue(name, f"must be {' or '.join(allowed)}, got '{getattr(self, name)}'")
        for name, r in self.gamma_w_layers.items():
            check_number(f"gamma_w for layer '{name}'", r, 0.0, 1.0, lo_open=False, hi_open=True)  # 0: left alone
        if not self.prune_start <= self.prune_end:
            raise BadValue("prune_start", f"must be <= prune-end, got {self.prune_start} and {self.prune_end}")
        if self.budget is not None:
            parse_budget(self.budget)
        _check_task(self)
        for flag in ("zero_survivors", "keep_zeros"):
            if not isinstance(getattr(self, flag), bool):
                raise BadValue(flag, f"must be true or false, got {getattr(self, flag)!r}")
        return self

    @property
    def unit_rate(self) -> float:
        return self.gamma_w if self.gamma_f is None else self.gamma_f

    def lr_at(self, epoch: int, finetune_from: int | None = None) -> float:
        """Learning rate of a 1-based epoch: divided by 10 at every lr_decay_every of the run. With
        ``restart_lr`` and ``finetune_from`` (the first epoch after pruning ended), the schedule
        restarts there: restart_lr, divided by 10 at every lr_decay_every of the epochs left."""
        if self.restart_lr is not None and finetune_from is not None and epoch >= finetune_from:
            step = max(1, round(self.lr_decay_every * (self.epochs - finetune_from + 1)))
            return self.restart_lr * (0.1 ** ((epoch - finetune_from) // step))
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


# (setting, low, high, low open, high open, meaning) for check_number
_RANGES = (
    ("epochs", 1, 1_000_000, False, False, ""), ("batch_size", 1, 1 << 20, False, False, ""),
    ("lr", 0.0, 1e3, True, False, "the learning rate"), ("lr_decay_every", 0.0, 1.0, True, False, "a fraction"),
    ("momentum", 0.0, 1.0, False, True, ""), ("weight_decay", 0.0, 1.0, False, False, ""),
    ("beta", 0.0, 10.0, True, False, "the growth ratio, e.g. 0.6"),
    ("f_growth", 0.0, 1.0, False, False, "0: no growth"),
    ("sigma", 0.0, None, True, False, ""), ("mu", 0.0, None, False, False, ""),
    ("capacity", 0.0, 100.0, True, False, "a multiple of the reference widths"),
    ("f_pruning", 0.0, 1.0, False, False, "0: no pruning"),
    ("gamma_w", 0.0, 1.0, True, True, ""), ("gamma_f", 0.0, 1.0, True, True, ""),
    ("prune_start", 0.0, 1.0, False, False, "a fraction of the epochs"),
    ("prune_end", 0.0, 1.0, False, False, "a fraction of the epochs"),
    ("prune_target", 1, None, False, False, "a number of parameters"),
    ("saliency_batches", 1, 1_000_000, False, False, ""), ("eval_batch_size", 1, 1 << 20, False, False, ""),
    ("train_limit", 1, None, False, False, "a number of images"),
    ("test_limit", 1, None, False, False, "a number of images"),
    ("seed", 0, 2**63 - 1, False, False, ""), ("restart_lr", 0.0, 1e3, True, False, "the learning rate"),
    ("round_to", 1, 4096, False, False, "widths stay multiples of it"),
    ("val_split", 0.0, 1.0, True, True, "the fraction of the samples held out for testing"),
)
_CHOICES = {"optimizer": ("sgd", "adam"), "init": ("paper", "preserve", "random"),
            "saliency": ("taylor", "magnitude", "random")}
_OPTIONAL_CHOICES = {"growth_saliency": ("taylor", "magnitude", "random")}


def _check_task(cfg: TrainConfig) -> None:
    """Loss and metric names (a module:function is imported when the run starts); tau_accu on the
    metric's scale: [0, 1) for accuracy and mIoU, any finite number for the others."""
    if cfg.loss not in LOSSES and ":" not in cfg.loss:
        raise BadValue("loss", f"must be {', '.join(LOSSES)} or module:function, got '{cfg.loss}'")
    if cfg.metric is not None and cfg.metric not in METRICS and ":" not in cfg.metric:
        raise BadValue("metric", f"must be {', '.join(METRICS)} or module:function, got '{cfg.metric}'")
    metric = cfg.metric or DEFAULT_METRIC.get(cfg.loss, "accuracy")
    if metric in BOUNDED:
        check_number("tau_accu", cfg.tau_accu, 0.0, 1.0, hi_open=True, meaning=f"a training {metric}")
    else:
        check_number("tau_accu", cfg.tau_accu, meaning=f"a training {metric}")
    for name in ("mean", "std"):
        text = getattr(cfg, name)
        if text is not None:
            try:
                [float(v) for v in str(text).split(",")]
            except ValueError:
                raise BadValue(name, f"must be comma-separated numbers, one per channel, e.g. 0.5,0.5,0.5; got "
                               f"'{text}'") from None


def read_config(path: str | Path) -> dict[str, Any]:
    """The settings of a TOML file (top level or a [train] table), names and types checked."""
    p = Path(path)
    if not p.is_file():
        raise CgapError(f"config file {p} does not exist" if not p.exists() else f"config {p} is not a file")
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CgapError(f"config file {p} is not valid TOML: {str(exc).splitlines()[0]}") from None
    data = data.get("train", data)
    if not isinstance(data, dict):
        raise CgapError(f"config file {p}: [train] must be a table of settings")
    types = {f.name: f.type for f in fields(TrainConfig) if f.name != "extra"}
    values: dict[str, Any] = {}
    for k, v in data.items():
        key = k.replace("-", "_")
        if key not in types:
            raise CgapError(f"config file {p}: unknown setting '{k}' (known: {', '.join(sorted(types))})")
        values[key] = _typed(p, k, types[key], v)
    return values


_KINDS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _typed(path: Path, key: str, typ: str, value: Any) -> Any:
    """A TOML value checked against the field's type (``epochs = "ten"`` is one clear line)."""
    if typ.startswith("dict"):
        if not isinstance(value, dict):
            raise CgapError(f"config file {path}: '{key}' must be a table of MODULE = RATE, got {value!r}")
        return {str(name): _typed(path, f"{key}.{name}", "float", r) for name, r in value.items()}
    base, optional = typ.replace(" | None", ""), typ.endswith("| None")
    kinds = _KINDS.get(base, (object,))
    ok = isinstance(value, kinds) and not (base in ("int", "float") and isinstance(value, bool))
    if not ok:
        want = {"int": "a whole number", "float": "a number", "bool": "true or false",
                "str": "a string"}.get(base, base)
        raise CgapError(f"config file {path}: '{key}' must be {want}{' (or left out)' if optional else ''}, "
                        f"got {value!r}")
    return float(value) if base == "float" else value


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults, then the TOML file (top level or a [train] table), then command-line values."""
    values = read_config(path) if path is not None else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        cfg = TrainConfig(**values)
    except TypeError as exc:
        raise CgapError(f"bad setting: {exc}") from None
    return cfg.validate()
