"""VGG-style convolutional encoder, usable frozen as a feature extractor for CIFAR-10.

The cerebellum paper puts its granule layer on the features of a frozen VGG trunk; the
authors' trunk (DESIGN §9) is 8 convs ``64, 64, M, 128, 128, M, 256 x 4, M`` with batch norm and
ReLU, giving 256 x 4 x 4 = 4096 features on 32x32 inputs.

References
----------
K. Simonyan, A. Zisserman (2015). Very deep convolutional networks for large-scale image
recognition. ICLR 2015. arXiv:1409.1556.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..validation import Interval, Type, validate_params
from .base import ImageModel, Normalize

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "VGGEncoder", "VGGNet"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CEREBELLUM_TRUNK: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M")


class VGGEncoder(ImageModel):
    """Conv trunk mapping (N, C, H, W) images in [0, 1] to flattened features (N, d).

    Parameters
    ----------
    input_shape : tuple of int, default=(3, 32, 32)
    config : sequence of int or 'M', default=(64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M')
        Conv widths (3x3, padding 1, batch norm, ReLU) and 'M' for 2x2 max-pooling.
    normalize : bool, default=True
        Subtract the CIFAR-10 channel means and divide by the stds inside the model.

    Attributes
    ----------
    out_features : int
        d, the length of the feature vector (4096 for the default on 32x32).
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        config: Sequence[int | str] = CEREBELLUM_TRUNK,
        *,
        normalize: bool = True,
    ) -> None:
        validate_params("VGGEncoder", {"normalize": Type(bool)}, locals())
        super().__init__(input_shape, num_classes=2)
        c, h, w = self.input_shape
        layers: list[nn.Module] = [Normalize(CIFAR10_MEAN, CIFAR10_STD)] if normalize and c == 3 else []
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            else:
                layers += [nn.Conv2d(c, int(item), 3, padding=1, bias=False), nn.BatchNorm2d(int(item)), nn.ReLU()]
                c = int(item)
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.out_features = c * h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.body(x)


class VGGNet(ImageModel):
    """:class:`VGGEncoder` followed by a linear classifier (trained end to end, then frozen for heads).

    Parameters
    ----------
    input_shape : tuple of int, default=(3, 32, 32)
    num_classes : int, default=10
    config : sequence, default=the cerebellum trunk
    dropout : float, default=0.0
        Dropout before the classifier.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        *,
        config: Sequence[int | str] = CEREBELLUM_TRUNK,
        dropout: float = 0.0,
    ) -> None:
        validate_params(
            "VGGNet", {"num_classes": Interval(int, 2, None), "dropout": Interval(float, 0, 1, closed="left")}, locals()
        )
        super().__init__(input_shape, num_classes)
        self.encoder = VGGEncoder(input_shape, config)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.encoder.out_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.encoder(x)))
