"""LeNet-5 as in the CGaP paper (Table I): conv 20 - conv 50 - fc 500 - fc 10 on 28x28 MNIST.

The flatten is the classic hard-coded ``x.view(-1, 50 * 4 * 4)``: a graph constant that the
surgery rewrites when conv2 changes width. Width 1.0 has 431,080 parameters and 4.59M FLOPs.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from cgap_graph.zoo.common import scaled


class LeNet5(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        c1, c2, f1 = scaled(20, width), scaled(50, width), scaled(500, width)
        self.conv1 = nn.Conv2d(in_channels, c1, 5)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.fc1 = nn.Linear(c2 * 4 * 4, f1)
        self.fc2 = nn.Linear(f1, num_classes)
        self.flat_features = c2 * 4 * 4

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(-1, self.flat_features)
        return self.fc2(F.relu(self.fc1(x)))
