"""Read an ONNX CNN into the work an FPGA accelerator does for one inference.

The accelerator (Ma et al., TCAD 2019) runs one MAC layer at a time: Conv, Gemm and MatMul become
``MacLayer``s. Shapes come from ONNX shape inference; the first axis of every activation is the
batch and is dropped (a symbolic or fixed batch is costed as one inference).

Fusion rule (ours, the usual one for such accelerators): the ops that follow a MAC layer along a
chain of single-reader tensors are applied to its output tile on chip before the write-back, so
they cost no DRAM traffic of their own:

- BatchNormalization (folded into the weights and a bias), activations and other unary
  elementwise ops, and binary elementwise ops with a constant operand (bias adds, scales);
- pooling (MaxPool, AveragePool, global pools, ReduceMean/Max): only the pooled map is written;
- a binary elementwise op (the residual Add) whose other operand an earlier layer already wrote:
  that operand is read from DRAM during the write-back (``extra_elems``).

Concat and shape-only ops (Reshape, Flatten, Squeeze, Identity, Dropout ...) are free: producers
write into their slice of the concatenation, and views move no data. Any other known op (an
elementwise op that could not be fused, Transpose, Softmax, Pad, Resize, LayerNorm ...) is a
memory-bound ``MemoryPass``: it reads its inputs from DRAM and writes its outputs. Ops whose
inputs are all constant (shape arithmetic) cost nothing. An op the model does not know, or one
whose shapes are unknown, is skipped and reported by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from cgap_graph.errors import CgapError

MAC_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
UNARY_OPS = {
    "Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu", "Softplus",
    "Softsign", "Gelu", "Erf", "Exp", "Log", "Neg", "Abs", "Sqrt", "Reciprocal", "Cast", "Mish", "Round", "Floor",
    "Ceil", "Sign", "BatchNormalization", "ThresholdedRelu", "Shrink",
}
BINARY_OPS = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu"}
POOL_OPS = {"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
            "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2"}
FREE_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Concat", "Shape", "Size",
            "Constant", "ConstantOfShape"}
MEMORY_OPS = {
    "Transpose", "Slice", "Split", "Gather", "GatherElements", "Pad", "Resize", "Upsample", "Softmax", "LogSoftmax",
    "LayerNormalization", "InstanceNormalization", "GroupNormalization", "LpNormalization", "Expand", "Tile",
    "DepthToSpace", "SpaceToDepth", "ArgMax", "ArgMin", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
    "Not", "And", "Or", "Where", "CumSum", "TopK", "ReduceProd", "ReduceLogSumExp", "ReduceL1", "ReduceSumSquare",
}
_METADATA_OPS = {"Shape", "Size"}
_ONNX_DOMAINS = ("", "ai.onnx")


@dataclass
class MacLayer:
    """One Conv/Gemm/MatMul in Ma et al.'s loop nest notation (N: sizes, i/o: input/output,
    x/y: columns/rows, f: channels, k: kernel), with what is fused into it."""

    name: str
    op: str
    nif: int
    niy: int
    nix: int
    nof: int
    noy: int
    nox: int
    nky: int = 1
    nkx: int = 1
    stride_y: int = 1
    dilation_y: int = 1
    pad_top: int = 0
    groups: int = 1
    bias: bool = False
    repeat: int = 1  # independent copies (batched MatMul heads)
    out_elems: int = 0  # elements written to DRAM (after fused pooling)
    extra_elems: int = 0  # elements of fused operands read from DRAM (residual Add ...)
    fused: list[str] = field(default_factory=list)
    weights: np.ndarray | None = None  # (nof, K) constant weights, for sparsity counts

    @property
    def k(self) -> int:
        """Weights per output channel (the MACs of one output pixel)."""
        return self.nif // self.groups * self.nky * self.nkx

    @property
    def macs(self) -> int:
        return self.repeat * self.nof * self.noy * self.nox * self.k

    @property
    def conv_out_elems(self) -> int:
        return self.nof * self.noy * self.nox

    def in_rows(self, y0: int, y1: int) -> int:
        """Input rows (inside the image: padding is generated on chip) that output rows [y0, y1) read."""
        lo = y0 * self.stride_y - self.pad_top
        hi = (y1 - 1) * self.stride_y - self.pad_top + (self.nky - 1) * self.dilation_y
        return max(0, min(hi, self.niy - 1) - max(lo, 0) + 1)

    def in_channels(self, c0: int, c1: int) -> int:
        """Input channels that output channels [c0, c1) read: all of them, or their groups' only."""
        if self.groups == 1:
            return self.nif
        per_out, per_in = self.nof // self.groups, self.nif // self.groups
        return ((c1 - 1) // per_out - c0 // per_out + 1) * per_in

    def describe(self) -> str:
        if self.op in ("Conv", "ConvTranspose"):
            s = f"{self.nif}x{self.niy}x{self.nix} -> {self.nof}x{self.noy}x{self.nox} k{self.nky}x{self.nkx}"
            s += f" s{self.stride_y}" + (f" g{self.groups}" if self.groups > 1 else "")
        else:
            s = f"{self.nox}x{self.nif} @ {self.nif}x{self.nof}"
        return s + (f" x{self.repeat}" if self.repeat > 1 else "")


@dataclass
class MemoryPass:
    """An op that cannot be fused: it streams its inputs from DRAM and its outputs back."""

    name: str
    op: str
    read_elems: list[int]
    write_elems: list[int]
    fused: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"read {sum(self.read_elems):,} / write {sum(self.write_elems):,} elems"


@dataclass
class Workload:
    name: str
    layers: list[MacLayer | MemoryPass]
    skipped: list[str]


def load_onnx(source: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """The model and a display name; a file that is not ONNX is a one-line CgapError."""
    if isinstance(source, onnx.ModelProto):
        return source, source.graph.name or "model"
    path = Path(source)
    fix = "export the model to ONNX first (e.g. torch.onnx.export, or cgap-graph's export command)"
    if not path.is_file():
        raise CgapError(f"{path} does not exist; give an .onnx file ({fix})")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CgapError(f"{path} is not an ONNX model ({reason}); {fix}") from None
    if model.ir_version == 0 or not model.graph.node:
        raise CgapError(f"{path} is not an ONNX model (no graph in it); {fix}")
    return model, path.stem


def _dims(vi: onnx.ValueInfoProto) -> list[int | None] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim]


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Graph:
    """Shapes, constants, producers and readers of one ONNX graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.inference_error = ""
        self.batch = 1  # inferences in one run of the graph (a symbolic batch axis is set to 1)
        g = _infer_shapes(model, self).graph
        self.nodes = list(g.node)
        self.shapes: dict[str, list[int | None] | None] = {}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            self.shapes[vi.name] = _dims(vi)
        self.inits = {t.name: t for t in g.initializer}
        for name, t in self.inits.items():
            self.shapes.setdefault(name, list(t.dims))
        self.outputs = {o.name for o in g.output}
        self.producer: dict[str, int] = {}
        self.readers: dict[str, list[int]] = {}
        self.const_nodes: dict[str, onnx.NodeProto] = {}
        self.activation: set[str] = {i.name for i in g.input if i.name not in self.inits}
        for i, n in enumerate(self.nodes):
            for t in n.input:
                if t:
                    self.readers.setdefault(t, []).append(i)
            for t in n.output:
                self.producer[t] = i
            if n.op_type in _METADATA_OPS:  # a shape is not data: what is computed from it is free
                continue
            if any(t in self.activation for t in n.input):
                self.activation.update(t for t in n.output if t)
            elif n.op_type in ("Constant", "Identity"):
                for t in n.output:
                    self.const_nodes[t] = n

    def elems(self, name: str) -> int | None:
        """Elements of one inference (an activation holds ``batch`` of them); None if unknown."""
        dims = self.shapes.get(name)
        if dims is None or any(d is None for d in dims):
            return None
        return self.per_inference(math.prod(dims)) if name in self.activation else math.prod(dims)

    def per_inference(self, count: int) -> int:
        return max(1, count // self.batch)

    def dims(self, name: str) -> list[int | None] | None:
        return self.shapes.get(name)

    def const(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor (initializer, Constant, Identity of one), else None."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.const_nodes.get(name)
        if node is None:
            return None
        if node.op_type == "Identity":
            return self.const(node.input[0])
        a = _attrs(node)
        if "value" in a:
            return numpy_helper.to_array(a["value"])
        return None


def _infer_shapes(model: onnx.ModelProto, graph: _Graph) -> onnx.ModelProto:
    """ONNX shape inference (with data propagation, so computed Reshape shapes resolve) on a copy
    whose symbolic batch axes are 1 and whose undeclared custom domains are declared (inference
    skips their ops). If inference still fails: the shapes already stored in the file."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits and i.type.tensor_type.shape.dim]
    symbolic = [i.name for i in inputs if not i.type.tensor_type.shape.dim[0].dim_value]
    fixed = [i.type.tensor_type.shape.dim[0].dim_value for i in inputs if i.name not in symbolic]
    graph.batch = fixed[0] if fixed and not symbolic else 1
    declared = {o.domain for o in model.opset_import} | set(_ONNX_DOMAINS)
    missing = sorted({n.domain for n in model.graph.node} - declared)
    work = model
    if symbolic or missing:
        work = onnx.ModelProto()
        work.CopyFrom(model)
        for i in work.graph.input:
            if i.name in symbolic:
                i.type.tensor_type.shape.dim[0].dim_value = 1
        for d in missing:
            work.opset_import.append(onnx.helper.make_opsetid(d, 1))
    try:
        return onnx.shape_inference.infer_shapes(work, data_prop=True)
    except Exception as exc:
        graph.inference_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return work


