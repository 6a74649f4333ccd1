"""An image folder in the class-per-subfolder layout PyTorch users know, read with Pillow.

``ROOT/CLASS/IMAGE`` (then a seeded, per-class ``val_split`` of each class is held out for
testing), or ``ROOT/train/CLASS/IMAGE`` with ``ROOT/val/CLASS/IMAGE`` (or ``test/``). Classes
are the subfolder names in sorted order. Every image is decoded once, converted to the model's
channels (``L`` for one, ``RGB`` for three), resized so that it covers the model's H x W with
its aspect ratio kept, and centre-cropped: the folder becomes uint8 tensors N x C x H x W.
Hidden files and files that are not images by their extension are skipped; an image Pillow
cannot read is a one-line error naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cgap_graph.errors import CgapError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_MODES = {1: "L", 3: "RGB"}


class FolderError(CgapError):
    """An image folder that cannot be used (empty, unreadable image, inconsistent classes)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_EXTENSIONS)


def _classes(root: Path) -> dict[str, list[Path]]:
    """Class name -> its images, for ``root/CLASS/IMAGE``."""
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = {d.name: _images(d) for d in dirs}
    if not any(found.values()):
        raise FolderError(f"image folder {root} holds no class subfolders with images "
                          f"({', '.join(IMAGE_EXTENSIONS[:3])} ...); lay it out as {root}/CLASS/IMAGE.png, one "
                          "subfolder per class")
    empty = [c for c, files in found.items() if not files]
    if empty:
        raise FolderError(f"image folder {root}: class folder '{empty[0]}' holds no images; remove it or add images")
    return found


def scan(root: Path) -> tuple[list[str], dict[str, list[Path]], dict[str, list[Path]] | None]:
    """Class names, the training images by class, and the validation images (None: split them off)."""
    if not root.is_dir():
        raise FolderError(f"{root} is not a folder of images")
    val_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and val_dir is not None:
        train, val = _classes(root / "train"), _classes(val_dir)
        extra = sorted(set(val) - set(train))
        if extra:
            raise FolderError(f"image folder {root}: {val_dir.name}/ has class '{extra[0]}' that train/ lacks; give "
                              "both the same class subfolders")
        return sorted(train), train, val
    train = _classes(root)
    return sorted(train), train, None


def split(by_class: dict[str, list[Path]], val_split: float, seed: int
          ) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """A seeded per-class split: round(val_split x n) images of each class (one at least, when it has
    two) are held out."""
    g = torch.Generator().manual_seed(seed)
    train, val = {}, {}
    for c in sorted(by_class):
        files = by_class[c]
        order = torch.randperm(len(files), generator=g).tolist()
        k = min(len(files) - 1, max(1, round(val_split * len(files)))) if len(files) >= 2 else 0
        val[c] = [files[i] for i in sorted(order[:k])]
        train[c] = [files[i] for i in sorted(order[k:])]
    if not any(val.values()):
        raise FolderError("the image folder has too few images to hold some out for testing; add images, or give "
                          "train/ and val/ subfolders")
    return train, val


def decode(path: Path, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One image as uint8 C x H x W: converted, resized to cover H x W, centre-cropped."""
    h, w = size
    try:
        with Image.open(path) as im:
            im = im.convert(_MODES[channels])
            scale = max(h / im.height, w / im.width)
            nw, nh = max(w, round(im.width * scale)), max(h, round(im.height * scale))
            if (nw, nh) != im.size:
                im = im.resize((nw, nh), Image.BILINEAR)
            left, top = (nw - w) // 2, (nh - h) // 2
            arr = np.asarray(im.crop((left, top, left + w, top + h)), dtype=np.uint8)
    except Exception as exc:  # UnidentifiedImageError, OSError, zlib.error, a decompression bomb ...
        raise FolderError(f"cannot read image {path} ({type(exc).__name__}: {first_line(exc)[:120]}); "
                          "remove or replace the file") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def load(by_class: dict[str, list[Path]], classes: list[str], sample_shape: tuple[int, ...]
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images N x C x H x W and int64 labels (the index of the class in ``classes``)."""
    if len(sample_shape) != 3 or sample_shape[0] not in _MODES:
        raise FolderError(f"an image folder feeds models whose input is (batch, 1 or 3, H, W), but this model "
                          f"expects (batch, {', '.join(map(str, sample_shape))}); give --input-shape, e.g. 1,3,32,32")
    xs, ys = [], []
    for c, files in sorted(by_class.items()):
        for f in files:
            xs.append(decode(f, sample_shape[0], tuple(sample_shape[1:])))
            ys.append(classes.index(c))
    if not xs:
        raise FolderError("the image folder split has no images")
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.int64)


__all__ = ["IMAGE_EXTENSIONS", "FolderError", "decode", "first_line", "load", "scan", "split"]
