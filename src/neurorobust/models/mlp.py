"""Fully connected ReLU networks, including the sleep paper's bias-free MLP.

Tadros et al. (2020) use a 784-1200-1200-10 network without biases, ReLU on hidden *and*
output units, trained with MSE on one-hot targets, dropout 0.2 on hidden layers in its
non-inverted form (units dropped in training, activations scaled by ``1 - p`` at test), and
weights initialised from U(-0.01, 0.01) (seeds/NOTES.md §1).

References
----------
T. Tadros, G. Krishnan, R. Ramyaa, M. Bazhenov (2020). Biologically inspired sleep algorithm for
increased generalization and adversarial robustness in deep neural networks. ICLR 2020.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from ..validation import Constraint, Interval, Options, validate_params
from ..validation import Sequence as SeqC
from .base import ImageModel

__all__ = ["MLP"]


class _PreOutput(nn.Module):
    """``mlp.pre_output`` as a module: the BPDA surrogate of an MLP with ReLU outputs."""

    def __init__(self, mlp: MLP) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp.pre_output(x)


class MLP(ImageModel):
    """ReLU multilayer perceptron on flattened images.

    Parameters
    ----------
    input_shape : tuple of int, default=(1, 28, 28)
        Input (C, H, W).
    widths : sequence of int, default=(1200, 1200)
        Hidden layer widths.
    num_classes : int, default=10
    bias : bool, default=False
        Whether linear layers have biases (the sleep network has none).
    output_activation : {'none', 'relu'}, default='none'
        ReLU on the output units, as the sleep code has.
    dropout : float, default=0.0
        Dropout probability on hidden activations.
    dropout_style : {'inverted', 'scale'}, default='inverted'
        ``'inverted'`` is PyTorch's (scale by ``1/(1-p)`` in training); ``'scale'`` is the
        MATLAB DeepLearnToolbox form the sleep code uses (no scaling in training, multiply by
        ``1 - p`` at test).
    init : {'default', 'uniform-0.01'}, default='default'
        ``'uniform-0.01'`` draws all weights from U(-0.01, 0.01) as the sleep code does.

    Shapes
    ------
    Input (N, C, H, W) in [0, 1]; output (N, num_classes) logits.

    Examples
    --------
    >>> m = MLP(widths=(32,), num_classes=10)
    >>> m(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "widths": SeqC(Interval(int, 1, None), min_len=0),
        "num_classes": Interval(int, 2, None),
        "dropout": Interval(float, 0, 1, closed="left"),
        "output_activation": Options(["none", "relu"]),
        "dropout_style": Options(["inverted", "scale"]),
        "init": Options(["default", "uniform-0.01"]),
    }

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        widths: Sequence[int] = (1200, 1200),
        num_classes: int = 10,
        *,
        bias: bool = False,
        output_activation: str = "none",
        dropout: float = 0.0,
        dropout_style: str = "inverted",
        init: str = "default",
    ) -> None:
        widths = list(widths)
        validate_params("MLP", self._parameter_constraints, locals())
        super().__init__(input_shape, num_classes)
        dims = [int(torch.tensor(self.input_shape).prod()), *widths, num_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in itertools.pairwise(dims))
        self.output_activation = output_activation
        self.dropout = float(dropout)
        self.dropout_style = dropout_style
        self.init = init
        if init == "uniform-0.01":
            self.reset_weights()

    def reset_weights(self) -> None:
        """Draw fresh weights with this network's init scheme (from the global torch generator)."""
        for layer in self.layers:
            if self.init == "uniform-0.01":
                nn.init.uniform_(layer.weight, -0.01, 0.01)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
            else:
                layer.reset_parameters()

    def _drop(self, h: torch.Tensor) -> torch.Tensor:
        if self.dropout == 0.0:
            return h
        if self.dropout_style == "inverted":
            return nn.functional.dropout(h, self.dropout, self.training)
        if self.training:
            return h * (torch.rand_like(h) >= self.dropout)
        return h * (1.0 - self.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pre_output(x)
        return torch.relu(out) if self.output_activation == "relu" else out

    def pre_output(self, x: torch.Tensor) -> torch.Tensor:
        """The output units' input currents, before the output activation (the logits when it is 'none')."""
        self.check_input(x)
        h = x.flatten(1)
        for layer in self.layers[:-1]:
            h = self._drop(torch.relu(layer(h)))
        return self.layers[-1](h)

    def bpda_surrogate(self) -> nn.Module | None:
        """With ReLU outputs, the same network without the output ReLU (sharing its weights); else ``None``.

        A ReLU on the outputs zeroes the gradient of every class whose output is dead: a gradient attack
        stalls once the true class's output reaches 0, and every output at 0 predicts class 0 by the
        tie rule. On the sleep paper's network the checklist catches it (Square beats PGD on the
        undefended control). Attacks therefore go backward through the pre-ReLU outputs (BPDA with
        the identity for the output ReLU, Athalye et al. 2018); success is judged on the network itself.
        """
        return _PreOutput(self) if self.output_activation == "relu" else None

    def hidden_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Post-ReLU (and post test-time scaling) activations of every layer, output last."""
        self.check_input(x)
        acts, h = [], x.flatten(1)
        for layer in self.layers[:-1]:
            h = self._drop(torch.relu(layer(h)))
            acts.append(h)
        out = self.layers[-1](h)
        acts.append(torch.relu(out) if self.output_activation == "relu" else out)
        return acts
