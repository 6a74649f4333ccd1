"""The FPGA workload of a traced model, straight from its channel graph (no ONNX export).

Budgeted pruning asks the cost model "what does one more unit of this group cost?" many times;
exporting to ONNX for every question would take seconds. The layers here are the graph's
convolutions (transposed ones as the equivalent convolution over their input grid) and linear
layers, with the shapes the channel graph keeps up to date through every surgery, so a width
change is seen at once. Element-wise ops, pooling and residual adds are not modelled here (the
ONNX path fuses most of them into the layers, where they cost no MAC cycles); the budget figures
are therefore those of the MAC layers, and ``cost_onnx`` on the exported file remains the
reference for the whole model.
"""

from __future__ import annotations

from torch import nn

from cgap_graph.ir.graph import ChannelGraph
from cgap_graph.passes.fpga.graph import MacLayer, Workload


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[-1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def graph_workload(cg: ChannelGraph) -> Workload:
    """MAC layers of every Conv1d/Conv2d/ConvTranspose2d/Linear module call, in graph order, named
    by their graph node (a module called twice is two layers)."""
    layers: list[MacLayer] = []
    skipped: list[str] = []
    gm = cg.module
    for node in cg.graph.nodes:
        if node.op != "call_module":
            continue
        mod = gm.get_submodule(node.target)
        x, y = node.args[0].meta.get("shape"), node.meta.get("shape")
        if not isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) or x is None or y is None:
            continue
        if isinstance(mod, nn.Linear):
            rows = 1
            for s in y[:-1]:
                rows *= s
            layers.append(MacLayer(node.name, "Gemm", nif=x[-1], niy=1, nix=rows, nof=y[-1], noy=1, nox=rows,
                                   bias=mod.bias is not None, out_elems=rows * y[-1]))
            continue
        ky, kx = _pair(mod.kernel_size)
        if len(x) == 3:  # 1-D convolution: one row
            x, y, ky = (x[0], x[1], 1, x[2]), (y[0], y[1], 1, y[2]), 1
        if isinstance(mod, nn.ConvTranspose2d):  # every input pixel scatters a k x k x nof kernel
            layers.append(MacLayer(node.name, "ConvTranspose", nif=x[1], niy=x[2], nix=x[3], nof=y[1], noy=x[2],
                                   nox=x[3], nky=ky, nkx=kx, pad_top=ky // 2, groups=mod.groups,
                                   bias=mod.bias is not None, out_elems=y[1] * y[2] * y[3]))
            continue
        sy, _ = _pair(mod.stride)
        dy, _ = _pair(mod.dilation)
        py = 0 if isinstance(mod.padding, str) else _pair(mod.padding)[0]
        layers.append(MacLayer(node.name, "Conv", nif=x[1], niy=x[2], nix=x[3], nof=y[1], noy=y[2], nox=y[3],
                               nky=ky, nkx=kx, stride_y=sy, dilation_y=dy, pad_top=py, groups=mod.groups,
                               bias=mod.bias is not None, out_elems=y[1] * y[2] * y[3]))
    return Workload(type(cg.traced.root).__name__, layers, skipped)
