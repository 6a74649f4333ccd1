"""The model zoo: the paper's networks and one of each coupling pattern, all width-scalable.

``build("resnet56", width=0.125)`` is a seed one eighth as wide as the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from cgap_graph.zoo.densenet import densenet
from cgap_graph.zoo.lenet import LeNet5
from cgap_graph.zoo.mobilenet import mobilenetv2
from cgap_graph.zoo.resnet import resnet20, resnet56, resnet110
from cgap_graph.zoo.senet import se_resnet
from cgap_graph.zoo.transformer import vit
from cgap_graph.zoo.vgg import vgg16, vgg19


@dataclass(frozen=True)
class ZooEntry:
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    description: str


ZOO: dict[str, ZooEntry] = {
    "lenet5": ZooEntry(LeNet5, (1, 1, 28, 28), "LeNet-5 (20-50-500-10), MNIST, hard-coded view"),
    "vgg16": ZooEntry(vgg16, (1, 3, 32, 32), "VGG-16 with BN and two FC layers, 32x32"),
    "vgg19": ZooEntry(vgg19, (1, 3, 32, 32), "VGG-19 with BN and two FC layers, 32x32"),
    "resnet20": ZooEntry(resnet20, (1, 3, 32, 32), "CIFAR ResNet-20, projection shortcuts"),
    "resnet56": ZooEntry(resnet56, (1, 3, 32, 32), "CIFAR ResNet-56, projection shortcuts"),
    "resnet110": ZooEntry(resnet110, (1, 3, 32, 32), "CIFAR ResNet-110, projection shortcuts"),
    "mobilenetv2": ZooEntry(mobilenetv2, (1, 3, 32, 32), "MobileNetV2-like: depthwise, inverted residuals"),
    "densenet": ZooEntry(densenet, (1, 3, 32, 32), "DenseNet-BC-like: concatenation, bottlenecks"),
    "se_resnet": ZooEntry(se_resnet, (1, 3, 32, 32), "ResNet with squeeze-and-excitation blocks"),
    "vit": ZooEntry(vit, (1, 3, 32, 32), "Vision transformer encoder: nn.MultiheadAttention, LayerNorm"),
}


def names() -> list[str]:
    return list(ZOO)


def build(name: str, width: float = 1.0, num_classes: int | None = None, **kwargs) -> nn.Module:
    """A zoo model by name, ``width`` times as wide as the reference."""
    if name not in ZOO:
        raise KeyError(f"no zoo model '{name}'; available: {', '.join(ZOO)}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return ZOO[name].factory(width=width, **kwargs)


def input_shape(name: str) -> tuple[int, ...]:
    return ZOO[name].input_shape
