"""A small MobileNetV2-like network for 32x32 inputs: inverted residual blocks (1x1 expand,
3x3 depthwise, 1x1 linear projection) with residual connections where shapes allow."""

from __future__ import annotations

from torch import nn

from cgap_graph.zoo.common import scaled


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, hidden, 1))
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.block(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    # (expansion, channels, repeats, stride)
    CFG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 2, 2), (6, 96, 1, 1)]

    def __init__(self, width: float = 1.0, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        c = scaled(32, width)
        self.stem = _conv_bn(in_channels, c, 3, 1)
        blocks: list[nn.Module] = []
        for t, ch, n, s in self.CFG:
            out = scaled(ch, width)
            for i in range(n):
                blocks.append(InvertedResidual(c, out, s if i == 0 else 1, t))
                c = out
        self.blocks = nn.Sequential(*blocks)
        last = scaled(256, width)
        self.head = _conv_bn(c, last, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(self.pool(x).flatten(1))


def mobilenetv2(width: float = 1.0, num_classes: int = 10) -> MobileNetV2:
    return MobileNetV2(width, num_classes)
