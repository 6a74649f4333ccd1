"""Models whose outputs respond to their inputs, so that an oracle at 1e-4 can see a mix-up.

As built, many models hide a channel mix-up: fresh norm layers are identities, a zero-initialised
head (torchvision's ViT) makes the output exactly zero, and a small-std initialisation
(GoogLeNet, ShuffleNetV2) makes it barely depend on the input. :func:`make_responsive` gives norms
random statistics and affine parameters, re-initialises every all-zero parameter (He init for
weights, small random values for vectors), and with ``he_all`` every conv/linear weight;
:func:`input_sensitivity` measures how much the output moves between two random inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from cgap_graph.verify.inputs import output_tensor, randomize_norm_stats

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
             nn.Linear)


def _he_(p: torch.Tensor, g: torch.Generator, gain: float = 1.0) -> None:
    fan_in = max(1, p[0].numel()) if p.dim() >= 2 else max(1, p.numel())
    std = math.sqrt(2.0 / fan_in) if p.dim() >= 2 else 0.1
    p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (std * gain))


def calibration_batch(input_shape: Sequence[int], dtype: torch.dtype = torch.float32, batch: int = 4,
                      seed: int = 0) -> list[torch.Tensor]:
    """A random batch of one input's shape (``batch`` replaces dim 0), for :func:`calibrate_norms`."""
    g = torch.Generator().manual_seed(seed + 7)
    shape = (batch, *input_shape[1:])
    if dtype.is_floating_point:
        return [torch.randn(shape, generator=g, dtype=dtype)]
    return [torch.randint(0, 8, shape, generator=g, dtype=dtype)]


@torch.no_grad()
def make_responsive(model: nn.Module, seed: int = 0, he_all: bool = False, input_shape: Sequence[int] | None = None,
                    input_dtype: torch.dtype = torch.float32, he_gain: float = 1.0) -> nn.Module:
    """``model`` (changed in place and returned): norm statistics and affine parameters
    randomised, all-zero parameters re-initialised, and with ``he_all`` every conv/linear weight
    re-drawn from He initialisation (for models whose initialisation is too small to respond).
    With ``input_shape``, BatchNorm statistics are then measured on a random batch of that shape
    (:func:`calibrate_norms`): random statistics that ignore the activations' scale let a deep
    plain network (VGG) shrink its signal until the output is nearly constant. ``he_gain`` scales
    the ``he_all`` draws: full He weights make a deep gated network (EfficientNet-B4 and up, with
    squeeze-excitation) chaotic, so that float rounding alone moves its output by tens of percent."""
    randomize_norm_stats(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    for _, p in model.named_parameters():
        if p.is_floating_point() and p.numel() and not p.is_meta and not bool(p.any()):
            _he_(p, g)
    if he_all:
        for m in model.modules():
            if isinstance(m, _WEIGHTED):
                _he_(m.weight, g, he_gain)
    if input_shape is not None:
        calibrate_norms(model, calibration_batch(input_shape, input_dtype, seed=seed), seed=seed)
    return model


@torch.no_grad()
def input_sensitivity(model: nn.Module, inputs_a: Sequence[torch.Tensor], inputs_b: Sequence[torch.Tensor]
                      ) -> float:
    """max |f(a) - f(b)| / max |f(a)| (0 when the output is zero or does not depend on its input)."""
    was = model.training
    model.eval()
    try:
        ya, yb = output_tensor(model(*inputs_a)).float(), output_tensor(model(*inputs_b)).float()
    finally:
        model.train(was)
    scale = float(ya.abs().max()) if ya.numel() else 0.0
    return float((ya - yb).abs().max()) / scale if scale > 0 else 0.0


@torch.no_grad()
def calibrate_norms(model: nn.Module, inputs: Sequence[torch.Tensor], seed: int = 0) -> nn.Module:
    """Set BatchNorm running statistics to those of one forward on ``inputs`` (random data).

    Statistics drawn at random ignore the activations' real scale: through a deep network the
    activations then grow or shrink by orders of magnitude and float32 rounding alone moves the
    output by ~1e-4 of its size, which an oracle cannot tell from a mix-up. Statistics measured on
    a random batch keep every layer near unit scale; they are then jittered (mean by 0.1 std,
    variance by a factor in [0.7, 1.3]) so they are not exact batch statistics either."""
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m, m.momentum) for m in norms]
    modes = {m: m.training for m in model.modules()}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: one batch sets the statistics exactly
    model.train()
    try:
        model(*inputs)
    finally:
        for m, mom in saved:
            m.momentum = mom
        for m, mode in modes.items():
            m.train(mode)
    g = torch.Generator().manual_seed(seed + 3)
    for m in norms:
        std = m.running_var.clamp_min(0).sqrt()
        m.running_mean.add_(0.1 * std * torch.randn(std.shape, generator=g))
        m.running_var.mul_(0.7 + 0.6 * torch.rand(std.shape, generator=g))
    return model
