"""The workload of an ONNX model for the cost model: MAC layers (Conv, Gemm, MatMul) with the element-
wise ops fused into them, memory-bound passes, and what was skipped."""

from __future__ import annotations

import math

import onnx

from cgap_graph.passes.fpga.graph import (
    _ONNX_DOMAINS,
    BINARY_OPS,
    FREE_OPS,
    MAC_OPS,
    MEMORY_OPS,
    POOL_OPS,
    UNARY_OPS,
    MacLayer,
    MemoryPass,
    Workload,
    _attrs,
    _Graph,
)


def node_name(node: onnx.NodeProto, index: int) -> str:
    return node.name or (node.output[0] if node.output else f"{node.op_type}_{index}")


def read_workload(model: onnx.ModelProto, name: str = "model", *, want_weights: bool = False) -> Workload:
    """The MAC layers, memory passes and skipped ops of ``model`` in execution order."""
    g = _Graph(model)
    layers: list[MacLayer | MemoryPass] = []
    skipped: list[str] = []
    if g.inference_error:
        skipped.append(f"(shape inference failed: {g.inference_error}; only the shapes stored in the file are used)")
    fused: set[int] = set()
    for i, node in enumerate(g.nodes):
        if i in fused or not any(t in g.activation for t in node.input):
            continue  # fused into an earlier layer, or constant arithmetic (shapes, folded weights)
        label = node_name(node, i)
        known = node.domain in _ONNX_DOMAINS
        op = node.op_type
        if not known or op not in MAC_OPS | UNARY_OPS | BINARY_OPS | POOL_OPS | FREE_OPS | MEMORY_OPS:
            domain = f"{node.domain}:" if node.domain not in _ONNX_DOMAINS else ""
            skipped.append(f"{label} ({domain}{op}): no cost model for this op")
            continue
        if op in FREE_OPS:
            continue
        if op in MAC_OPS:
            layer, why = _mac_layer(g, node, label, want_weights)
            if layer is None:
                skipped.append(f"{label} ({op}): {why}")
                continue
            _fuse_chain(g, i, layer, fused)
            layers.append(layer)
            continue
        reads = [g.elems(t) for t in node.input if t in g.activation]
        writes = [g.elems(t) for t in node.output if t and (t in g.readers or t in g.outputs)]
        if any(e is None for e in reads + writes):
            skipped.append(f"{label} ({op}): shape unknown after shape inference")
            continue
        layers.append(MemoryPass(label, op, reads, writes))
    return Workload(name, layers, skipped)


def _mac_layer(g: _Graph, node: onnx.NodeProto, label: str, want_weights: bool
               ) -> tuple[MacLayer | None, str]:
    if node.op_type == "Conv":
        return _conv(g, node, label, want_weights)
    if node.op_type == "ConvTranspose":
        return _conv_transpose(g, node, label, want_weights)
    if node.op_type == "Gemm":
        return _gemm(g, node, label, want_weights)
    return _matmul(g, node, label, want_weights)


def _known(dims: list[int | None] | None, rank: int | None = None) -> bool:
    return dims is not None and all(d is not None for d in dims) and (rank is None or len(dims) == rank)


def _conv(g: _Graph, node: onnx.NodeProto, label: str, want_weights: bool) -> tuple[MacLayer | None, str]:
    x, w, y = g.dims(node.input[0]), g.dims(node.input[1]), g.dims(node.output[0])
    if not (x and y and _known(x[1:]) and _known(y[1:]) and _known(w)):
        return None, ("shape unknown after shape inference (an input comes from a skipped op, or the image size "
                      "is symbolic: export with a fixed input size)")
    if len(x) not in (3, 4):
        return None, f"{len(x) - 2}-D convolution is not modelled (only 1-D and 2-D)"
    a = _attrs(node)
    if len(x) == 3:  # 1-D: one row
        x, y, w = [x[0], x[1], 1, x[2]], [y[0], y[1], 1, y[2]], [w[0], w[1], 1, w[2]]
        strides = [1] + list(a.get("strides", [1]))
        dilations = [1] + list(a.get("dilations", [1]))
        pads = [0, 0, 0, 0]
    else:
        strides = list(a.get("strides", [1, 1]))
        dilations = list(a.get("dilations", [1, 1]))
        pads = list(a.get("pads", [0, 0, 0, 0]))
    nky = w[2]
    pad_top = pads[0]
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = max(0, (y[2] - 1) * strides[0] + (nky - 1) * dilations[0] + 1 - x[2])
        pad_top = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
    elif auto_pad == "VALID":
        pad_top = 0
    layer = MacLayer(label, "Conv", nif=x[1], niy=x[2], nix=x[3], nof=y[1], noy=y[2], nox=y[3], nky=nky,
                     nkx=w[3], stride_y=strides[0], dilation_y=dilations[0], pad_top=pad_top,
                     groups=int(a.get("group", 1)), bias=len(node.input) > 2 and bool(node.input[2]),
                     out_elems=y[1] * y[2] * y[3])
    if want_weights:
        value = g.const(node.input[1])
        if value is not None:
            layer.weights = value.reshape(value.shape[0], -1)
    return layer, ""


def _conv_transpose(g: _Graph, node: onnx.NodeProto, label: str, want_weights: bool
                    ) -> tuple[MacLayer | None, str]:
    """A transposed convolution as the equivalent convolution workload over its *input* grid:
    every input pixel multiplies a k x k kernel for each output channel, so the MACs are
    ``nif/groups x niy x nix x nof x ky x kx`` (what a strided scatter, or a convolution over the
    zero-upsampled input skipping the zeros, computes); the outputs written are the real ones."""
    x, w, y = g.dims(node.input[0]), g.dims(node.input[1]), g.dims(node.output[0])
    if not (x and y and _known(x[1:]) and _known(y[1:]) and _known(w)) or len(x) != 4:
        return None, "shape unknown after shape inference, or not a 2-D transposed convolution"
    groups = int(_attrs(node).get("group", 1))
    nof = w[1] * groups  # ONNX ConvTranspose weights are (C_in, C_out / groups, ky, kx)
    layer = MacLayer(label, "ConvTranspose", nif=x[1], niy=x[2], nix=x[3], nof=nof, noy=x[2], nox=x[3], nky=w[2],
                     nkx=w[3], pad_top=w[2] // 2, groups=groups, bias=len(node.input) > 2 and bool(node.input[2]),
                     out_elems=y[1] * y[2] * y[3])
    if want_weights:
        value = g.const(node.input[1])
        if value is not None:  # (C_in, C_out/g, k, k) -> (C_out, K) as for a convolution
            layer.weights = value.reshape(groups, x[1] // groups, w[1], -1).transpose(0, 2, 1, 3).reshape(nof, -1)
    return layer, ""


def _gemm(g: _Graph, node: onnx.NodeProto, label: str, want_weights: bool) -> tuple[MacLayer | None, str]:
    a_dims, b_dims = g.dims(node.input[0]), g.dims(node.input[1])
    a = _attrs(node)
    if not (_known(b_dims, 2) and _known(a_dims, 2)):
        return None, "shape unknown after shape inference"
    trans_b = bool(a.get("transB", 0))
    n_out, k = (b_dims[0], b_dims[1]) if trans_b else (b_dims[1], b_dims[0])
    rows = g.per_inference(a_dims[1] if a.get("transA", 0) else a_dims[0])  # rows of A: the batch in a CNN
    layer = MacLayer(label, "Gemm", nif=k, niy=1, nix=rows, nof=n_out, noy=1, nox=rows,
                     bias=len(node.input) > 2 and bool(node.input[2]), out_elems=rows * n_out)
    if want_weights:
        value = g.const(node.input[1])
        if value is not None:
            layer.weights = value if trans_b else value.T
    return layer, ""


def _matmul(g: _Graph, node: onnx.NodeProto, label: str, want_weights: bool) -> tuple[MacLayer | None, str]:
    a_dims, b_dims = g.dims(node.input[0]), g.dims(node.input[1])
    if not (_known(a_dims) and _known(b_dims)) or not a_dims or not b_dims:
        return None, "shape unknown after shape inference"
    b_is_act = node.input[1] in g.activation
    k, n_out = (b_dims[-2], b_dims[-1]) if len(b_dims) >= 2 else (b_dims[0], 1)
    if b_is_act and len(b_dims) >= 3:  # batched product (attention heads): one M x K @ K x N per head
        repeat = g.per_inference(math.prod(b_dims[:-2]))
        rows = a_dims[-2] if len(a_dims) >= 2 else 1
    else:  # activations x a weight matrix: every row of A (tokens, pixels, batch) is one output pixel
        repeat = 1
        rows = g.per_inference(math.prod(a_dims[:-1])) if len(a_dims) >= 2 else 1
    layer = MacLayer(label, "MatMul", nif=k, niy=1, nix=rows, nof=n_out, noy=1, nox=rows, repeat=repeat,
                     out_elems=repeat * rows * n_out)
    if want_weights and not b_is_act:
        value = g.const(node.input[1])
        if value is not None and value.ndim == 2:
            layer.weights = value.T
    return layer, ""


def _fuse_chain(g: _Graph, mac_index: int, layer: MacLayer, fused: set[int]) -> None:
    """Absorb the ops that follow the layer along single-reader tensors (see module docstring)."""
    t = g.nodes[mac_index].output[0]
    while t not in g.outputs and len(g.readers.get(t, [])) == 1:
        j = g.readers[t][0]
        n = g.nodes[j]
        if n.domain not in _ONNX_DOMAINS or not n.output:
            break
        others = [u for u in n.input if u and u != t]
        acts = [u for u in others if u in g.activation]
        if n.op_type in UNARY_OPS or n.op_type in POOL_OPS:
            if n.input[0] != t or acts:
                break
        elif n.op_type in BINARY_OPS:
            if any(g.producer.get(u, -1) > mac_index for u in acts):
                break  # the other operand is computed later: the later layer fuses this op
        else:
            break
        sizes = [g.elems(u) for u in acts]
        out_elems = g.elems(n.output[0])
        if out_elems is None or any(s is None for s in sizes):
            break
        layer.extra_elems += sum(sizes)
        if n.op_type == "BatchNormalization" or (n.op_type in ("Add", "Sub") and not acts):
            layer.bias = True  # folded into the weights and a per-channel bias
        fused.add(j)
        layer.fused.append(n.op_type)
        layer.out_elems = out_elems
        t = n.output[0]
