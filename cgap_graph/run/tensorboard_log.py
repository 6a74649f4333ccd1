"""``--tensorboard DIR``: a run's scalars and structural events in TensorBoard's event files, so
a CGaP run opens in the tool users already use.

Per epoch: ``loss/train``, ``loss/test``, ``<metric>/train``, ``<metric>/test``, ``lr``,
``model/params``, ``model/flops``, ``widths/group_<id>`` (one per group, with its first
producer in the tag), ``train_flops``; per structural step a scalar (``events/grown_groups``,
``events/pruned_units``) and a text entry (``events``). A resumed run purges what the folder
holds after the checkpoint's epoch, so the curves continue without a fork. Needs the
``tensorboard`` package (``torch.utils.tensorboard`` writes the files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cgap_graph.errors import CgapError


class TensorBoardLog:
    """One SummaryWriter per run (rank 0 only)."""

    def __init__(self, log_dir: str | Path, start_epoch: int = 1) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the optional tensorboard package
        except ImportError:
            raise CgapError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        path = Path(log_dir)
        if path.exists() and not path.is_dir():
            raise CgapError(f"--tensorboard {path} is a file; give a folder")
        self.writer = SummaryWriter(str(path), purge_step=start_epoch if start_epoch > 1 else None)

    def epoch(self, row: dict[str, Any], metric: str, labels: dict[str, str]) -> None:
        """Scalars of one metrics row (``loop._metrics_row``); ``labels``: group id -> its name."""
        w, step = self.writer, row["epoch"]
        w.add_scalar("loss/train", row["loss"], step)
        w.add_scalar("loss/test", row["test_loss"], step)
        w.add_scalar(f"{metric}/train", row["train_metric"], step)
        w.add_scalar(f"{metric}/test", row["test_metric"], step)
        w.add_scalar("lr", row["lr"], step)
        w.add_scalar("model/params", row["params"], step)
        w.add_scalar("model/flops", row["flops"], step)
        w.add_scalar("train_flops", row["train_flops_total"], step)
        for gid, width in row["widths"].items():
            w.add_scalar(f"widths/group_{gid}_{labels.get(gid, '')}".rstrip("_"), width, step)
        for kind, count in row.get("event_counts", {}).items():
            w.add_scalar(f"events/{kind}", count, step)
        if row["events"]:
            w.add_text("events", f"epoch {step} ({row['phase']}): " + "; ".join(row["events"]), step)
        w.flush()

    def close(self) -> None:
        self.writer.close()


__all__ = ["TensorBoardLog"]
