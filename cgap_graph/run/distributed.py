"""CGaP on several processes and nodes (torch.distributed, launched by torchrun).

Ordinary data parallelism assumes a fixed architecture; CGaP changes it during training, so
every process has to take the same structural decision at the same step. This module keeps the
ranks in step:

- ``setup`` joins the process group that torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK,
  MASTER_ADDR, MASTER_PORT): gloo on CPU, nccl on GPU, with a timeout so that a lost rank ends
  the run instead of hanging it;
- ``Dist.shard`` gives each rank its slice of the *same* global batches a one-process run
  draws, so ``--batch-size`` is the global batch and N processes train like one;
- ``Dist.mean_`` averages the saliency gradients of every batch (the Taylor scores of the
  global batch) and ``Dist.broadcast_`` hands rank 0's scores to all, so every rank grows and
  prunes the same units;
- ``Dist.check_in_step`` all-gathers a hash of the widths, parameters and buffers and stops
  the run with a one-line error if the ranks ever differ.

Without torchrun (WORLD_SIZE unset or 1, no process group) ``setup`` returns None and training
takes the one-process path, unchanged.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Sampler

from cgap_graph.errors import CgapError

TIMEOUT_ENV = "CGAP_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 300.0  # seconds a collective may wait for a missing rank


class DistributedError(CgapError):
    """The process group cannot be joined, a rank was lost, or the ranks diverged."""


class RanksDiverged(DistributedError):
    """Two ranks hold different architectures or parameters."""


# ---- sharding -------------------------------------------------------------------------------------------
class ShardedBatchSampler(Sampler[list[int]]):
    """Rank ``rank``'s slice of every global batch.

    The global batches are exactly those of a one-process ``DataLoader(shuffle=...,
    generator=g)`` with ``batch_size=global_batch``: the same ``randperm`` from the same
    generator, which is consumed the same way, so the data order (and a checkpoint's data
    random state) does not depend on the number of processes. A batch splits into slices whose
    sizes differ by at most one. When shuffling (training: every rank must take the same number
    of steps) a last batch smaller than the world size is dropped; otherwise (evaluation) the
    ranks whose slice would be empty skip it, so every sample is seen once.
    """

    def __init__(self, n: int, global_batch: int, rank: int, world_size: int, generator: torch.Generator,
                 shuffle: bool, augment_generator: torch.Generator | None = None) -> None:
        self.n, self.global_batch, self.rank, self.world_size = n, global_batch, rank, world_size
        self.generator, self.shuffle, self.augment_generator = generator, shuffle, augment_generator

    def _slice(self, size: int) -> tuple[int, int]:
        k, r = divmod(size, self.world_size)
        lo = self.rank * k + min(self.rank, r)
        return lo, lo + k + (self.rank < r)

    def __iter__(self) -> Iterator[list[int]]:
        if self.augment_generator is not None:  # per rank, per epoch, resumable: derived, not drawn
            digest = hashlib.sha256(self.generator.get_state().numpy().tobytes()).hexdigest()
            self.augment_generator.manual_seed(int(digest[:15], 16) + self.rank)
        order = torch.randperm(self.n, generator=self.generator).tolist() if self.shuffle else list(range(self.n))
        for start in range(0, self.n, self.global_batch):
            batch = order[start:start + self.global_batch]
            if len(batch) < self.world_size and self.shuffle:
                break
            lo, hi = self._slice(len(batch))
            if hi > lo:
                yield batch[lo:hi]
        if self.shuffle:  # RandomSampler draws a second permutation when it runs out: keep the stream equal
            torch.randperm(self.n, generator=self.generator)

    def _last(self) -> int:
        """Size of this rank's slice of the last, short global batch (0: none)."""
        rest = self.n % self.global_batch
        if rest == 0 or (rest < self.world_size and self.shuffle):
            return 0
        lo, hi = self._slice(rest)
        return hi - lo

    def __len__(self) -> int:
        return self.n // self.global_batch + (self._last() > 0)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        lo, hi = self._slice(self.global_batch)
        return self.n // self.global_batch * (hi - lo) + self._last()


# ---- the process group ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dist:
    """This process's place in the group, and the collectives CGaP training needs."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def device(self, device: torch.device) -> torch.device:
        """The device of this rank: ``cuda`` (any index) becomes ``cuda:LOCAL_RANK``, one GPU per process."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" else device

    def shard(self, loader: DataLoader) -> DataLoader:
        """The same loader, yielding this rank's slice of each global batch."""
        ds = loader.dataset
        aug = None
        if getattr(ds, "augment", False):  # augmentation noise per rank, not from the shared order stream
            aug = torch.Generator()
            ds.generator = aug
        sampler = ShardedBatchSampler(len(ds), loader.batch_size, self.rank, self.world_size, loader.generator,
                                      isinstance(loader.sampler, RandomSampler), aug)
        return DataLoader(ds, batch_sampler=sampler, collate_fn=loader.collate_fn, generator=loader.generator)

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """DistributedDataParallel around ``module`` (rebuild it after every structural change);
        building it also broadcasts rank 0's parameters and buffers."""
        from torch.nn.parallel import DistributedDataParallel as DDP
        return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)

    def mean_(self, tensors: list[torch.Tensor]) -> None:
        """Average tensors across ranks in place (one flat all-reduce)."""
        if not tensors:
            return
        flat = torch.cat([t.detach().reshape(-1).to(self.comm_device, torch.float64) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()

    def broadcast_(self, tensors: list[torch.Tensor], src: int = 0) -> None:
        """Overwrite tensors with rank ``src``'s values."""
        for t in tensors:
            buf = t.detach().to(self.comm_device)
            dist.broadcast(buf, src)
            if buf is not t:
                t.copy_(buf)

    def sums(self, values: list[float]) -> list[float]:
        """Element-wise sums of ``values`` over all ranks."""
        t = torch.tensor(values, dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def from_main(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on rank 0 only and hand its result, or its CgapError, to every rank."""
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except CgapError as exc:
                box[0] = ("error", type(exc), str(exc))
            except Exception as exc:  # a bug on rank 0: the others stop cleanly, rank 0 shows the traceback
                box[0] = ("error", DistributedError, f"rank 0 failed ({type(exc).__name__}: {exc})")
                dist.broadcast_object_list(box, src=0)
                raise
        dist.broadcast_object_list(box, src=0)
        if box[0][0] == "error":
            raise box[0][1](box[0][2])
        return box[0][1]

    def check_in_step(self, module: nn.Module, widths: dict, where: str) -> list[dict[str, Any]]:
        """All-gather every rank's fingerprint; a one-line RanksDiverged if any differs."""
        prints = self.gather(fingerprint(module, widths) | {"rank": self.rank})
        for fp in prints[1:]:
            if fp["hash"] != prints[0]["hash"]:
                what = "widths" if fp["widths"] != prints[0]["widths"] else "parameters or buffers"
                raise RanksDiverged(
                    f"ranks diverged {where}: rank {fp['rank']} has different {what} from rank 0 (widths "
                    f"{_w(fp['widths'])} vs {_w(prints[0]['widths'])}, hash {fp['hash']} vs {prints[0]['hash']}); "
                    "the run stopped: run the same code, data and settings on every node")
        return prints


def _w(widths: dict) -> str:
    return "-".join(str(v) for v in widths.values())


def fingerprint(module: nn.Module, widths: dict) -> dict[str, Any]:
    """Widths, parameter count, and a hash of every parameter's and buffer's bytes."""
    h = hashlib.sha256(json.dumps({str(k): v for k, v in widths.items()}, sort_keys=True).encode())
    n = 0
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        flat = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(flat.view(torch.uint8).numpy().tobytes())
        n += t.numel() if isinstance(t, nn.Parameter) else 0
    return {"widths": {str(k): v for k, v in widths.items()}, "params": n, "hash": h.hexdigest()[:16]}


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise DistributedError(f"{TIMEOUT_ENV}='{raw}' must be a positive number of seconds, e.g. 300")
    return value


def setup(device: str = "cpu") -> Dist | None:
    """Join the process group torchrun set up in the environment; None for one process."""
    if dist.is_available() and dist.is_initialized():  # the caller made the group: use it
        if dist.get_world_size() == 1:
            return None
        return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                    str(dist.get_backend()))
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        world = int(raw)
    except ValueError:
        raise DistributedError(f"WORLD_SIZE='{raw}' is not a number; launch with torchrun") from None
    if world <= 1:
        return None
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise DistributedError(f"WORLD_SIZE={world} but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                               "not set; launch with torchrun --nproc_per_node N (it sets them)")
    if not dist.is_available():
        raise DistributedError("this PyTorch build has no torch.distributed; install one that has")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "gloo"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DistributedError(f"--device {device}: no CUDA device is available here; use --device cpu")
        backend = "nccl"
        torch.cuda.set_device(local_rank)
    timeout = _timeout()
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    except Exception as exc:  # any failure to join is the same user problem
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistributedError(f"rank {os.environ['RANK']} could not join the process group at "
                               f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} ({first}); check that "
                               "every node can reach the master address and uses the same --nnodes") from None
    atexit.register(_close)
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, backend)


def _close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def lost(exc: BaseException, ctx: Dist) -> DistributedError:
    """The one-line error for a collective that failed because another rank went away."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    first = re.sub(r"\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", first)  # drop the C++ source location
    first = first.replace("[", "(").replace("]", ")")  # no rich markup in a one-line error
    return DistributedError(f"rank {ctx.rank}: lost contact with the other ranks ({first[:160]}); the run "
                            "stopped; continue it from the last checkpoint with --resume")


def is_main() -> bool:
    """True in a one-process run and on rank 0."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def is_comm_error(exc: BaseException) -> bool:
    """Did a collective fail (peer gone, timeout), rather than the model or the data?"""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("gloo", "NCCL", "Connection reset", "Connection closed", "Timed out", "timed out"))


@contextmanager
def guard(ctx: Dist | None) -> Iterator[None]:
    """Turn a failed collective into one ``DistributedError`` line (no-op for one process)."""
    try:
        yield
    except (RuntimeError, OSError) as exc:
        if ctx is None or isinstance(exc, CgapError) or not is_comm_error(exc):
            raise
        raise lost(exc, ctx) from None
