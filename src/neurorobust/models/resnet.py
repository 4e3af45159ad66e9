"""Residual networks without torchvision: a ResNet-18-style and a ResNet-20-style layout.

He, Zhang, Ren, Sun (2016), *Deep residual learning for image recognition*, CVPR. Basic blocks
(two 3x3 convs with batch norm, identity or 1x1-conv shortcut). The foveation issue's backbones:
ResNet-18-style on caltech10 (128 px, ImageNet stem), ResNet-20-style on CIFAR-10; ``width`` sets
the first stage's channels (the 30-minute tier uses narrow ones). Normalisation by the image
statistics of ImageNet (3 channels) lives inside the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..validation import Interval, Options, validate_params
from ..validation import Sequence as SeqC
from .base import ImageModel, Normalize

__all__ = ["BasicBlock", "ResNet"]

_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(ImageModel):
    """A residual network on images in [0, 1].

    Parameters
    ----------
    input_shape : tuple of int
        (C, H, W).
    num_classes : int
    blocks : sequence of int
        Basic blocks per stage; stage ``i`` has ``width * 2**i`` channels and stride 2 from the second on.
    width : int
        Channels of the first stage.
    stem : {'imagenet', 'cifar'}
        7x7/2 conv + 3x3/2 max-pool (large images) or one 3x3 conv (32 px images).

    Examples
    --------
    >>> ResNet((3, 32, 32), 10, blocks=(1, 1), width=8, stem="cifar")(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        blocks: Sequence[int] = (2, 2, 2, 2),
        width: int = 64,
        stem: str = "imagenet",
    ) -> None:
        validate_params(
            "ResNet",
            {
                "num_classes": Interval(int, 2, None),
                "blocks": SeqC(Interval(int, 1, None), min_len=1),
                "width": Interval(int, 1, None),
                "stem": Options(["imagenet", "cifar"]),
            },
            locals(),
        )
        super().__init__(input_shape, num_classes)
        c = self.input_shape[0]
        layers: list[nn.Module] = [Normalize(_MEAN, _STD)] if c == 3 else []
        if stem == "imagenet":
            layers += [
                nn.Conv2d(c, width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            ]
        else:
            layers += [nn.Conv2d(c, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        c_in = width
        for stage, n in enumerate(blocks):
            c_out = width * 2**stage
            for i in range(n):
                layers.append(BasicBlock(c_in, c_out, 2 if (i == 0 and stage > 0) else 1))
                c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.head(self.features(x).mean(dim=(2, 3)))
