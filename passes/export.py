"""Export pass: a (shrunk) model to an ONNX file that deployment tools can trust.

Steps, each checked: physically remove masked units (zero in every producer, see ``shrink.py``) so
the file holds the small model; export with a dynamic batch axis; run the ONNX checker (with shape
inference); run the file in ONNX Runtime on random inputs of two batch sizes and compare with
PyTorch; store the widths and the model's CGaP history in the file's metadata; write atomically.
Nothing is written when a check fails.

Exporter choice: ``torch.onnx.export(dynamo=True)`` (torch.export-based, the maintained path; it also
folds BatchNorm and drops Identity nodes) is tried first. ``exporter="auto"`` falls back to the
deprecated TorchScript exporter only if that fails (e.g. a model torch.export cannot capture), and
says so in the report.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cgap_graph._version import __version__
from cgap_graph.errors import CgapError
from cgap_graph.io.atomic import atomic_write_bytes
from cgap_graph.io.outputs import check_output
from cgap_graph.ir.graph import ChannelGraph, trace
from cgap_graph.passes.cgap.seed import group_key
from cgap_graph.passes.cgap.shrink import shrink as shrink_pass
from cgap_graph.verify import random_inputs

DEFAULT_OPSET = 18  # the exporter's native opset (torchlib); newer ones go through the version converter
TOLERANCE = 1e-4  # max |ONNX Runtime - PyTorch| / max(1, max |PyTorch output|)
META_PREFIX = "cgap_graph."


class ExportError(CgapError):
    """The model cannot be exported, or the exported file does not match PyTorch."""


@dataclass
class ExportReport:
    path: Path
    opset: int
    exporter: str  # "dynamo" | "legacy"
    dynamic_batch: bool
    max_abs_diff: float
    output_scale: float  # max |output| of PyTorch on the check inputs
    tolerance: float
    params: int
    widths: dict[str, int]
    removed: dict[str, int] = field(default_factory=dict)  # group -> masked units shrunk away
    notes: list[str] = field(default_factory=list)


def export_onnx(model: nn.Module | ChannelGraph, input_shape: tuple[int, ...] | list[tuple[int, ...]] | None,
                path: str | Path, *, opset: int = DEFAULT_OPSET, check: bool = True, meta: dict | None = None,
                shrink: bool = True, exporter: str = "auto", tolerance: float = TOLERANCE,
                dynamic_batch: bool = True, input_dtype: torch.dtype | list[torch.dtype] | None = None,
                inputs: list[str | Path] | tuple = (), optimize: bool = True) -> ExportReport:
    """Export ``model`` to ``path`` (see module docstring). The user's module is never modified:
    shrinking works on a copy. ``inputs`` are files the output must not overwrite. ``optimize=False``
    skips the dynamo exporter's ONNX graph optimiser (constant folding, rewrites): on Swin-T it is
    about a sixth of the export time (``benchmarks/export_profile.py``); the file is checked the same."""

    out = Path(path)
    check_output(out, inputs)
    if exporter not in ("auto", "dynamo", "legacy"):
        raise ExportError(f"exporter must be auto, dynamo or legacy, got '{exporter}'")
    if not 7 <= opset <= 23:
        raise ExportError(f"opset {opset} is not supported; use 17 to 23 (default {DEFAULT_OPSET})")
    if isinstance(model, ChannelGraph):
        specs = model.input_specs
        cg = trace(copy.deepcopy(model.module), [s.shape for s in specs], input_dtype=[s.dtype for s in specs])
    else:
        if input_shape is None:
            raise ExportError("the input shape is unknown; pass it (e.g. --input-shape 1,3,32,32)")
        cg = trace(copy.deepcopy(model), input_shape, **({"input_dtype": input_dtype} if input_dtype else {}))
    removed: dict[str, int] = {}
    if shrink:
        before = {g.id: (group_key(g), g.width) for g in cg.groups}
        shrink_pass(cg)
        removed = {before[g.id][0]: before[g.id][1] - g.width for g in cg.groups
                   if g.id in before and g.width < before[g.id][1]}
    gm = cg.module.eval()
    widths = {group_key(g): g.width for g in cg.groups}
    example = random_inputs(cg, batch=2, seed=0)
    n_in = len(example)
    names = ["input"] if n_in == 1 else [f"input_{i}" for i in range(n_in)]
    with torch.no_grad():
        ref_out = _flat(gm(*example))
    out_names = ["output"] if len(ref_out) == 1 else [f"output_{i}" for i in range(len(ref_out))]

    notes: list[str] = []
    proto, used, dynamic = _export(gm, example, names, out_names, opset, exporter, dynamic_batch, notes, optimize)
    _add_metadata(proto, widths, meta, used)
    if check:
        _check(proto)
    diff, scale = _compare(proto, gm, cg, dynamic) if check else (float("nan"), float("nan"))
    if check and not diff <= tolerance * max(1.0, scale):
        raise ExportError(f"ONNX Runtime differs from PyTorch by {diff:.3g} on outputs up to {scale:.3g} "
                          f"(tolerance {tolerance:g} x max(1, output)); nothing written. Try --exporter legacy, "
                          "or report the model")
    atomic_write_bytes(out, proto.SerializeToString())
    return ExportReport(out, opset, used, dynamic, diff, scale, tolerance, cg.param_count(), widths, removed, notes)


def _flat(y: Any) -> list[torch.Tensor]:
    if isinstance(y, torch.Tensor):
        return [y]
    if isinstance(y, (list, tuple)):
        return [t for item in y for t in _flat(item)]
    if isinstance(y, dict):
        return [t for item in y.values() for t in _flat(item)]
    return []


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warnings (torchvision ops, constant folding): hide them."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _export(gm, example, names, out_names, opset, exporter, dynamic_batch, notes, optimize=True):
    import onnx
    tries = ["dynamo", "legacy"] if exporter == "auto" else [exporter]
    errors = []
    for how in tries:
        for dynamic in ([True, False] if dynamic_batch else [False]):
            try:
                with tempfile.TemporaryDirectory() as tmp, _quiet():
                    f = str(Path(tmp) / "model.onnx")
                    if how == "dynamo":
                        batch = torch.export.Dim("batch", min=1)
                        prog = torch.onnx.export(
                            gm, tuple(example), dynamo=True, opset_version=opset, input_names=names,
                            output_names=out_names, external_data=False, optimize=optimize,
                            dynamic_shapes=tuple({0: batch} for _ in example) if dynamic else None)
                        prog.save(f, external_data=False)
                    else:
                        axes = {n: {0: "batch"} for n in names + out_names} if dynamic else None
                        torch.onnx.export(gm, tuple(example), f, dynamo=False, opset_version=min(opset, 20),
                                          input_names=names, output_names=out_names, dynamic_axes=axes)
                    proto = onnx.load(f)
            except Exception as exc:  # noqa: BLE001 - every exporter failure is reported below
                errors.append(f"{how}{' (dynamic batch)' if dynamic else ''}: {type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300])
                continue
            if errors:
                notes.append("fell back after: " + "; ".join(errors))
            if dynamic_batch and not dynamic:
                notes.append("the batch axis is fixed: the model does not export with a dynamic batch")
            return proto, how, dynamic
    raise ExportError("cannot export the model to ONNX: " + " | ".join(errors))


def _add_metadata(proto, widths: dict[str, int], meta: dict | None, exporter: str) -> None:
    proto.producer_name = "cgap-graph"
    proto.producer_version = __version__
    entries = {"version": __version__, "widths": json.dumps(widths), "exporter": exporter}
    if meta:
        entries["meta"] = json.dumps(meta, default=str)
    del proto.metadata_props[:]
    for k, v in entries.items():
        p = proto.metadata_props.add()
        p.key, p.value = META_PREFIX + k, v


def read_metadata(proto_or_path) -> dict[str, Any]:
    """The cgap-graph metadata of an exported file: version, widths, exporter, meta."""
    import onnx
    proto = onnx.load(str(proto_or_path), load_external_data=False) if isinstance(proto_or_path, (str, Path)) \
        else proto_or_path
    out: dict[str, Any] = {}
    for p in proto.metadata_props:
        if p.key.startswith(META_PREFIX):
            k = p.key[len(META_PREFIX):]
            out[k] = json.loads(p.value) if k in ("widths", "meta") else p.value
    return out


def _check(proto) -> None:
    import onnx
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"the exported model fails the ONNX checker: {str(exc).splitlines()[0]}") from None


def session(proto_or_path, threads: int | None = None):
    """An ONNX Runtime CPU session for a model proto or file (``threads``: intra- and inter-op, for timing)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = opts.inter_op_num_threads = threads
    src = proto_or_path.SerializeToString() if hasattr(proto_or_path, "SerializeToString") else str(proto_or_path)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def median_run_seconds(sess, feed: dict, repeats: int, warmup: int = 1) -> float:
    """Median seconds of one ``sess.run`` on ``feed`` after ``warmup`` calls: a latency, robust to outliers."""
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@torch.no_grad()
def _compare(proto, gm, cg: ChannelGraph, dynamic: bool) -> tuple[float, float]:
    """(max |ONNX Runtime - PyTorch|, max |PyTorch output|) over random inputs; with a dynamic batch,
    at batch 3 too (the export used batch 2). float32 resolves ~1e-7 of an output's magnitude, so
    the tolerance scales with outputs above 1."""
    try:
        sess = session(proto)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"ONNX Runtime cannot load the exported model: {str(exc).splitlines()[0]}") from None
    diff = scale = 0.0
    for batch, seed in ([(2, 1), (3, 2)] if dynamic else [(2, 1)]):
        xs = random_inputs(cg, batch=batch, seed=seed)
        feed = {i.name: x.numpy() for i, x in zip(sess.get_inputs(), xs)}
        got = sess.run(None, feed)
        ref = _flat(gm(*xs))
        if len(got) != len(ref):
            raise ExportError(f"the ONNX model has {len(got)} outputs, PyTorch {len(ref)}")
        for g, r in zip(got, ref):
            if g.shape != tuple(r.shape):
                raise ExportError(f"ONNX output shape {g.shape} differs from PyTorch {tuple(r.shape)}")
            diff = max(diff, float(np.abs(g.astype(np.float64) - r.double().numpy()).max(initial=0.0)))
            scale = max(scale, float(r.abs().max()) if r.numel() else 0.0)
    return diff, scale
