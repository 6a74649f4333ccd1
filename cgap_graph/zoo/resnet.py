"""CIFAR ResNets (He et al. 2016): ResNet-20/56/110, 3 stages of 16/32/64 channels.

``shortcut="B"`` (default, the paper's choice) uses 1x1 projection convolutions where the
width or resolution changes; ``shortcut="A"`` uses the parameter-free zero-padding shortcut
(``F.pad`` on the channel dimension), common in public CIFAR checkpoints.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from cgap_graph.zoo.common import scaled


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.mode = "identity"
        if stride != 1 or cin != cout:
            if shortcut == "A":
                self.mode = "pad"
                self.pad_lo = (cout - cin) // 2
                self.pad_hi = cout - cin - self.pad_lo
            else:
                self.mode = "project"
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.mode == "project":
            sc = self.shortcut(x)
        elif self.mode == "pad":
            sc = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad_lo, self.pad_hi), "constant", 0)
        else:
            sc = x
        return F.relu(out + sc)


class CifarResNet(nn.Module):
    def __init__(self, depth: int = 20, width: float = 1.0, num_classes: int = 10, shortcut: str = "B",
                 in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError("depth must be 6n+2 (20, 32, 44, 56, 110)")
        n = (depth - 2) // 6
        widths = [scaled(c, width) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        blocks: list[nn.Module] = []
        cin = widths[0]
        for stage, cout in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(cin, cout, stride, shortcut))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def resnet20(width: float = 1.0, num_classes: int = 10, shortcut: str = "B") -> CifarResNet:
    return CifarResNet(20, width, num_classes, shortcut)


def resnet56(width: float = 1.0, num_classes: int = 10, shortcut: str = "B") -> CifarResNet:
    return CifarResNet(56, width, num_classes, shortcut)


def resnet110(width: float = 1.0, num_classes: int = 10, shortcut: str = "B") -> CifarResNet:
    return CifarResNet(110, width, num_classes, shortcut)
