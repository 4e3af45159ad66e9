"""Shared pieces of the model zoo: input checks, in-model normalisation, init helpers.

Every model maps images in [0, 1] of shape (N, C, H, W) to logits (N, classes); normalisation
lives inside the model so any attack library can attack it unchanged (DESIGN §3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InvalidParameterError

__all__ = ["ImageModel", "Normalize"]


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as buffers (follows ``.to()`` and ``state_dict``)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ImageModel(nn.Module):
    """Base class: remembers the expected input shape and refuses anything else with a clear error.

    Attributes
    ----------
    input_shape : tuple of int
        Expected (C, H, W).
    num_classes : int
        Number of logits.
    is_stochastic : bool
        True when a forward pass in eval mode is random (attacks then use EOT).
    """

    is_stochastic: bool = False

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InvalidParameterError` unless ``x`` is a float (N, *input_shape) batch."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise InvalidParameterError(
                "x", type(self).__name__, f"a float tensor of shape (N, {', '.join(map(str, self.input_shape))})", x
            )
        if not x.is_floating_point():
            raise InvalidParameterError("x", type(self).__name__, "a float tensor with values in [0, 1]", x)
