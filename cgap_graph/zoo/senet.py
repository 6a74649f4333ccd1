"""A small ResNet with squeeze-and-excitation blocks (Hu et al. 2018): the block output is
scaled per channel by ``sigmoid(fc2(relu(fc1(avgpool(x)))))``, coupling the SE path to the
residual stream through a multiplication."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from cgap_graph.zoo.common import scaled


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(c, max(1, c // reduction))
        self.fc2 = nn.Linear(max(1, c // reduction), c)

    def forward(self, x):
        s = x.mean((2, 3))
        s = self.fc2(F.relu(self.fc1(s))).sigmoid()
        return x * s[:, :, None, None]


class SEBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.se = SqueezeExcite(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        sc = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + sc)


class SEResNet(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 10, blocks: int = 2, in_channels: int = 3) -> None:
        super().__init__()
        widths = [scaled(c, width) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers: list[nn.Module] = []
        c = widths[0]
        for stage, out in enumerate(widths):
            for i in range(blocks):
                layers.append(SEBlock(c, out, 2 if stage > 0 and i == 0 else 1))
                c = out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def se_resnet(width: float = 1.0, num_classes: int = 10) -> SEResNet:
    return SEResNet(width, num_classes)
