"""Every kind of data a run accepts, behind one name: wherever a dataset name is accepted
(``train --dataset``, ``grow/prune/seed --data``, Small-World) so is

- a built-in name (``mnist``, ``fashion-mnist``, ``cifar10``, ``mnist-mini``: ``data.py``);
- an image folder (``image_folder.py``), resized to the model's input;
- an array file: ``.npz`` (read without pickles) or ``.pt`` (``torch.load(weights_only=True)``)
  holding ``x`` and ``y`` (or ``x_train``/``y_train`` with ``x_test``/``y_test`` or ``x_val``/``y_val``);
- ``module:function`` imported from the working directory (the rules of ``--arch``), returning
  ``(train_dataset, test_dataset)`` or ``(train_loader, test_loader)`` of ``(x, y)`` pairs.

Without a test split, a seeded ``val_split`` fraction of the training samples is held out.
uint8 images (folders, uint8 arrays) are scaled to [0, 1] and normalised with per-channel
statistics of the training split, or the ``mean``/``std`` given; float arrays are used as they are.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from cgap_graph.io.torch_load import load_weights_only
from cgap_graph.run import data, image_folder
from cgap_graph.run.image_folder import first_line as _line
from cgap_graph.run.tasks import Task, check_target, import_callable

_SPEC = re.compile(r"^[\w./]+:[A-Za-z_][\w.]*$")  # module:function, file.py:function, pkg/file.py:function


class SourceError(data.DataError):
    """Data that cannot be read or does not fit the model."""


class Pairs(Dataset):
    """(x, y) tensors; uint8 images are scaled and normalised when batched (``collate``)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean=None, std=None) -> None:
        self.x, self.y = x, y
        shape = (-1,) + (1,) * (x.dim() - 2)
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(shape)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(shape)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def collate(self, batch):
        x = torch.stack([b[0] for b in batch])
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x, torch.stack([b[1] for b in batch])


@dataclass
class Source:
    """A dataset resolved: its kind, splits and what one sample looks like."""

    spec: str
    kind: str  # builtin | folder | arrays | function
    train: Any = None  # Dataset or DataLoader (None for built-ins: data.py builds them)
    test: Any = None
    classes: int | None = None
    exact_classes: bool = False  # a folder's classes are all there are: the model must output exactly them
    sample_shape: tuple = ()
    target_shape: tuple = ()
    data_dir: str | None = None
    notes: list[str] = field(default_factory=list)


def kind_of(spec: str) -> str:
    key = spec.lower()
    if data._ALIASES.get(key, key) in data.DATASETS:
        return "builtin"
    p = Path(spec)
    if p.is_dir():
        return "folder"
    if p.is_file():
        if p.suffix.lower() in (".npz", ".pt", ".pth"):
            return "arrays"
        raise SourceError(f"dataset file {spec} is neither .npz nor .pt; save arrays with np.savez(path, x=..., "
                          "y=...) or torch.save({'x': x, 'y': y}, path)")
    if _SPEC.match(spec):
        return "function"
    raise SourceError(f"unknown dataset '{spec}': not a built-in ({', '.join(data.DATASETS)}), an existing image "
                      "folder or .npz/.pt file, nor module:function")


_cache: dict[tuple, Source] = {}


def open_source(spec: str, input_shape: tuple[int, ...] | None, *, data_dir: str | os.PathLike | None = None,
                val_split: float = 0.2, seed: int = 0, mean: list[float] | None = None,
                std: list[float] | None = None) -> Source:
    """The source named ``spec`` (see module docstring), read once per process and kept."""
    kind = kind_of(spec)
    stamp = os.stat(spec).st_mtime_ns if kind in ("folder", "arrays") else 0
    key = (str(Path(spec).resolve()) if stamp else spec, kind, stamp, tuple(input_shape or ()), val_split, seed,
           tuple(mean or ()), tuple(std or ()), str(data_dir))
    if key not in _cache:
        if kind == "builtin":
            ds = data.info(spec)
            if input_shape is not None:
                data.check_fits(ds.name, input_shape)
            src = Source(ds.name, kind, classes=ds.classes, exact_classes=True, sample_shape=ds.shape,
                         data_dir=None if data_dir is None else str(data_dir))
        elif kind == "folder":
            src = _folder(spec, input_shape, val_split, seed, mean, std)
        elif kind == "arrays":
            src = _arrays(spec, input_shape, val_split, seed, mean, std)
        else:
            src = _function(spec)
        _cache[key] = src
    return _cache[key]


def _stats(x: torch.Tensor, mean, std) -> tuple[list[float] | None, list[float] | None]:
    """Per-channel mean and std of uint8 images in [0, 1] (or the given ones); None for float data."""
    c = x.shape[1] if x.dim() >= 2 else 1
    if mean is not None or std is not None:
        mean = list(mean) if mean is not None else [0.0] * c
        std = list(std) if std is not None else [1.0] * c
        for name, v in (("mean", mean), ("std", std)):
            if len(v) != c:
                raise SourceError(f"--{name} gives {len(v)} values but the inputs have {c} channels")
        if any(s <= 0 for s in std):
            raise SourceError("--std values must be positive")
        return mean, std
    if x.dtype != torch.uint8 or x.dim() < 3:
        return None, None
    xf = x.transpose(0, 1).reshape(c, -1).double() / 255.0
    return xf.mean(1).tolist(), [s if s > 1e-6 else 1.0 for s in xf.std(1).tolist()]


def _folder(spec, input_shape, val_split, seed, mean, std) -> Source:
    root = Path(spec)
    classes, train, val = image_folder.scan(root)
    if input_shape is None:
        raise SourceError(f"image folder {spec}: the model does not say its input shape, so the images cannot be "
                          "resized to it; pass --input-shape, e.g. 1,3,32,32")
    if val is None:
        train, val = image_folder.split(train, val_split, seed)
    xtr, ytr = image_folder.load(train, classes, tuple(input_shape[1:]))
    xte, yte = image_folder.load(val, classes, tuple(input_shape[1:]))
    m, s = _stats(xtr, mean, std)
    return Source(spec, "folder", Pairs(xtr, ytr, m, s), Pairs(xte, yte, m, s), len(classes), True,
                  tuple(xtr.shape[1:]), ())


def _read(path: Path) -> dict[str, Any]:
    if path.suffix.lower() == ".npz":
        try:
            f = np.load(path, allow_pickle=False)
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise SourceError(f"{path} is not a readable .npz file (it is a single .npy array); save with "
                                  "np.savez(path, x=inputs, y=targets)")
            with f:
                return {k: f[k] for k in f.files}
        except SourceError:
            raise
        except ValueError as exc:
            if "pickle" in str(exc):
                raise SourceError(f"{path} holds Python objects, not plain arrays; save numeric arrays") from None
            raise SourceError(f"{path} is not a readable .npz file ({_line(exc)[:100]})") from None
        except Exception as exc:  # a damaged zip, a truncated member, ... (BadZipFile, EOFError, zlib.error)
            raise SourceError(f"{path} is not a readable .npz file ({type(exc).__name__}); write it again with "
                              "np.savez(path, x=inputs, y=targets)") from None
    try:
        obj = load_weights_only(path)
    except Exception as exc:
        raise SourceError(f"{path} is not a tensor file readable weights-only ({type(exc).__name__}: "
                          f"{_line(exc)[:100]}); save a dict of "
                          "tensors: torch.save({'x': x, 'y': y}, path)") from None
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        obj = {"x": obj[0], "y": obj[1]}
    if not isinstance(obj, dict):
        raise SourceError(f"{path} holds a {type(obj).__name__}; save a dict of tensors {{'x': x, 'y': y}}")
    return obj


def _tensor(a, path: Path, key: str) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a)) \
        if isinstance(a, np.ndarray) else None
    if t is None:
        raise SourceError(f"{path}: '{key}' is a {type(a).__name__}, not an array")
    if t.dtype.is_floating_point:
        return t.float()
    return t if t.dtype == torch.uint8 and key.startswith("x") else t.long()


def _fit(x: torch.Tensor, input_shape, path: Path, key: str) -> torch.Tensor:
    """Samples laid out as the model's input: N x H x W gains a channel axis, channels-last is moved."""
    if input_shape is None:  # no model shape to fit: images as N x C x H x W (channels first)
        if x.dim() == 3:
            return x[:, None]
        if x.dim() == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            return x.permute(0, 3, 1, 2).contiguous()
        return x
    want = tuple(input_shape[1:])
    got = tuple(x.shape[1:])
    if got == want:
        return x
    if x.dim() == 3 and want == (1, *got):
        return x[:, None]
    if x.dim() == 4 and got == (want[1], want[2], want[0]):
        return x.permute(0, 3, 1, 2).contiguous()
    raise SourceError(f"{path}: '{key}' holds samples of shape {got} but the model expects inputs of shape {want}; "
                      "reshape the arrays or give another --input-shape")


def _arrays(spec, input_shape, val_split, seed, mean, std) -> Source:
    path = Path(spec)
    arrays = _read(path)
    names = ("x_train", "y_train") if "x_train" in arrays else ("x", "y")
    if not all(n in arrays for n in names):
        raise SourceError(f"{path} has no 'x' and 'y' arrays (it holds {', '.join(sorted(arrays)) or 'nothing'}); "
                          "save them as np.savez(path, x=inputs, y=targets)")
    test_names = next((p for p in (("x_test", "y_test"), ("x_val", "y_val")) if all(n in arrays for n in p)), None)
    parts = [(_tensor(arrays[a], path, a), _tensor(arrays[b], path, b), a, b)
             for a, b in [names] + ([test_names] if test_names else [])]
    for x, y, a, b in parts:
        if len(x) != len(y):
            raise SourceError(f"{path}: '{a}' has {len(x)} samples but '{b}' has {len(y)}; give one target per sample")
        if len(x) == 0:
            raise SourceError(f"{path}: '{a}' holds no samples")
    xtr, ytr = _fit(parts[0][0], input_shape, path, parts[0][2]), parts[0][1]
    if test_names:
        xte, yte = _fit(parts[1][0], input_shape, path, parts[1][2]), parts[1][1]
    else:
        if len(xtr) < 2:
            raise SourceError(f"{path} has {len(xtr)} sample; at least 2 are needed to hold one out for testing")
        order = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(seed))
        k = min(len(xtr) - 1, max(1, round(val_split * len(xtr))))
        xtr, ytr, xte, yte = xtr[order[k:]], ytr[order[k:]], xtr[order[:k]], ytr[order[:k]]
    m, s = _stats(xtr, mean, std)
    classes = int(max(ytr.max(), yte.max())) + 1 if not ytr.dtype.is_floating_point else None
    if classes is not None and int(min(ytr.min(), yte.min())) < 0:
        raise SourceError(f"{path}: labels must be 0 or more, got {int(min(ytr.min(), yte.min()))}")
    return Source(spec, "arrays", Pairs(xtr, ytr, m, s), Pairs(xte, yte, m, s), classes, False,
                  tuple(xtr.shape[1:]), tuple(ytr.shape[1:]))


def _first(split: Any, spec: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One sample's (x, y) and whether ``split`` is a loader (its items are batches)."""
    is_loader = isinstance(split, DataLoader)
    try:
        item = next(iter(split)) if is_loader else split[0]
        x, y = item[0], item[1]
    except Exception as exc:
        raise SourceError(f"{spec}: cannot read a first sample ({type(exc).__name__}: {exc}); its items must be "
                          "(input, target) pairs") from None
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    return (x[0], y[0], True) if is_loader else (x, y, False)


def _function(spec: str) -> Source:
    fn = import_callable(spec, "--dataset")
    try:
        got = fn()
    except Exception as exc:
        raise SourceError(f"{spec} raised {type(exc).__name__}: {_line(exc)}") from None
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        raise SourceError(f"{spec} returned {type(got).__name__}; return (train_dataset, test_dataset) or "
                          "(train_loader, test_loader)")
    for split, name in zip(got, ("train", "test")):
        if not isinstance(split, DataLoader) and not (hasattr(split, "__getitem__") and hasattr(split, "__len__")):
            raise SourceError(f"{spec}: its {name} part is a {type(split).__name__}, not a Dataset or DataLoader")
    x, y, _ = _first(got[0], spec)
    labels = getattr(got[0], "classes", None)
    notes = ["its DataLoaders are used as given (--batch-size does not apply)"] if isinstance(got[0], DataLoader) \
        else []
    return Source(spec, "function", got[0], got[1], len(labels) if isinstance(labels, (list, tuple)) else None,
                  False, tuple(x.shape), tuple(y.shape), notes=notes)


def make_loader(src: Source, split: str, batch_size: int, *, shuffle: bool | None = None, limit: int | None = None,
                seed: int = 0, augment: bool | None = None) -> DataLoader:
    """Batches of ``split`` ("train" or "test"); ``limit`` keeps the first N samples."""
    if src.kind == "builtin":
        return data.loader(src.spec, split, batch_size, data_dir=src.data_dir, shuffle=shuffle, augment=augment,
                           limit=limit, seed=seed)
    ds = src.train if split == "train" else src.test
    if isinstance(ds, DataLoader):
        return ds
    if limit is not None and limit < len(ds):
        ds = Subset(ds, range(limit))
    base = ds.dataset if isinstance(ds, Subset) else ds
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=(split == "train") if shuffle is None else shuffle,
                      collate_fn=getattr(base, "collate", None), generator=g)


def check_source(src: Source, input_shape: tuple[int, ...], output_shapes: list, task: Task) -> None:
    """One line unless the data feeds the model (input shape) and answers its output (targets)."""
    if src.kind == "builtin":
        data.check_fits(src.spec, input_shape)
    elif src.sample_shape != tuple(input_shape[1:]):
        raise SourceError(f"{src.spec} gives inputs of shape {src.sample_shape} but the model expects "
                          f"{tuple(input_shape[1:])}; give --input-shape to match the data")
    shapes = [tuple(s) if isinstance(s, (tuple, list)) else s for s in output_shapes]
    if len(shapes) != 1 or not isinstance(shapes[0], tuple):
        if task.kind == "custom":
            return
        raise SourceError(f"the model has {len(shapes)} outputs; the built-in losses need one (use --loss "
                          "module:function)")
    check_target(task, shapes[0], src.target_shape, src.classes, src.spec, exact=src.exact_classes)


def parse_floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in str(text).split(",")]
    except ValueError:
        raise SourceError(f"--{flag} must be comma-separated numbers, one per channel, e.g. 0.5,0.5,0.5") from None


__all__ = ["Pairs", "Source", "SourceError", "check_source", "kind_of", "make_loader", "open_source", "parse_floats"]
