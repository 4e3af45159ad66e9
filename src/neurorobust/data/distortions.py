"""Input distortions as transforms on image batches in [0, 1] (the sleep paper's noise and blur).

Both return a new tensor clipped to [0, 1]. ``sigma = 0`` returns the input unchanged.

Gaussian noise: :math:`\\tilde x = \\mathrm{clip}(x + \\sigma z, 0, 1)`, :math:`z \\sim N(0, I)`.
The sleep code draws MATLAB ``imnoise`` with a *variance* v; DESIGN §9 puts results on the
sigma axis with ``sigma = sqrt(v)``.

Gaussian blur: separable convolution with a normalised Gaussian of standard deviation
``sigma`` (pixels), kernel size ``2 ceil(2 sigma) + 1`` and replicated borders, as MATLAB's
``imgaussfilt`` (used by the sleep code) does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..registry import Registry
from ..validation import Interval, validate_params

__all__ = ["DISTORTIONS", "gaussian_blur", "gaussian_noise"]

DISTORTIONS = Registry("distortion")


def _check(x: torch.Tensor, sigma: float, caller: str) -> None:
    validate_params(caller, {"sigma": Interval(float, 0, None)}, {"sigma": sigma})
    if x.dim() != 4:
        from ..errors import InvalidParameterError

        raise InvalidParameterError("x", caller, "a tensor of shape (N, C, H, W)", x)


@DISTORTIONS.register("noise", paper="Tadros et al. 2020, ICLR (additive Gaussian noise)")
def gaussian_noise(x: torch.Tensor, sigma: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add Gaussian noise of standard deviation ``sigma`` and clip to [0, 1].

    Parameters
    ----------
    x : torch.Tensor of shape (N, C, H, W)
        Images in [0, 1].
    sigma : float
        Noise standard deviation, >= 0.
    generator : torch.Generator, optional
        Source of randomness (seeded results).
    """
    _check(x, sigma, "gaussian_noise")
    if sigma == 0:
        return x.clone()
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device if generator is None else "cpu")
    return (x + sigma * z.to(x.device)).clamp_(0.0, 1.0)


def gaussian_kernel1d(sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian of size ``2 ceil(2 sigma) + 1``."""
    radius = max(1, math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype)


@DISTORTIONS.register("blur", paper="Tadros et al. 2020, ICLR (Gaussian blur, MATLAB imgaussfilt)")
def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur with a Gaussian of standard deviation ``sigma`` pixels (replicated borders), clip to [0, 1].

    Parameters
    ----------
    x : torch.Tensor of shape (N, C, H, W)
        Images in [0, 1].
    sigma : float
        Blur standard deviation in pixels, >= 0; values below 1e-3 return ``x`` unchanged.
    """
    _check(x, sigma, "gaussian_blur")
    if sigma < 1e-3:
        return x.clone()
    k = gaussian_kernel1d(sigma, x.dtype).to(x.device)
    r = (k.numel() - 1) // 2
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w).clamp_(0.0, 1.0)
