r"""Sampling geometry of the foveation front-ends: the retinal warp, the cortical scales, the coarse crops.

The fixed, parameter-free part of :mod:`neurorobust.mechanisms.foveation` (whose notes give the
formulas and their sources): the retinal constants recomputed as the authors coded them
(``glimpse.py`` ``delta_lookup``), the source coordinates of every output pixel, discrete and bilinear
sampling, the five test fixations and the coded offsets, and the samplers
(:class:`RetinalSampler`, :class:`CorticalSampler`) that the networks put in front of their backbones.
Every name here is also importable from :mod:`neurorobust.mechanisms.foveation`.

Examples
--------
>>> from neurorobust.mechanisms.retina import RetinalSampler, five_points
>>> RetinalSampler(32, "bilinear")(torch.rand(5, 3, 32, 32), five_points(8)).shape
torch.Size([5, 3, 32, 32])
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidParameterError
from ..validation import Options, validate_params

__all__ = [
    "CorticalSampler",
    "RetinalSampler",
    "bilinear_sample",
    "coarse_crop",
    "coarse_size",
    "cortical_geometry",
    "discrete_sample",
    "five_points",
    "fixation_offset",
    "retinal_constants",
    "retinal_radii",
    "retinal_source",
]

_PAD = 2  # zero padding of the retinal sampler, as coded


def _check_size(n: Any, caller: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 8:
        raise InvalidParameterError("size", caller, "an int >= 8 (the image side in pixels)", n)
    return int(n)


def _sampling_mismatch(rf: float, n: int, max_ratio: float = 10.0) -> float:
    a = math.log(max_ratio) / (n // 2)
    r = 0.0
    for _ in range(1, n // 2):
        r += math.exp(a * r / 2.0) / math.sqrt(math.pi * rf)
        if r > 100.0 * n:  # diverged (rf far too small): the sign is all Brent's method needs
            break
    return n / 2 - r


@functools.lru_cache(maxsize=16)
def _radii_cached(n: int) -> tuple[float, ...]:
    from scipy.optimize import brenth

    rf = brenth(_sampling_mismatch, 0.01, 5.0, args=(n,))
    a = math.log(10.0) / (n // 2)
    r = [0.0]
    for _ in range(n // 2):
        r.append(r[-1] + math.exp(a * r[-1] / 2.0) / math.sqrt(math.pi * rf))
    return tuple(r[:-1])


def retinal_radii(size: int) -> np.ndarray:
    """Source radii :math:`r_i`, :math:`i = 0..N/2-1`, of the authors' ``delta_lookup`` for side ``size``."""
    return np.asarray(_radii_cached(_check_size(size, "retinal_radii")))


@functools.lru_cache(maxsize=16)
def _constants_cached(n: int) -> tuple[float, float]:
    from scipy.optimize import curve_fit

    r = np.asarray(_radii_cached(n))
    rp = np.arange(n // 2, dtype=float)
    popt, _ = curve_fit(lambda x, a, b: a * x**2 + b * x, rp, r, p0=[0.0, 0.4], bounds=(0, np.inf))
    return float(popt[0]), float(popt[1])


def retinal_constants(size: int) -> tuple[float, float]:
    """The fitted :math:`(A, B)` of :math:`g(r') = A r'^2 + B r'` for images of side ``size``.

    Recomputed by the authors' procedure (Brent's method for ``rf``, then ``curve_fit`` with
    ``p0 = [0, 0.4]`` and bounds :math:`\\ge 0`); 320 px gives about (0.003040, 0.4924), 32 px
    about (0.03449, 0.5264).

    Examples
    --------
    >>> a, b = retinal_constants(320)
    >>> round(a, 5), round(b, 4)
    (0.00304, 0.4924)
    """
    return _constants_cached(_check_size(size, "retinal_constants"))


def five_points(g: float) -> torch.Tensor:
    """The five test fixations as (row, col) offsets from the centre: (0, 0), (-g, g), (g, -g), (-g, -g), (g, g).

    The centre first, then the four corners of the central box of half-side ``g``, in the order of
    the authors' ``attack_backbone.py``.
    """
    if isinstance(g, bool) or not isinstance(g, int | float) or not math.isfinite(g) or g < 0:
        raise InvalidParameterError("g", "five_points", "a finite number >= 0 (pixels)", g)
    return torch.tensor([[0.0, 0.0], [-g, g], [g, -g], [-g, -g], [g, g]])


def fixation_offset(frontend: str, size: int) -> int:
    """The coded fixation offset ``g`` for a front-end at image side ``size``.

    Coarse 48, retinal 80, cortical 40 of 320 px, scaled to ``size`` (rounded); at 32 px the CIFAR
    values as coded: 4, 8, 1. Spatial transformers and multi-gaze start at the retinal points.
    """
    size = _check_size(size, "fixation_offset")
    coded = {"coarse": (48, 4), "retinal": (80, 8), "cortical": (40, 1), "stn": (80, 8), "multigaze": (80, 8)}
    if frontend not in coded:
        raise InvalidParameterError("frontend", "fixation_offset", _options(coded), frontend)
    big, cifar = coded[frontend]
    return cifar if size == 32 else round(big * size / 320)


def coarse_size(size: int) -> int:
    """Side of the coarse crop: 224 of 320 (24 of 32 for CIFAR, as coded), scaled and rounded."""
    size = _check_size(size, "coarse_size")
    return 24 if size == 32 else round(224 * size / 320)


def cortical_geometry(size: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(crop sides, radii)`` of the cortical scales for image side ``size``.

    320 px as coded: sides 40, 80, 160, 240 with radii 1, 2, 4, 6 (each scale 40 x 40); other sides
    scale the 40-pixel output (128 px: 16, 32, 64, 96); 32 px: the CIFAR sides 15, 30 with radii 1, 2.
    """
    size = _check_size(size, "cortical_geometry")
    if size == 32:
        return (15, 30), (1, 2)
    k = max(1, round(40 * size / 320))
    radii = (1, 2, 4, 6)
    return tuple(k * r for r in radii), radii


def retinal_source(size: int, gaze: torch.Tensor, constants: tuple[float, float] | None = None) -> torch.Tensor:
    """Source coordinates (row, col), in the 2-pixel zero-padded image, of every output pixel.

    Parameters
    ----------
    size : int
        Image side :math:`N` (output side = input side, as coded).
    gaze : torch.Tensor of shape (B, 2)
        Fixation offsets (row, col) from the centre, in pixels.
    constants : (A, B), optional
        Default: :func:`retinal_constants` of ``size``.

    Returns
    -------
    torch.Tensor of shape (B, N, N, 2)
        :math:`\\operatorname{clip}(N/2 + \\gamma + g(r)\\, d / r, 0, N + 2)`; continuous (not rounded).
    """
    size = _check_size(size, "retinal_source")
    a, b = constants if constants is not None else retinal_constants(size)
    idx = torch.arange(size, dtype=gaze.dtype, device=gaze.device)
    grid = torch.stack(torch.meshgrid(idx, idx, indexing="ij"), dim=-1)  # (N, N, 2): (row, col)
    d = grid[None] - (size - 1) / 2 - gaze[:, None, None, :]
    r = d.norm(dim=-1, keepdim=True)
    # the coded g(r) (cos theta, sin theta) with theta = atan2(d) is g(r) d / r = (A r + B) d: the same
    # numbers (r = 0 maps to the source centre either way) without atan2, cos and sin, whose forward and
    # backward passes were most of a multi-gaze training step (gazes change per image, so no table)
    src = (a * r + b) * d + (gaze[:, None, None, :] + size / 2)
    return src.clamp(0.0, size + float(_PAD))


def discrete_sample(img: torch.Tensor, coords: torch.Tensor, rounding: str = "round") -> torch.Tensor:
    """Gather the pixels at rounded ``coords`` (B, H', W', 2) of ``img`` (B, C, H, W); outside reads 0.

    ``rounding="round"`` rounds half to even (``tf.round``, as coded); ``"floor"`` truncates
    (the thesis' text). Differentiable in ``img`` (a selection), not in ``coords``.
    """
    if rounding == "round":
        ij = torch.round(coords)
    elif rounding == "floor":
        ij = torch.floor(coords)
    else:
        raise InvalidParameterError("rounding", "discrete_sample", "'round' or 'floor'", rounding)
    bsz, c, h, w = img.shape
    ij = ij.long()
    inside = (ij[..., 0] >= 0) & (ij[..., 0] < h) & (ij[..., 1] >= 0) & (ij[..., 1] < w)
    flat = (ij[..., 0].clamp(0, h - 1) * w + ij[..., 1].clamp(0, w - 1)).reshape(bsz, 1, -1)
    out = img.reshape(bsz, c, h * w).gather(2, flat.expand(bsz, c, flat.shape[-1]))
    out = out.reshape(bsz, c, *coords.shape[1:3])
    return out * inside[:, None].to(out.dtype)


def bilinear_sample(img: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear interpolation of ``img`` (B, C, H, W) at ``coords`` (B, H', W', 2) (row, col); zeros outside.

    ``grid_sample`` with ``align_corners=True`` (pixel ``i`` at normalised ``2 i / (W - 1) - 1``):
    :math:`V = \\sum_{ij} P_{ij} \\max(0, 1 - |x - j|) \\max(0, 1 - |y - i|)`. Differentiable in both.
    """
    _, _, h, w = img.shape
    gx = 2 * coords[..., 1] / max(w - 1, 1) - 1
    gy = 2 * coords[..., 0] / max(h - 1, 1) - 1
    return F.grid_sample(img, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="zeros", align_corners=True)


class _StraightThrough(torch.autograd.Function):
    """Forward: the discrete sample; backward: the bilinear sample's gradient (BPDA)."""

    @staticmethod
    def forward(ctx: Any, discrete: torch.Tensor, bilinear: torch.Tensor) -> torch.Tensor:
        return discrete.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, grad


def _options(values: Any) -> str:
    items = [repr(v) for v in values]
    return ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else items[0]


class RetinalSampler(nn.Module):
    """The retinal warp of an (N, C, S, S) batch around one gaze per image (output side = S).

    Parameters
    ----------
    size : int
        Image side S.
    sampling : {'discrete', 'bilinear'}, default='bilinear'
    rounding : {'round', 'floor'}, default='round'
        Discrete sampling: round half to even (as coded) or truncate (the thesis' text).
    """

    def __init__(self, size: int, sampling: str = "bilinear", rounding: str = "round") -> None:
        validate_params(
            "RetinalSampler",
            {"sampling": Options(["discrete", "bilinear"]), "rounding": Options(["round", "floor"])},
            locals(),
        )
        super().__init__()
        self.size = _check_size(size, "RetinalSampler")
        self.sampling, self.rounding = sampling, rounding
        self.constants = retinal_constants(self.size)
        self.straight_through = False  # set by the BPDA surrogate
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _table(self, gaze: tuple[float, float], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat source indices (4, S*S) and bilinear weights (4, S*S) into the padded image for one gaze
        (discrete: one index, weight 1), cached: the fixed test points reuse them."""
        key = (gaze, str(device), self.sampling, self.rounding, self.straight_through)
        if key not in self._cache:
            src = retinal_source(self.size, torch.tensor([gaze], dtype=torch.float64), self.constants)[0].view(-1, 2)
            wp = self.size + 2 * _PAD
            if self.sampling == "discrete" and not self.straight_through:
                ij = torch.round(src) if self.rounding == "round" else torch.floor(src)
                idx, w = (ij[:, 0] * wp + ij[:, 1]).long()[None], torch.ones(1, len(src), dtype=torch.float64)
            else:
                y0, x0 = src[:, 0].floor(), src[:, 1].floor()
                fy, fx = src[:, 0] - y0, src[:, 1] - x0
                y1, x1 = (y0 + 1).clamp(max=wp - 1), (x0 + 1).clamp(max=wp - 1)
                idx = torch.stack([y0 * wp + x0, y0 * wp + x1, y1 * wp + x0, y1 * wp + x1]).long()
                w = torch.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx])
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = (idx.to(device), w.to(device))
        return self._cache[key]

    def _fixed_discrete(self, padded: torch.Tensor, gaze: Sequence[float]) -> torch.Tensor:
        flag, self.straight_through = self.straight_through, False
        try:
            return self._fixed(padded, (gaze[0], gaze[1]))
        finally:
            self.straight_through = flag

    def _fixed(self, padded: torch.Tensor, gaze: tuple[float, float]) -> torch.Tensor:
        idx, w = self._table(gaze, padded.device)
        b, c = padded.shape[:2]
        flat = padded.flatten(2).permute(2, 0, 1).reshape(-1, b * c)  # (pixels, images x channels): row gathers
        out = flat.index_select(0, idx[0])
        if len(idx) > 1:
            out = out * w[0, :, None].to(flat.dtype)
            for k in range(1, len(idx)):
                out = out + flat.index_select(0, idx[k]) * w[k, :, None].to(flat.dtype)
        return out.view(self.size, self.size, b, c).permute(2, 3, 0, 1)

    def forward(self, x: torch.Tensor, gaze: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (_PAD, _PAD, _PAD, _PAD))
        if not gaze.requires_grad:
            uniq, inv = torch.unique(gaze.detach().double().cpu(), dim=0, return_inverse=True)
            if len(uniq) <= 8 and self.sampling == "bilinear":  # a few fixed gazes: the geometry once per gaze
                src = retinal_source(self.size, uniq.to(x.dtype), self.constants)[inv.to(x.device)]
                return bilinear_sample(padded, src)
            if len(uniq) <= 8:  # discrete at a few fixed gazes (the test points): cached row gathers
                pieces, order = [], []
                for k, u in enumerate(uniq.tolist()):
                    rows = (inv == k).nonzero().squeeze(1).to(x.device)
                    order.append(rows)
                    if self.sampling == "discrete" and self.straight_through:
                        sub = padded[rows]
                        src = retinal_source(self.size, torch.tensor([u], dtype=x.dtype), self.constants)
                        bil = bilinear_sample(sub, src.to(x.device).expand(len(rows), -1, -1, -1))
                        piece = _StraightThrough.apply(self._fixed_discrete(sub, u), bil)
                    else:
                        piece = self._fixed(padded[rows], (u[0], u[1]))
                    pieces.append(piece)
                out = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
                return out[torch.argsort(torch.cat(order))] if len(pieces) > 1 else out
        src = retinal_source(self.size, gaze.to(x.dtype), self.constants)
        if self.sampling == "bilinear":
            return bilinear_sample(padded, src)
        out = discrete_sample(padded, src, self.rounding)
        if self.straight_through:
            return _StraightThrough.apply(out, bilinear_sample(padded, src))
        return out


def coarse_crop(x: torch.Tensor, offset: Sequence[int], crop: int) -> torch.Tensor:
    """Square crop of side ``crop`` centred ``offset`` (row, col) pixels from the image centre."""
    h, w = x.shape[-2:]
    top, left = (h - crop) // 2 + int(offset[0]), (w - crop) // 2 + int(offset[1])
    if top < 0 or left < 0 or top + crop > h or left + crop > w:
        raise InvalidParameterError(
            "offset", "coarse_crop", f"a fixation keeping the {crop}-px crop inside the {h}x{w} image", tuple(offset)
        )
    return x[..., top : top + crop, left : left + crop]


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = sigma * 4.0
    t = torch.arange(-radius, radius + 1)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


class CorticalSampler(nn.Module):
    """Crops of several sides at one fixation, each blurred (sigma = radius / 2) and subsampled (stride = radius).

    Parameters
    ----------
    size : int
        Image side.
    sides, radii : sequence of int, optional
        Crop sides and radii (default :func:`cortical_geometry`); ``side / radius`` must be the same
        for every scale (the output side).
    """

    def __init__(self, size: int, sides: Sequence[int] | None = None, radii: Sequence[int] | None = None) -> None:
        super().__init__()
        self.size = _check_size(size, "CorticalSampler")
        d_sides, d_radii = cortical_geometry(self.size)
        sides = tuple(sides) if sides is not None else d_sides
        radii = tuple(radii) if radii is not None else d_radii
        if not radii or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in radii):
            raise InvalidParameterError("radii", "CorticalSampler", "a list of ints >= 1 (no zero scales)", radii)
        if len(sides) != len(radii) or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sides):
            raise InvalidParameterError("sides", "CorticalSampler", f"{len(radii)} ints >= 1, one per radius", sides)
        if any(s > self.size for s in sides):
            raise InvalidParameterError("sides", "CorticalSampler", f"crop sides <= the image side {self.size}", sides)
        self.sides, self.radii = sides, radii
        self.out_sides = tuple(len(range(r // 2, s, r)) for s, r in zip(sides, radii, strict=True))
        for i, r in enumerate(radii):
            self.register_buffer(f"kernel{i}", _gaussian_kernel(r / 2.0), persistent=False)

    def forward(self, x: torch.Tensor, offset: Sequence[int]) -> list[torch.Tensor]:
        c = x.shape[1]
        out = []
        for i, (side, r) in enumerate(zip(self.sides, self.radii, strict=True)):
            patch = coarse_crop(x, offset, side) if side % 2 == 0 else _crop_odd(x, offset, side)
            k = getattr(self, f"kernel{i}")
            pad = (len(k) - 1) // 2
            kh = k.view(1, 1, 1, -1).expand(c, 1, 1, -1)
            kv = k.view(1, 1, -1, 1).expand(c, 1, -1, 1)
            patch = F.conv2d(F.conv2d(patch, kh, padding=(0, pad), groups=c), kv, padding=(pad, 0), groups=c)
            out.append(patch[..., r // 2 :: r, r // 2 :: r])
        return out


def _crop_odd(x: torch.Tensor, offset: Sequence[int], side: int) -> torch.Tensor:
    """Crop as coded for odd sides: top-left at centre - side // 2 (``crop_square_patch``)."""
    h, w = x.shape[-2:]
    top, left = h // 2 + int(offset[0]) - side // 2, w // 2 + int(offset[1]) - side // 2
    if top < 0 or left < 0 or top + side > h or left + side > w:
        raise InvalidParameterError(
            "offset", "CorticalSampler", f"a fixation keeping the {side}-px crop inside the image", tuple(offset)
        )
    return x[..., top : top + side, left : left + side]
