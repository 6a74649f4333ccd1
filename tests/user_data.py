"""What a user brings (issue 13): their own model file, an image folder of generated PNGs, array
files, a module:function dataset and a synthetic segmentation set, each small and learnable."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from PIL import Image

_ids = itertools.count()

USER_NET = '''
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    """A user's classifier for 3 x 16 x 16 images."""

    def __init__(self, num_classes=3, width=16):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * 4 * 4, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))
'''

UNET = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class UNet(nn.Module):
    """A small encoder-decoder with skip concatenations, per-pixel logits."""

    def __init__(self, classes=3, width=16):
        super().__init__()
        self.enc1 = nn.Conv2d(3, width, 3, padding=1)
        self.enc2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.bott = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.dec2 = nn.Conv2d(4 * width, width, 3, padding=1)
        self.dec1 = nn.Conv2d(2 * width, width, 3, padding=1)
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        e1 = F.relu(self.enc1(x))
        e2 = F.relu(self.enc2(F.max_pool2d(e1, 2)))
        b = F.relu(self.bott(F.max_pool2d(e2, 2)))
        d2 = F.relu(self.dec2(torch.cat([F.interpolate(b, scale_factor=2.0, mode="nearest"), e2], 1)))
        d1 = F.relu(self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0, mode="nearest"), e1], 1)))
        return self.head(d1)
'''


def write_module(folder: Path, stem: str, source: str) -> str:
    """``source`` as ``folder/<stem>_<n>.py`` (a fresh name: no stale module in sys.modules)."""
    name = f"{stem}_{next(_ids)}"
    (folder / f"{name}.py").write_text(source)
    return name


def pattern(label: int, rng: np.random.Generator, h: int = 20, w: int = 24) -> np.ndarray:
    """An RGB uint8 image whose class is its stripes: 0 horizontal, 1 vertical, 2 diagonal."""
    yy, xx = np.mgrid[0:h, 0:w]
    phase = rng.integers(0, 4)
    coord = (yy, xx, yy + xx)[label]
    stripes = ((coord + phase) // 3) % 2
    colour = rng.integers(120, 256, size=3)
    img = stripes[..., None] * colour[None, None, :] + rng.integers(0, 40, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def image_folder(root: Path, per_class: int = 30, classes=("diagonal", "horizontal", "vertical"), seed: int = 0,
                 split: bool = False) -> Path:
    """PNG images in ROOT/CLASS/ (or ROOT/train/CLASS and ROOT/val/CLASS with ``split``); the class
    names sort to the label order of :func:`pattern` (diagonal=2 ... is remapped)."""
    rng = np.random.default_rng(seed)
    kind = {"horizontal": 0, "vertical": 1, "diagonal": 2}
    for c in classes:
        for i in range(per_class):
            sub = root / (("val" if i % 4 == 0 else "train") if split else "") / c
            sub.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pattern(kind.get(c, 0), rng)).save(sub / f"{i:03d}.png")
    return root


def arrays(n: int = 96, seed: int = 0, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Channels-last uint8 images N x H x W x 3 and int labels of :func:`pattern`."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = np.stack([pattern(int(k), rng, size, size) for k in y])
    return x, y.astype(np.int64)


DATA_FUNCTION = '''
import numpy as np
import torch
from torch.utils.data import TensorDataset


def build():
    """The user's own dataset code: float tensors, already normalised."""
    data = np.load({path!r})
    x = torch.from_numpy(data["x"]).permute(0, 3, 1, 2).float().div(255.0).sub(0.5)
    y = torch.from_numpy(data["y"])
    return TensorDataset(x[:72], y[:72]), TensorDataset(x[72:], y[72:])
'''


def segmentation_set(n: int = 64, seed: int = 0, size: int = 16, classes: int = 3
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Float images N x 3 x H x W and label maps N x H x W: rectangles of class 1 (red) and 2
    (green) on a noisy background (class 0)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.15, size=(n, 3, size, size)).astype(np.float32)
    y = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        for c in range(1, classes):
            h, w = rng.integers(4, 9, size=2)
            top, left = rng.integers(0, size - h), rng.integers(0, size - w)
            y[i, top:top + h, left:left + w] = c
    for c in range(1, classes):
        x[:, c - 1][y == c] += 1.0
    return x, y
