"""A fast CIFAR-10 input path for GPU training: the whole split resident on the device.

``benchmarks/table4_cifar10.py`` trains ResNets and VGG-16 for 200 epochs; the project's
DataLoader path (``cgap_graph.run.data``) collates and augments image by image on the host,
which leaves a GPU idle. Here a split lives on the device as one uint8 tensor (150 MB for the
training set); each batch is cropped (padding 4) and flipped by one gather over the whole batch,
normalised on the device, optionally laid out channels-last, and the forward pass optionally runs
under bf16 autocast. Nothing is read back to the host inside an epoch: loss and accuracy are
summed on the device and read once at its end (where a NaN loss is caught).

The same code runs on the CPU (``--quick``), so CI exercises every line of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cgap_graph.run import data
from cgap_graph.run.epochs import TrainingDiverged

PAD = 4


@dataclass
class FastOptions:
    """How the steps run: device, bf16 autocast, channels-last layout, batch sizes."""

    device: torch.device
    bf16: bool = False
    channels_last: bool = False
    batch_size: int = 128
    eval_batch_size: int = 1000

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def layout(self, model: nn.Module) -> nn.Module:
        """Channels-last parameters for the training steps (a no-op without ``channels_last``)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model


def bf16_channels_last_safe(device: torch.device) -> bool:
    """Whether bf16 autocast on channels-last tensors trains here: on a CPU without native bf16
    (AVX2), PyTorch 2.13's backward segfaults on that combination."""
    return device.type != "cpu" or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def contiguous(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> nn.Module:
    """Back to the standard layout before surgery (the passes index weights as flat views); the
    optimizer's state tensors too, which follow their channels through the surgery."""
    for p in model.parameters():
        if not p.data.is_contiguous():
            p.data = p.data.contiguous()
    if optimizer is not None:
        for st in optimizer.state.values():
            for k, v in st.items():
                if isinstance(v, torch.Tensor) and not v.is_contiguous():
                    st[k] = v.contiguous()
    return model


class DeviceData:
    """One CIFAR-10 split on the device: uint8 images (N, 3, 32, 32) and int64 labels."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> None:
        ds = data.info("cifar10")
        self.x = x.to(device)
        self.y = y.to(device)
        self.device = device
        self.mean = torch.tensor(ds.mean, device=device).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(ds.std, device=device).view(1, -1, 1, 1) * 255.0

    @classmethod
    def load(cls, split: str, device: torch.device, limit: int | None = None, data_dir=None) -> DeviceData:
        x, y = data.load_arrays("cifar10", split, data_dir)
        if limit is not None:
            x, y = x[:limit], y[:limit]
        return cls(x, y, device)

    def __len__(self) -> int:
        return len(self.y)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 -> float, per-channel mean and std (the project's CIFAR-10 values)."""
        return (x.float() - self.mean) / self.std


def crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = PAD) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip of every image, as one gather.

    Image i becomes ``padded[i, :, dy:dy+H, dx:dx+W]``, mirrored left-right when its coin says so:
    the same augmentation as ``cgap_graph.run.data`` (which loops over images on the host)."""
    n, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), device=dev, generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), device=dev, generator=gen)
    flip = torch.rand(n, device=dev, generator=gen) < 0.5
    ar_h, ar_w = torch.arange(h, device=dev), torch.arange(w, device=dev)
    rows = dy[:, None] + ar_h  # (n, h)
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # (n, w)
    i = torch.arange(n, device=dev).view(n, 1, 1, 1)
    ch = torch.arange(c, device=dev).view(1, c, 1, 1)
    return padded[i, ch, rows[:, None, :, None], cols[:, None, None, :]]


class SaliencyBatches:
    """Training batches for the CGaP hook's Taylor saliency: normalised, not augmented, shuffled
    by ``generator`` (the hook reseeds it per epoch, so a resumed run scores the same batches)."""

    def __init__(self, split: DeviceData, batch_size: int) -> None:
        self.split, self.batch_size = split, batch_size
        self.generator = torch.Generator(device=split.device).manual_seed(0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        s = self.split
        perm = torch.randperm(len(s), device=s.device, generator=self.generator)
        for i in range(0, len(s), self.batch_size):
            idx = perm[i:i + self.batch_size]
            yield s.normalise(s.x[idx]), s.y[idx]


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    samples: int


def train_epoch(model: nn.Module, split: DeviceData, optimizer: torch.optim.Optimizer, opts: FastOptions,
                gen: torch.Generator, epoch: int, after_step: Callable[[nn.Module], None] | None = None
                ) -> EpochStats:
    """One epoch of SGD over the resident split, shuffled and augmented with ``gen``."""
    model.train()
    n = len(split)
    perm = torch.randperm(n, device=split.device, generator=gen)
    loss_sum = torch.zeros((), device=split.device)
    correct = torch.zeros((), dtype=torch.int64, device=split.device)
    fmt = torch.channels_last if opts.channels_last else torch.contiguous_format
    for i in range(0, n, opts.batch_size):
        idx = perm[i:i + opts.batch_size]
        x = split.normalise(crop_flip(split.x[idx], gen)).contiguous(memory_format=fmt)
        y = split.y[idx]
        with opts.autocast():
            out = model(x)
            loss = F.cross_entropy(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step(model)
        loss_sum += loss.detach().float() * len(y)
        correct += (out.detach().argmax(1) == y).sum()
    total = float(loss_sum)  # the one read-back of the epoch
    if not torch.isfinite(torch.tensor(total)):
        raise TrainingDiverged(f"the loss became {total} in epoch {epoch}; the last good checkpoint is kept")
    return EpochStats(total / max(1, n), int(correct) / max(1, n), n)


@torch.no_grad()
def evaluate(model: nn.Module, split: DeviceData, opts: FastOptions) -> EpochStats:
    was = model.training
    model.eval()
    loss_sum = torch.zeros((), device=split.device)
    correct = torch.zeros((), dtype=torch.int64, device=split.device)
    fmt = torch.channels_last if opts.channels_last else torch.contiguous_format
    for i in range(0, len(split), opts.eval_batch_size):
        x = split.normalise(split.x[i:i + opts.eval_batch_size]).contiguous(memory_format=fmt)
        y = split.y[i:i + opts.eval_batch_size]
        with opts.autocast():
            out = model(x)
        loss_sum += F.cross_entropy(out.float(), y, reduction="sum")
        correct += (out.argmax(1) == y).sum()
    model.train(was)
    n = len(split)
    return EpochStats(float(loss_sum) / max(1, n), int(correct) / max(1, n), n)


def epoch_generator(device: torch.device, seed: int, epoch: int) -> torch.Generator:
    """The data order and augmentation of an epoch depend on (seed, epoch) only: a resumed run
    draws the same batches as an uninterrupted one without storing generator states."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)
