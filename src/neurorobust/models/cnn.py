"""Small convolutional networks of the seed papers.

* ``kubo_mlp`` / ``kubo_1cnn`` / ``kubo_2cnn``: Kubo (2019), thesis Tables 3.1-3.3: optional
  conv 32x5x5 stride 2 (ReLU), conv 64x5x5 stride 2 (ReLU), dense 100, dense 10. The hidden
  dense activation is ReLU here; the stochastic binary version is a mechanism.
* ``cnn_mnist``: the MNIST "Baseline CNN" of Liu, Li & Chen (cerebellum paper, Table 2). Its
  architecture is not given in the paper or the code (seeds/NOTES.md §3), so we use the common
  two-conv MNIST CNN (conv 32x3x3, conv 64x3x3, max-pool 2, dense 128, dense 10), which reaches
  the paper's 99.2% clean accuracy.

References
----------
T. Kubo (2019). Learning stochastic weight masking to resist adversarial attacks. PhD thesis,
Dalhousie University.
Y. Liu, X. Li, Y. Chen. Evaluating adversarial robustness in simulated cerebellum.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from ..validation import Constraint, Interval, Options, validate_params
from .base import ImageModel

__all__ = ["KuboNet", "MnistCNN"]


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class KuboNet(ImageModel):
    """Kubo's MLP / 1CNN / 2CNN family: ``n_conv`` strided 5x5 convs, dense ``hidden``, dense classes.

    Parameters
    ----------
    input_shape : tuple of int, default=(1, 28, 28)
    num_classes : int, default=10
    n_conv : {0, 1, 2}, default=2
        Number of conv layers (32 then 64 filters, 5x5, stride 2, 'same'-style padding 2).
    hidden : int, default=100
        Width of the dense hidden layer.
    dropout : float, default=0.0
        Dropout after the dense hidden layer (thesis §3.2.1).

    Examples
    --------
    >>> KuboNet(n_conv=2)(torch.zeros(3, 1, 28, 28)).shape
    torch.Size([3, 10])
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "num_classes": Interval(int, 2, None),
        "n_conv": Options([0, 1, 2]),
        "hidden": Interval(int, 1, None),
        "dropout": Interval(float, 0, 1, closed="left"),
    }

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        *,
        n_conv: int = 2,
        hidden: int = 100,
        dropout: float = 0.0,
    ) -> None:
        validate_params("KuboNet", self._parameter_constraints, locals())
        super().__init__(input_shape, num_classes)
        c, h, w = self.input_shape
        convs: list[nn.Module] = []
        for out_ch in (32, 64)[:n_conv]:
            convs += [nn.Conv2d(c, out_ch, 5, stride=2, padding=2), nn.ReLU()]
            c, h, w = out_ch, _conv_out(h, 5, 2, 2), _conv_out(w, 5, 2, 2)
        self.features = nn.Sequential(*convs, nn.Flatten())
        self.hidden = nn.Linear(c * h * w, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(m.weight)  # thesis: Xavier initialisation
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.out(self.dropout(torch.relu(self.hidden(self.features(x)))))


class MnistCNN(ImageModel):
    """Two-conv CNN (conv32-3x3, conv64-3x3, max-pool 2, dense 128, dense classes) with dropout.

    Parameters
    ----------
    input_shape : tuple of int, default=(1, 28, 28)
    num_classes : int, default=10
    dropout : float, default=0.25
        Dropout after pooling and after the dense layer (inverted, off in eval).

    Examples
    --------
    >>> MnistCNN()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "num_classes": Interval(int, 2, None),
        "dropout": Interval(float, 0, 1, closed="left"),
    }

    def __init__(
        self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, *, dropout: float = 0.25
    ) -> None:
        validate_params("MnistCNN", self._parameter_constraints, locals())
        super().__init__(input_shape, num_classes)
        c, h, w = self.input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(dropout),
            nn.Flatten(),
        )
        flat = 64 * ((h - 4) // 2) * ((w - 4) // 2)
        self.classifier = nn.Sequential(
            nn.Linear(flat, 128), nn.ReLU(), nn.Dropout(dropout), nn.Linear(128, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.classifier(self.features(x))
