"""Model registry: plain ``nn.Module`` s mapping images in [0, 1] to logits (DESIGN §3).

``create_model(name, input_shape=..., num_classes=..., **overrides)`` is the one entry point;
``MODELS.names()`` lists what is registered.

Examples
--------
>>> from neurorobust.models import create_model
>>> model = create_model("cnn_mnist")
>>> model(torch.rand(4, 1, 28, 28)).shape
torch.Size([4, 10])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ..registry import Registry
from .base import ImageModel, Normalize
from .cnn import KuboNet, MnistCNN
from .mlp import MLP
from .resnet import ResNet
from .vgg import CEREBELLUM_TRUNK, VGGEncoder, VGGNet

__all__ = [
    "MLP",
    "MODELS",
    "ImageModel",
    "KuboNet",
    "MnistCNN",
    "Normalize",
    "ResNet",
    "VGGEncoder",
    "VGGNet",
    "create_model",
]

MODELS = Registry("model")

_SLEEP = "Tadros, Krishnan, Ramyaa, Bazhenov 2020, ICLR (sleep network, as coded)"
_KUBO = "Kubo 2019, PhD thesis, Dalhousie, Tables 3.1-3.3"


@MODELS.register("mlp", paper="generic ReLU MLP")
def mlp(
    input_shape: Sequence[int] = (1, 28, 28),
    num_classes: int = 10,
    widths: Sequence[int] = (1200, 1200),
    bias: bool = False,
    dropout: float = 0.0,
) -> nn.Module:
    """Bias-free ReLU MLP with configurable widths (softmax/CE read-out)."""
    return MLP(input_shape, widths, num_classes, bias=bias, dropout=dropout)


@MODELS.register("sleep_mlp", paper=_SLEEP)
def sleep_mlp(
    input_shape: Sequence[int] = (1, 28, 28),
    num_classes: int = 10,
    widths: Sequence[int] = (1200, 1200),
    dropout: float = 0.2,
    output_activation: str = "relu",
) -> nn.Module:
    """The sleep paper's MLP as coded: no biases, ReLU output, U(-0.01, 0.01) init, non-inverted dropout.

    ``output_activation="none"`` gives the same network with linear outputs (logits), which
    defensive distillation needs for its softmax at temperature T.
    """
    return MLP(
        input_shape,
        widths,
        num_classes,
        bias=False,
        output_activation=output_activation,
        dropout=dropout,
        dropout_style="scale",
        init="uniform-0.01",
    )


@MODELS.register("kubo_mlp", defaults={"n_conv": 0}, paper=_KUBO)
@MODELS.register("kubo_1cnn", defaults={"n_conv": 1}, paper=_KUBO)
@MODELS.register("kubo_2cnn", defaults={"n_conv": 2}, paper=_KUBO)
def kubo(
    input_shape: Sequence[int] = (1, 28, 28),
    num_classes: int = 10,
    n_conv: int = 2,
    hidden: int = 100,
    dropout: float = 0.0,
) -> nn.Module:
    """Kubo's MLP / 1CNN / 2CNN: conv32-5x5-s2, conv64-5x5-s2, dense 100, dense 10."""
    return KuboNet(input_shape, num_classes, n_conv=n_conv, hidden=hidden, dropout=dropout)


@MODELS.register("cnn_mnist", paper="Liu, Li, Chen: cerebellum paper's Baseline CNN (architecture ours, see docs)")
def cnn_mnist(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, dropout: float = 0.25) -> nn.Module:
    """Two-conv MNIST CNN (conv32, conv64, max-pool, dense 128), ~99.2% on MNIST."""
    return MnistCNN(input_shape, num_classes, dropout=dropout)


@MODELS.register("vgg_cifar", paper="Liu, Li, Chen: cerebellum paper's VGG trunk (8 convs, d = 4096)")
def vgg_cifar(
    input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, dropout: float = 0.0, width: float = 1.0
) -> nn.Module:
    """VGG-style 8-conv encoder (64, 64, M, 128, 128, M, 256 x 4, M) and a linear classifier.

    ``width`` scales every conv's channels (0.25: the quarter-width encoder of the 30-minute tier).
    """
    if not 0 < width <= 4:
        from ..errors import InvalidParameterError

        raise InvalidParameterError("width", "vgg_cifar", "a float in (0, 4]", width)
    config = [c if c == "M" else max(1, round(int(c) * width)) for c in CEREBELLUM_TRUNK]
    return VGGNet(input_shape, num_classes, config=config, dropout=dropout)


@MODELS.register("resnet18", paper="He et al. 2016 (ResNet-18 layout; the foveation backbone on caltech10)")
def resnet18(input_shape: Sequence[int] = (3, 128, 128), num_classes: int = 10, width: int = 64) -> nn.Module:
    """ResNet-18-style: ImageNet stem (7x7/2 conv, 3x3/2 max-pool), 4 stages of 2 basic blocks (w, 2w, 4w, 8w)."""
    return ResNet(input_shape, num_classes, blocks=(2, 2, 2, 2), width=width, stem="imagenet")


@MODELS.register("resnet20", paper="He et al. 2016 (CIFAR ResNet-20 layout)")
def resnet20(input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, width: int = 16) -> nn.Module:
    """ResNet-20-style: 3x3 stem, 3 stages of 3 basic blocks (w, 2w, 4w), global pooling."""
    return ResNet(input_shape, num_classes, blocks=(3, 3, 3), width=width, stem="cifar")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; unknown names and parameters raise clear errors."""
    return MODELS.create(name, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
