"""A DenseNet-BC-like network (Huang et al. 2017) for 32x32 inputs: dense blocks whose layers
concatenate their output to a growing feature stream, with 1x1 bottlenecks and transitions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cgap_graph.zoo.common import scaled


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], 1)


class Transition(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 10, growth: int = 12, layers: tuple = (6, 6, 6),
                 in_channels: int = 3) -> None:
        super().__init__()
        k = scaled(growth, width)
        c = 2 * k
        self.conv1 = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        for i, n in enumerate(layers):
            for _ in range(n):
                stages.append(DenseLayer(c, k))
                c += k
            if i < len(layers) - 1:
                out = c // 2
                stages.append(Transition(c, out))
                c = out
        self.features = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.features(self.conv1(x))
        x = F.adaptive_avg_pool2d(F.relu(self.bn(x)), 1).flatten(1)
        return self.fc(x)


def densenet(width: float = 1.0, num_classes: int = 10) -> DenseNet:
    return DenseNet(width, num_classes)
