"""VGG-16 and VGG-19 for 32x32 inputs, as in the CGaP paper (Sec. V-A): the convolutional
structure of Simonyan & Zisserman, each conv followed by BatchNorm and ReLU, and only two
fully-connected layers (512 -> 512 -> classes), following Li et al. (pruning filters)."""

from __future__ import annotations

from torch import nn

from cgap_graph.zoo.common import scaled

CFG = {
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(self, depth: int = 16, width: float = 1.0, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in CFG[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                out = scaled(v, width)
                layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                c = out
        self.features = nn.Sequential(*layers)
        hidden = scaled(512, width)
        self.classifier = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = x.flatten(1)
        return self.classifier(x)


def vgg16(width: float = 1.0, num_classes: int = 10, in_channels: int = 3) -> VGG:
    return VGG(16, width, num_classes, in_channels)


def vgg19(width: float = 1.0, num_classes: int = 10, in_channels: int = 3) -> VGG:
    return VGG(19, width, num_classes, in_channels)
