"""Datasets: MNIST, Fashion-MNIST and CIFAR-10 from their original files, and a built-in MNIST subset.

Files are read from ``--data-dir``, else ``$CGAP_DATA_DIR``; nothing is ever downloaded. Each
file is checked by size and md5 before use, and a missing or damaged file gets a one-line error
that says which file to put where. CIFAR-10's python batches are pickles: they are read with an
unpickler that only accepts the numpy array machinery, so a tampered file cannot run code.

``mnist-mini`` (3,000 training and 1,000 test images of MNIST, shipped in the package) needs no
files at all; it is what ``cgap-graph demo`` and the tests use when no data directory is set.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cgap_graph.errors import CgapError


class DataError(CgapError):
    """A dataset is missing, damaged, or does not fit the model."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    folder: str
    files: dict[str, tuple[int, str]]  # file -> (bytes, md5)
    shape: tuple[int, int, int]
    classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


_IDX = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train-labels-idx1-ubyte.gz": (28881, "d53e105ee54ea40749a09fcbcd1e9432"),
        "t10k-images-idx3-ubyte.gz": (1648877, "9fb629c4189551a2d022fa330f9573f3"),
        "t10k-labels-idx1-ubyte.gz": (4542, "ec29112dd5afa0611ce80d1b7f02629c"),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": (26421880, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train-labels-idx1-ubyte.gz": (29515, "25c81989df183df01b3e8a0aad5dffbe"),
        "t10k-images-idx3-ubyte.gz": (4422102, "bef4ecab320f06d8554ea6380940ec79"),
        "t10k-labels-idx1-ubyte.gz": (5148, "bb300cfdad3c16e7a12a480ee83cd310"),
    },
}
_CIFAR = {
    "data_batch_1": (31035295, "b617f0d45394a71d8cb5be6cccdde139"),
    "data_batch_2": (31035920, "24087da4a8ca648ec211fa83027ce683"),
    "data_batch_3": (31035649, "e8d122548f602e1cf79e21aed87fa334"),
    "data_batch_4": (31036058, "5cbf4ea473d5faba60fcd0dc7aa16982"),
    "data_batch_5": (31035690, "af3e5ba3acde000e3ad8e1c389e8b0c6"),
    "test_batch": (31035580, "cafb229ddf5ab6fcd276629fa69a3f8f"),
}

DATASETS = {
    "mnist": DatasetInfo("mnist", "mnist", _IDX["mnist"], (1, 28, 28), 10, (0.1307,), (0.3081,)),
    "fashion-mnist": DatasetInfo("fashion-mnist", "fashion-mnist", _IDX["fashion-mnist"], (1, 28, 28), 10,
                                 (0.2860,), (0.3530,)),
    "cifar10": DatasetInfo("cifar10", "cifar-10/cifar-10-batches-py", _CIFAR, (3, 32, 32), 10,
                           (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "mnist-mini": DatasetInfo("mnist-mini", "", {}, (1, 28, 28), 10, (0.1307,), (0.3081,)),
}
_ALIASES = {"cifar-10": "cifar10", "fashion": "fashion-mnist", "fmnist": "fashion-mnist"}
MINI_FILE = Path(__file__).resolve().parent.parent / "assets" / "mnist_mini.npz"


def info(name: str) -> DatasetInfo:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")
    return DATASETS[key]


def data_root(data_dir: str | os.PathLike | None = None) -> Path | None:
    d = data_dir or os.environ.get("CGAP_DATA_DIR")
    return Path(d) if d else None


_checked: dict[tuple[str, float], bool] = {}


def _check(path: Path, size: int, md5: str, ds: DatasetInfo, root: Path) -> None:
    if not path.exists():
        raise DataError(f"dataset {ds.name}: {path.name} is missing; put the original {ds.name} files "
                        f"({', '.join(ds.files)}) in {root / ds.folder}")
    st = path.stat()
    if st.st_size != size:
        raise DataError(f"dataset {ds.name}: {path} has {st.st_size} bytes, expected {size}: the file is "
                        "truncated or not the original; replace it")
    key = (str(path), st.st_mtime)
    if key not in _checked:
        h = hashlib.md5()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != md5:
            raise DataError(f"dataset {ds.name}: {path} fails its md5 check (got {h.hexdigest()}); replace it")
        _checked[key] = True


def _read_idx(path: Path, magic: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise DataError(f"{path} is not an IDX file (magic {got}, expected {magic})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches: plain containers and numpy arrays, nothing else."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"refusing to unpickle {module}.{name} from a CIFAR batch (not numpy data)")


def _read_cifar(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        d = _NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    y = np.asarray(d[b"labels"], dtype=np.int64)
    return x, y


def load_arrays(name: str, split: str = "train", data_dir: str | os.PathLike | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw images (uint8, N x C x H x W) and labels (int64) of a split ("train" or "test")."""
    ds = info(name)
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got '{split}'")
    if ds.name == "mnist-mini":
        arr = np.load(MINI_FILE)
        return torch.from_numpy(arr[f"x_{split}"][:, None].copy()), torch.from_numpy(arr[f"y_{split}"].astype(np.int64))
    root = data_root(data_dir)
    if root is None:
        raise DataError(f"dataset {ds.name}: no data directory; pass --data-dir DIR or set CGAP_DATA_DIR to the "
                        f"folder holding {ds.folder}/ (or use the built-in 'mnist-mini')")
    folder = root / ds.folder
    if ds.name == "cifar10":
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        xs, ys = [], []
        for n in names:
            _check(folder / n, *ds.files[n], ds, root)
            x, y = _read_cifar(folder / n)
            xs.append(x)
            ys.append(y)
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))
    prefix = "train" if split == "train" else "t10k"
    img, lab = f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"
    for n in (img, lab):
        _check(folder / n, *ds.files[n], ds, root)
    x = _read_idx(folder / img, 2051)
    y = _read_idx(folder / lab, 2049).astype(np.int64)
    return torch.from_numpy(x[:, None].copy()), torch.from_numpy(y)


class ImageDataset(Dataset):
    """Normalised images, with random crop (padding 4) and horizontal flip for CIFAR training."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, ds: DatasetInfo, augment: bool = False,
                 generator: torch.Generator | None = None) -> None:
        self.x, self.y, self.ds, self.augment = x, y, ds, augment
        self.mean = torch.tensor(ds.mean).view(-1, 1, 1)
        self.std = torch.tensor(ds.std).view(-1, 1, 1)
        self.generator = generator

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def collate(self, batch):
        x = torch.stack([b[0] for b in batch]).float().div_(255.0)
        y = torch.stack([b[1] for b in batch])
        if self.augment:
            x = _random_crop_flip(x, self.generator)
        return (x - self.mean) / self.std, y


def _random_crop_flip(x: torch.Tensor, g: torch.Generator | None, pad: int = 4) -> torch.Tensor:
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    flip = torch.rand(n, generator=g) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def loader(name: str, split: str = "train", batch_size: int = 128, *, data_dir=None, shuffle: bool | None = None,
           augment: bool | None = None, limit: int | None = None, seed: int = 0) -> DataLoader:
    """A DataLoader of normalised (x, y) batches; CIFAR training batches are augmented."""
    ds = info(name)
    x, y = load_arrays(ds.name, split, data_dir)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    g = torch.Generator().manual_seed(seed)
    aug = (ds.name == "cifar10" and split == "train") if augment is None else augment
    dataset = ImageDataset(x, y, ds, aug, g)
    return DataLoader(dataset, batch_size=batch_size, shuffle=(split == "train") if shuffle is None else shuffle,
                      collate_fn=dataset.collate, generator=g)


def check_fits(name: str, input_shape: tuple[int, ...]) -> None:
    """One-line error if the dataset's images cannot feed a model with this input shape."""
    ds = info(name)
    if tuple(input_shape[1:]) != ds.shape:
        raise DataError(f"dataset {ds.name} gives inputs of shape {ds.shape} but the model expects "
                        f"{tuple(input_shape[1:])}; choose a dataset that fits (or another --input-shape)")
