r"""Foveation front-ends: coarse, retinal and cortical fixations, parallel spatial transformers, multi-gaze.

Vuyyuru, Banburski, Pant, Poggio (2020), *Biologically inspired mechanisms for adversarial robustness*,
NeurIPS 33, 2135-2146; Burhanpurkar (2021), *Adversarial robustness via biologically inspired
mechanisms*, CS 91R thesis, Harvard (bilinear retinal sampling, parallel spatial transformers,
multi-gaze). Sampling details as the authors coded them (``mvuyyuru/adversary: glimpse.py``,
``seeds/NOTES.md`` §2, DESIGN §9).

Every front-end is a differentiable :class:`torch.nn.Module` put in front of any registered
backbone (``resnet18`` on caltech10, ``resnet20`` on CIFAR-10); the whole network maps images in
[0, 1] of shape (N, C, H, W) to logits, so the one training loop and every attack apply unchanged.

**Retinal sampling** (``glimpse.py`` ``delta_lookup``, ``warp_image``). For an image of side
:math:`N`, radii :math:`r_0 = 0`, :math:`r_{i+1} = r_i + e^{a r_i / 2} / \sqrt{\pi\, rf}` with
:math:`a = \ln 10 / \lfloor N/2 \rfloor`, and :math:`rf \in [0.01, 5]` found by Brent's method so
that :math:`r_{N/2-1} = N/2`. A quadratic is fitted (least squares, :math:`A, B \ge 0`) to the
pairs :math:`(i, r_i)`, :math:`i = 0..N/2-1`:

.. math::

    g(r') = A\, r'^2 + B\, r'

(:math:`N = 320`: :math:`A \approx 0.003040, B \approx 0.4924`; :math:`1/B \approx 2`: the fovea is
magnified about twice). For output pixel :math:`u = (\text{row}, \text{col})` and gaze :math:`\gamma`,

.. math::

    d = u - \tfrac{N-1}{2}(1, 1) - \gamma, \qquad
    s = \operatorname{clip}\Big(\tfrac{N}{2} + \gamma + g(\lVert d \rVert)\, \tfrac{d}{\lVert d \rVert},\ 0,\ N + 2\Big)

in the coordinates of the image zero-padded by 2 pixels (as coded, so the fovea's source sits
1.5 px up-left of the output centre). **Discrete** sampling reads the pixel at
:math:`\operatorname{round}(s)` (round half to even, ``tf.round`` as coded; ``rounding="floor"`` is
the thesis' truncation); **bilinear** sampling interpolates the four neighbours (thesis §3.2)

.. math::

    V = \sum_{i,j} P_{ij}\, \max(0, 1 - |s_x - j|)\, \max(0, 1 - |s_y - i|)

Discrete sampling is a fixed selection of pixels (the rounding acts on coordinates that do not
depend on the image), so its input gradient exists, exact but sparse, and attacks use it. With
``bpda=True`` it declares a BPDA surrogate (``bpda_surrogate()``): the same network with a
straight-through sampler whose forward value is the discrete one and whose backward pass is
bilinear. Measured on caltech10 (docs/foveation.md), PGD-20 with the exact gradient is the stronger
attack (58% vs 64% left at eps 0.01), so the default declares none.

**Cortical sampling** (``image_scales``): at each fixation, square crops of sides
:math:`k\,r_j` (:math:`r_j` = 1, 2, 4, 6 and :math:`k = 40` at 320 px, i.e. 16 at 128 px; CIFAR:
15 and 30 with radii 1, 2), each blurred by a normalised Gaussian of :math:`\sigma = r_j / 2`
(support :math:`\pm 4\sigma`, zero padding) and subsampled with stride :math:`r_j` from offset
:math:`\lfloor r_j/2 \rfloor`, so every scale is :math:`k \times k`; one backbone per scale,
their pooled features concatenated into one dense layer.

**Coarse fixations**: a crop of 224/320 of the side (CIFAR 24 of 32) centred at the fixation.

**Fixations** (``attack_backbone.py``, ``adversary.py``): training on random fixations (coarse and
cortical: one per batch; retinal: one per image, :math:`\gamma \sim U\{-g..g-1\}^2`), testing at
the five points :math:`(0,0), (-g,g), (g,-g), (-g,-g), (g,g)` with their logits **averaged**
(``combine="average"``, as coded), or concatenated into one dense layer (``combine="concat"``,
the thesis' description; then training uses the five points too). Offsets :math:`g` as coded:
coarse 48, retinal 80, cortical 40 of 320 px, scaled to the image side (CIFAR: 4, 8, 1 as coded).

**Parallel spatial transformers** (thesis §3.3.1, Jaderberg et al. 2015): a localisation network
emits 5 transforms, affine (6 parameters) or attention (4: :math:`s_x, s_y, t_x, t_y`,
:math:`\theta = [[s_x, 0, t_x], [0, s_y, t_y]]`); each samples a glimpse bilinearly,

.. math::

    \begin{pmatrix} x^s \\ y^s \end{pmatrix} = \theta \begin{pmatrix} x^t \\ y^t \\ 1 \end{pmatrix}

in normalised coordinates; branch logits are concatenated into a dense layer. **Multi-gaze**
(thesis §3.3.2): a network predicts 5 gaze points :math:`\gamma_k = \tfrac{N}{2}\tanh(z_k)`,
retinal (bilinear) sampling at each, logits concatenated into a dense layer; ``gaze_l2`` adds the
thesis' L2 penalty on the gazes (0.01 in its regularised model).

Shapes
------
Input (N, C, H, W) in [0, 1]; output (N, num_classes) logits.

Examples
--------
>>> from neurorobust.models import create_model
>>> net = create_model("foveated", input_shape=(3, 32, 32), frontend="retinal", backbone="resnet20", width=4)
>>> net.eval()(torch.rand(2, 3, 32, 32)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidParameterError
from ..models import MODELS, ImageModel, create_model
from ..models.resnet import ResNet
from ..validation import Interval, Options, Type, validate_params

__all__ = [
    "CorticalSampler",
    "FixationNet",
    "MultiGazeNet",
    "ParallelSTN",
    "RetinalSampler",
    "bilinear_sample",
    "coarse_crop",
    "coarse_size",
    "cortical_geometry",
    "crop_theta",
    "discrete_sample",
    "five_points",
    "fixation_offset",
    "paper_tables",
    "report_items",
    "retinal_constants",
    "retinal_radii",
    "retinal_source",
    "save_figures",
    "stn_theta",
    "tables_markdown",
]

_VUYYURU = "Vuyyuru, Banburski, Pant, Poggio 2020, NeurIPS 33 (as coded: mvuyyuru/adversary)"
_THESIS = "Burhanpurkar 2021, CS 91R thesis, Harvard, Sec. 3.3 (parallel STN, multi-gaze)"
_PAD = 2  # zero padding of the retinal sampler, as coded


# --------------------------------------------------------------------------------------------- geometry


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


# --------------------------------------------------------------------------------------------- backbones


def _backbone(name: str, shape: tuple[int, int, int], num_classes: int, params: dict[str, Any]) -> nn.Module:
    return create_model(name, input_shape=shape, num_classes=num_classes, **params)


def _strip_head(model: nn.Module, num_classes: int) -> tuple[nn.Module, int]:
    """A ResNet without its linear head (pooled features, as the cortical branches are coded), else as is."""
    head = getattr(model, "head", None)
    if isinstance(model, ResNet) and isinstance(head, nn.Linear):
        model.head = nn.Identity()  # type: ignore[assignment]
        return model, head.in_features
    return model, num_classes


@MODELS.register(
    "resnet18_s1", paper="He et al. 2016; stride-1 stem for the cortical scales (Vuyyuru et al., as coded)"
)
def resnet18_s1(input_shape: Sequence[int] = (3, 16, 16), num_classes: int = 10, width: int = 45) -> nn.Module:
    """ResNet-18-style with a stride-1 3x3 stem and no max-pool, for small (16-40 px) cortical scales."""
    return ResNet(input_shape, num_classes, blocks=(2, 2, 2, 2), width=width, stem="cifar")


# --------------------------------------------------------------------------------------------- models

#: cortical branch width as coded, relative to the backbone's: ResNet-18 45 of 64, ResNet-20 22 of 16
_CORTICAL_WIDTH = {"resnet18": (45, 64), "resnet20": (22, 16)}


class FixationNet(ImageModel):
    """Coarse, retinal or cortical fixations in front of a backbone (Vuyyuru et al. 2020).

    Parameters
    ----------
    input_shape : tuple of int
        (C, S, S); square images.
    num_classes : int
    frontend : {'coarse', 'retinal', 'cortical'}
    backbone : str, default='resnet18'
        A registered model name; built for the front-end's output shape.
    backbone_params : dict, optional
        Its constructor overrides (e.g. ``{"width": 16}``).
    sampling : {'discrete', 'bilinear'}, default='discrete'
        Retinal sampling (discrete is the authors' code).
    rounding : {'round', 'floor'}, default='round'
    offset : int, optional
        Fixation offset ``g`` in pixels (default :func:`fixation_offset`).
    combine : {'average', 'concat'}, default='average'
        Test logits averaged over the five fixations (as coded; training on random fixations), or
        concatenated into a dense layer (training on the five points).
    cortical_backbone : str, optional
        Backbone of the cortical scales (default ``resnet18_s1`` when ``backbone='resnet18'``,
        else ``backbone``); ``cortical_width`` its width (default as coded relative to the backbone's:
        45/64 of it for ResNet-18, 22/16 for ResNet-20; else the backbone's own).
    bpda : bool, default=False
        Discrete sampling declares its straight-through bilinear surrogate for BPDA (off by default:
        the exact, sparse gradient of the discrete selection gave the stronger attack, see the module notes).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        frontend: str = "retinal",
        backbone: str = "resnet18",
        backbone_params: dict[str, Any] | None = None,
        sampling: str = "discrete",
        rounding: str = "round",
        offset: int | None = None,
        combine: str = "average",
        cortical_backbone: str | None = None,
        cortical_width: int | None = None,
        bpda: bool = False,
    ) -> None:
        validate_params(
            "FixationNet",
            {
                "num_classes": Interval(int, 2, None),
                "frontend": Options(["coarse", "retinal", "cortical"]),
                "backbone": Type(str),
                "backbone_params": Type(dict, optional=True),
                "sampling": Options(["discrete", "bilinear"]),
                "rounding": Options(["round", "floor"]),
                "offset": Type(int, optional=True),
                "combine": Options(["average", "concat"]),
                "cortical_backbone": Type(str, optional=True),
                "cortical_width": Type(int, optional=True),
                "bpda": Type(bool),
            },
            locals(),
        )
        super().__init__(input_shape, num_classes)
        c, h, w = self.input_shape
        if h != w:
            raise InvalidParameterError("input_shape", "FixationNet", "square images (C, S, S)", tuple(input_shape))
        self.size, self.frontend, self.combine = h, frontend, combine
        params = dict(backbone_params or {})
        self.g = fixation_offset(frontend, h) if offset is None else offset
        if self.g < 0:
            raise InvalidParameterError("offset", "FixationNet", "an int >= 0 (pixels)", offset)
        self.sampler: nn.Module | None = None
        if frontend == "coarse":
            self.crop = coarse_size(h)
            if (h - self.crop) // 2 < self.g:
                raise InvalidParameterError(
                    "offset",
                    "FixationNet",
                    f"at most {(h - self.crop) // 2} px so the {self.crop}-px crops fit",
                    offset,
                )
            self.backbone = _backbone(backbone, (c, self.crop, self.crop), num_classes, params)
            feat = num_classes
        elif frontend == "retinal":
            if self.g >= h // 2:
                raise InvalidParameterError(
                    "offset", "FixationNet", f"less than {h // 2} px (inside the image)", offset
                )
            self.sampler = RetinalSampler(h, sampling, rounding)
            self.backbone = _backbone(backbone, (c, h, w), num_classes, params)
            feat = num_classes
        else:
            self.sampler = CorticalSampler(h)
            sides = self.sampler.sides  # type: ignore[attr-defined]
            if (h - max(sides)) // 2 < self.g:
                raise InvalidParameterError(
                    "offset", "FixationNet", f"at most {(h - max(sides)) // 2} px so every scale fits", offset
                )
            name = cortical_backbone or ("resnet18_s1" if backbone == "resnet18" else backbone)
            cparams = dict(params)
            if cortical_width is not None:
                cparams["width"] = cortical_width
            elif backbone in _CORTICAL_WIDTH and "width" in MODELS.get(name).parameters():
                coded, base = _CORTICAL_WIDTH[backbone]
                cparams["width"] = max(1, round(coded / base * int(params.get("width", base))))
            branches, dims = [], []
            for s in self.sampler.out_sides:  # type: ignore[attr-defined]
                net, dim = _strip_head(_backbone(name, (c, s, s), num_classes, cparams), num_classes)
                branches.append(net)
                dims.append(dim)
            self.scales = nn.ModuleList(branches)
            self.scale_head = nn.Linear(sum(dims), num_classes)
            feat = num_classes
        self.register_buffer("points", five_points(self.g), persistent=False)
        self.concat_head = nn.Linear(5 * feat, num_classes) if combine == "concat" else None
        self.bpda = bpda
        self._generator: torch.Generator | None = None

    # one fixation -> logits
    def _glimpse_logits(self, x: torch.Tensor, gaze: torch.Tensor | Sequence[int]) -> torch.Tensor:
        if self.frontend == "coarse":
            off = [int(v) for v in gaze]  # type: ignore[union-attr]
            return self.backbone(coarse_crop(x, off, self.crop))
        if self.frontend == "retinal":
            g = gaze if isinstance(gaze, torch.Tensor) and gaze.dim() == 2 else torch.as_tensor(gaze).expand(len(x), 2)
            assert self.sampler is not None
            return self.backbone(self.sampler(x, g.to(x.device)))
        off = [int(v) for v in gaze]  # type: ignore[union-attr]
        assert self.sampler is not None
        feats = [net(s) for net, s in zip(self.scales, self.sampler(x, off), strict=True)]
        return self.scale_head(torch.cat(feats, dim=1))

    def _random_gaze(self, n: int) -> torch.Tensor | list[int]:
        g = self.g
        lo, hi = -g, max(g, 1 - g)  # U{-g..g-1} as coded (g = 0: always the centre)
        if self.frontend == "coarse":  # tf.image.random_crop: one uniform offset per batch
            return [int(v) for v in torch.randint(-g, g + 1, (2,))]
        if self.frontend == "cortical":  # one gaze per batch
            return [int(v) for v in torch.randint(lo, hi, (2,))]
        return torch.randint(lo, hi, (n, 2)).float()  # retinal: one gaze per image

    def five_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(5, B, classes) logits at the five fixed points, in one batched pass through the backbone(s)
        (eval-mode batch norm treats samples independently, so this equals five separate passes)."""
        pts = [[int(v) for v in p] for p in self.points.tolist()]
        b = len(x)
        if self.frontend == "coarse":
            return self.backbone(torch.cat([coarse_crop(x, p, self.crop) for p in pts])).view(5, b, -1)
        assert self.sampler is not None
        if self.frontend == "retinal":
            gaze = self.points.to(x.device, x.dtype).repeat_interleave(b, dim=0)
            return self.backbone(self.sampler(x.repeat(5, 1, 1, 1), gaze)).view(5, b, -1)
        per_point = [self.sampler(x, p) for p in pts]  # [point][scale]
        feats = [net(torch.cat([sc[j] for sc in per_point])) for j, net in enumerate(self.scales)]
        return self.scale_head(torch.cat(feats, dim=1)).view(5, b, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self.combine == "concat":
            assert self.concat_head is not None
            return self.concat_head(self.five_logits(x).permute(1, 0, 2).flatten(1))
        if self.training:
            return self._glimpse_logits(x, self._random_gaze(len(x)))
        return self.five_logits(x).mean(0)

    @property
    def sampling_mode(self) -> str:
        """'discrete' or 'bilinear' for retinal models, else 'none'."""
        return getattr(self.sampler, "sampling", "none")

    @property
    def bpda_surrogate(self) -> Callable[[], nn.Module]:
        """Declared by discrete retinal models with ``bpda=True`` only: a callable returning this
        network with a straight-through sampler (forward discrete, backward bilinear), sharing its
        weights. Other front-ends are differentiable and have no such attribute."""
        if not (self.frontend == "retinal" and self.sampling_mode == "discrete" and self.bpda):
            raise AttributeError("bpda_surrogate: only discrete retinal sampling declares a surrogate")
        return lambda: _StraightThroughView(self)


class _StraightThroughView(nn.Module):
    """The same network (shared weights) with its discrete sampler run straight-through."""

    def __init__(self, net: FixationNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sampler = self.net.sampler
        assert isinstance(sampler, RetinalSampler)
        sampler.straight_through = True
        try:
            return self.net(x)
        finally:
            sampler.straight_through = False


def stn_theta(params: torch.Tensor, transform: str) -> torch.Tensor:
    """(B, K, 6) affine or (B, K, 4) attention parameters -> (B, K, 2, 3) matrices.

    Attention: :math:`(s_x, s_y, t_x, t_y) \\mapsto [[s_x, 0, t_x], [0, s_y, t_y]]` (normalised
    (x, y) = (col, row) coordinates in [-1, 1], ``align_corners=False``).
    """
    if transform == "affine":
        return params.reshape(*params.shape[:-1], 2, 3)
    if transform == "attention":
        sx, sy, tx, ty = params.unbind(-1)
        zero = torch.zeros_like(sx)
        return torch.stack([torch.stack([sx, zero, tx], -1), torch.stack([zero, sy, ty], -1)], -2)
    raise InvalidParameterError("transform", "stn_theta", "'affine' or 'attention'", transform)


def crop_theta(size: int, crop: int, offset: Sequence[float]) -> tuple[float, float, float, float]:
    """Attention parameters (s_x, s_y, t_x, t_y) whose glimpse of side ``crop`` is the pixel-exact crop
    centred ``offset`` (row, col) from the centre (``align_corners=False``): s = crop / S,
    t = 2 (top-left + crop / 2) / S - 1."""
    s = crop / size
    top, left = (size - crop) / 2 + offset[0], (size - crop) / 2 + offset[1]
    return s, s, 2 * (left + crop / 2) / size - 1, 2 * (top + crop / 2) / size - 1


class _GlimpseNet(nn.Module):
    """A small localisation / gaze network: a backbone on the image average-pooled by ``pool``."""

    def __init__(self, name: str, shape: tuple[int, int, int], out: int, params: dict[str, Any], pool: int) -> None:
        super().__init__()
        self.pool = pool
        c, h, w = shape
        self.net = _backbone(name, (c, h // pool, w // pool), out, params)
        head = getattr(self.net, "head", None)
        if isinstance(head, nn.Linear):  # start at the prescribed transforms: zero weights, bias = init
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(F.avg_pool2d(x, self.pool) if self.pool > 1 else x)


class _Branches(nn.Module):
    """K branches, shared (one backbone) or distinct, whose logits are concatenated."""

    def __init__(self, k: int, factory: Callable[[], nn.Module], shared: bool) -> None:
        super().__init__()
        self.k, self.shared = k, shared
        self.nets = nn.ModuleList([factory()] if shared else [factory() for _ in range(k)])

    def forward(self, glimpses: torch.Tensor) -> torch.Tensor:
        """``glimpses`` (B, K, C, h, w) -> (B, K * classes)."""
        b = glimpses.shape[0]
        if self.shared:
            out = self.nets[0](glimpses.flatten(0, 1))
            return out.view(b, -1)
        return torch.cat([net(glimpses[:, i]) for i, net in enumerate(self.nets)], dim=1)


class ParallelSTN(ImageModel):
    """Parallel spatial transformers (Burhanpurkar 2021, §3.3.1): K glimpses from K predicted transforms.

    Parameters
    ----------
    input_shape : tuple of int
    num_classes : int
    transform : {'affine', 'attention'}, default='affine'
        6 or 4 parameters per transformer.
    transformers : int, default=5
    glimpse : int, optional
        Side of each glimpse (default the coarse crop: 224/320 of the image).
    backbone, backbone_params :
        The branch network (built for the glimpse shape).
    shared : bool, default=True
        One backbone for all branches (the thesis' weight sharing) or one each.
    loc_backbone : str, default=backbone
    loc_params : dict, optional
        Localisation network overrides (default: the backbone's).
    loc_pool : int, default=2
        The localisation network sees the image average-pooled by this factor.
    offset : int, optional
        The transforms start as the crops at the five fixed points of this offset (default the
        retinal offset, 80/320 of the side); they are learnt from there.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        transform: str = "affine",
        transformers: int = 5,
        glimpse: int | None = None,
        backbone: str = "resnet18",
        backbone_params: dict[str, Any] | None = None,
        shared: bool = True,
        loc_backbone: str | None = None,
        loc_params: dict[str, Any] | None = None,
        loc_pool: int = 2,
        offset: int | None = None,
    ) -> None:
        validate_params(
            "ParallelSTN",
            {
                "num_classes": Interval(int, 2, None),
                "transform": Options(["affine", "attention"]),
                "transformers": Interval(int, 1, None),
                "glimpse": Type(int, optional=True),
                "backbone": Type(str),
                "shared": Type(bool),
                "loc_pool": Interval(int, 1, None),
                "offset": Type(int, optional=True),
            },
            locals(),
        )
        super().__init__(input_shape, num_classes)
        c, h, w = self.input_shape
        if h != w:
            raise InvalidParameterError("input_shape", "ParallelSTN", "square images (C, S, S)", tuple(input_shape))
        self.size, self.transform, self.k = h, transform, transformers
        self.glimpse = coarse_size(h) if glimpse is None else glimpse
        if not 1 <= self.glimpse <= h:
            raise InvalidParameterError("glimpse", "ParallelSTN", f"an int in [1, {h}]", glimpse)
        params = dict(backbone_params or {})
        self.n_params = 6 if transform == "affine" else 4
        self.loc = _GlimpseNet(
            loc_backbone or backbone, (c, h, w), transformers * self.n_params, dict(loc_params or params), loc_pool
        )
        g = fixation_offset("stn", h) if offset is None else offset
        g = min(g, (h - self.glimpse) // 2)
        pts = five_points(g).tolist()
        init = []
        for i in range(transformers):
            sx, sy, tx, ty = crop_theta(h, self.glimpse, pts[i % 5])
            init += [sx, 0.0, tx, 0.0, sy, ty] if transform == "affine" else [sx, sy, tx, ty]
        self.register_buffer("theta0", torch.tensor(init), persistent=False)
        self.branches = _Branches(
            transformers, lambda: _backbone(backbone, (c, self.glimpse, self.glimpse), num_classes, params), shared
        )
        self.head = nn.Linear(transformers * num_classes, num_classes)
        self.last_theta: torch.Tensor | None = None

    def thetas(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K, 2, 3) transforms for the batch."""
        p = self.loc(x) + self.theta0
        return stn_theta(p.view(len(x), self.k, self.n_params), self.transform)

    def glimpses(self, x: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, C, glimpse, glimpse) bilinear glimpses."""
        theta = self.thetas(x) if theta is None else theta
        b, k = theta.shape[:2]
        size = (b * k, x.shape[1], self.glimpse, self.glimpse)
        grid = F.affine_grid(theta.reshape(b * k, 2, 3), list(size), align_corners=False)
        xs = x.unsqueeze(1).expand(b, k, *x.shape[1:]).reshape(b * k, *x.shape[1:])
        out = F.grid_sample(xs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.view(b, k, *out.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        theta = self.thetas(x)
        self.last_theta = theta.detach()
        return self.head(self.branches(self.glimpses(x, theta)))


class MultiGazeNet(ImageModel):
    """Multi-gaze (Burhanpurkar 2021, §3.3.2): K predicted gaze points, retinal sampling at each.

    Parameters
    ----------
    input_shape : tuple of int
    num_classes : int
    gazes : int, default=5
    sampling : {'bilinear', 'discrete'}, default='bilinear'
        Bilinear keeps the gaze points learnable (discrete sampling has no gradient in the gaze).
    backbone, backbone_params, shared, loc_backbone, loc_params, loc_pool :
        As :class:`ParallelSTN`; the branches see the full-size retinal image.
    glimpse : int, optional
        Side of the branches' input: the retinal image (side S, as coded) average-pooled to this
        side, which must divide S (default S: no pooling; the 30-minute tier uses S / 2).
    gaze_l2 : float, default=0.0
        Weight of the L2 penalty on the gazes (in units of the half side), added to the training
        loss through ``training_penalty`` (the thesis' regularised model: 0.01).
    offset : int, optional
        Initial gazes: the five fixed points of this offset (default the retinal 80/320).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        gazes: int = 5,
        sampling: str = "bilinear",
        backbone: str = "resnet18",
        backbone_params: dict[str, Any] | None = None,
        shared: bool = True,
        loc_backbone: str | None = None,
        loc_params: dict[str, Any] | None = None,
        loc_pool: int = 2,
        gaze_l2: float = 0.0,
        offset: int | None = None,
        glimpse: int | None = None,
    ) -> None:
        validate_params(
            "MultiGazeNet",
            {
                "num_classes": Interval(int, 2, None),
                "gazes": Interval(int, 1, None),
                "sampling": Options(["bilinear", "discrete"]),
                "backbone": Type(str),
                "shared": Type(bool),
                "loc_pool": Interval(int, 1, None),
                "gaze_l2": Interval(float, 0, None),
                "offset": Type(int, optional=True),
                "glimpse": Type(int, optional=True),
            },
            locals(),
        )
        super().__init__(input_shape, num_classes)
        c, h, w = self.input_shape
        if h != w:
            raise InvalidParameterError("input_shape", "MultiGazeNet", "square images (C, S, S)", tuple(input_shape))
        self.size, self.k, self.gaze_l2 = h, gazes, float(gaze_l2)
        self.glimpse = h if glimpse is None else glimpse
        if not (1 <= self.glimpse <= h and h % self.glimpse == 0):
            raise InvalidParameterError("glimpse", "MultiGazeNet", f"a divisor of the image side {h}", glimpse)
        params = dict(backbone_params or {})
        self.sampler = RetinalSampler(h, sampling)
        self.loc = _GlimpseNet(loc_backbone or backbone, (c, h, w), 2 * gazes, dict(loc_params or params), loc_pool)
        g = fixation_offset("multigaze", h) if offset is None else offset
        if not 0 <= g < h // 2:
            raise InvalidParameterError("offset", "MultiGazeNet", f"an int in [0, {h // 2})", offset)
        pts = five_points(g)[torch.arange(gazes) % 5] / (h / 2)
        self.register_buffer("z0", torch.atanh(pts).flatten(), persistent=False)
        side = self.glimpse
        self.branches = _Branches(gazes, lambda: _backbone(backbone, (c, side, side), num_classes, params), shared)
        self.head = nn.Linear(gazes * num_classes, num_classes)
        self.last_gaze: torch.Tensor | None = None
        self._gaze_for_penalty: torch.Tensor | None = None

    def gaze(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K, 2) gaze offsets (row, col) in pixels, inside (-S/2, S/2)."""
        return (self.size / 2) * torch.tanh(self.loc(x) + self.z0).view(len(x), self.k, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        gaze = self.gaze(x)
        self.last_gaze = gaze.detach()
        self._gaze_for_penalty = gaze if self.training else None
        b = len(x)
        xs = x.unsqueeze(1).expand(b, self.k, *x.shape[1:]).reshape(b * self.k, *x.shape[1:])
        warped = self.sampler(xs, gaze.reshape(b * self.k, 2))
        if self.glimpse != self.size:
            warped = F.avg_pool2d(warped, self.size // self.glimpse)
        return self.head(self.branches(warped.view(b, self.k, *warped.shape[1:])))

    def training_penalty(self, xb: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``gaze_l2`` x mean squared gaze (in half sides) of the last training batch."""
        if not self.gaze_l2 or self._gaze_for_penalty is None:
            return logits.new_zeros(())
        return self.gaze_l2 * (self._gaze_for_penalty / (self.size / 2)).pow(2).mean()


# --------------------------------------------------------------------------------------------- registry


_FRONTENDS = ["none", "coarse", "retinal", "cortical", "stn", "multigaze"]


@MODELS.register("foveated", paper=f"{_VUYYURU}; {_THESIS}")
def foveated(
    input_shape: Sequence[int] = (3, 128, 128),
    num_classes: int = 10,
    frontend: str = "retinal",
    backbone: str = "resnet18",
    width: int | None = None,
    sampling: str = "discrete",
    rounding: str = "round",
    combine: str = "average",
    offset: int | None = None,
    transform: str = "affine",
    shared: bool = True,
    glimpse: int | None = None,
    loc_width: int | None = None,
    loc_pool: int = 2,
    gaze_l2: float = 0.0,
    bpda: bool = False,
) -> nn.Module:
    """A foveation front-end (coarse, retinal, cortical, stn, multigaze; or none) in front of a backbone.

    ``backbone`` is a registered model (``resnet18`` on caltech10, ``resnet20`` on CIFAR-10) and
    ``width`` its width; ``frontend="none"`` is the plain backbone (the control). Retinal:
    ``sampling`` discrete (as coded) or bilinear, ``rounding`` round or floor; fixation models:
    ``combine`` average (as coded) or concat; STN: ``transform`` affine or attention, ``glimpse``
    side (multi-gaze: the side its retinal images are pooled to); STN and multi-gaze: ``shared``
    branch weights, the localisation network's ``loc_width`` and input pooling ``loc_pool``;
    multi-gaze: ``gaze_l2``. See :mod:`neurorobust.mechanisms.foveation`.
    """
    if frontend not in _FRONTENDS:
        raise InvalidParameterError("frontend", "foveated", _options(_FRONTENDS), frontend)
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
        raise InvalidParameterError("width", "foveated", "an int >= 1 or None (the backbone's default)", width)
    if loc_width is not None and (isinstance(loc_width, bool) or not isinstance(loc_width, int) or loc_width < 1):
        raise InvalidParameterError("loc_width", "foveated", "an int >= 1 or None", loc_width)
    params = {} if width is None else {"width": width}
    shape = tuple(int(s) for s in input_shape)
    if frontend == "none":
        return create_model(backbone, input_shape=shape, num_classes=num_classes, **params)
    if frontend in ("coarse", "retinal", "cortical"):
        return FixationNet(
            shape,
            num_classes,
            frontend=frontend,
            backbone=backbone,
            backbone_params=params,
            sampling=sampling,
            rounding=rounding,
            offset=offset,
            combine=combine,
            bpda=bpda,
        )
    loc = None if loc_width is None else {"width": loc_width}
    if frontend == "stn":
        return ParallelSTN(
            shape,
            num_classes,
            transform=transform,
            glimpse=glimpse,
            backbone=backbone,
            backbone_params=params,
            shared=shared,
            loc_params=loc,
            loc_pool=loc_pool,
            offset=offset,
        )
    return MultiGazeNet(
        shape,
        num_classes,
        sampling="bilinear" if sampling == "discrete" else sampling,
        backbone=backbone,
        backbone_params=params,
        shared=shared,
        loc_params=loc,
        loc_pool=loc_pool,
        gaze_l2=float(gaze_l2),
        offset=offset,
        glimpse=glimpse,
    )


# --------------------------------------------------------------------------------------------- figures


def _trained(config: str, label: str, runs_dir: str | None) -> nn.Module | None:
    """The cached trained network of variant ``label`` (seed 0) of ``config``, or None if not trained yet."""
    from ..data import load_dataset
    from ..experiments.runner import build_model, default_runs_dir, train_key
    from ..experiments.sweep import expand_sweep
    from ..specs import load_spec
    from ..training import load_checkpoint

    for v in expand_sweep(load_spec(config)):
        if v.spec.label == label and v.spec.seed == 0:
            data = load_dataset(v.spec.data.name, v.spec.data.data_dir)
            model = build_model(v.spec, data)
            folder = (Path(runs_dir) if runs_dir else default_runs_dir()) / "checkpoints"
            return model.eval() if load_checkpoint(folder, train_key(v.spec), model) is not None else None
    return None


def save_figures(
    config: str,
    out_dir: str,
    *,
    prefix: str = "foveation",
    runs_dir: str | None = None,
    store: str | None = None,
    n_images: int = 4,
    curves: bool = True,
) -> list[str]:
    """The docs' figures for an experiment config (``configs/foveation_*.toml``); returns the files written.

    ``<prefix>_fixations.png``: five retinal fixations (discrete and bilinear), the coarse crops and
    the cortical scales of a test image, and a checkerboard warped both ways (thesis Fig. 8);
    ``<prefix>_stn.png`` and ``<prefix>_multigaze.png``: the boxes of the trained transformers and the
    predicted gazes on test images (when those networks are in the checkpoint cache);
    ``<prefix>_pgd20.png`` and ``<prefix>_pgd5.png``: adversarial accuracy vs eps from the store (unless
    ``curves=False``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon

    from ..data import balanced_subset, load_dataset
    from ..report.build import latest_rows
    from ..report.figures import curve_figure
    from ..specs import load_spec
    from ..store import ResultsStore

    spec = load_spec(config)
    data = load_dataset(spec.data.name, spec.data.data_dir)
    idx = balanced_subset(data.y_test, 10, seed=0)[:n_images]
    x = data.x_test[idx]
    size = x.shape[-1]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    show = lambda ax, img: (ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy()), ax.axis("off"))  # noqa: E731

    # 1. fixation grids
    g_ret, g_coarse, g_cort = (fixation_offset(f, size) for f in ("retinal", "coarse", "cortical"))
    pts = five_points(g_ret)
    rows = 4
    fig, axes = plt.subplots(rows, 6, figsize=(13, 2.3 * rows), dpi=90)
    img = x[:1]
    show(axes[0][0], img[0])
    axes[0][0].set_title("test image, 5 points", fontsize=8)
    c = (size - 1) / 2
    axes[0][0].scatter(c + pts[:, 1], c + pts[:, 0], c="red", s=12)
    for row, sampling in ((0, "discrete"), (1, "bilinear")):
        sampler = RetinalSampler(size, sampling)
        for k in range(5):
            ax = axes[row][k + 1]
            show(ax, sampler(img, pts[k : k + 1])[0])
            ax.set_title(f"retinal {sampling} {tuple(int(v) for v in pts[k].tolist())}", fontsize=7)
    crop = coarse_size(size)
    show(axes[1][0], img[0])
    for p in five_points(g_coarse).tolist():
        top, left = (size - crop) / 2 + p[0], (size - crop) / 2 + p[1]
        axes[1][0].add_patch(plt.Rectangle((left - 0.5, top - 0.5), crop, crop, fill=False, ec="yellow", lw=0.8))
    axes[1][0].set_title(f"coarse crops ({crop} px)", fontsize=8)
    cort = CorticalSampler(size)
    scales = cort(img, [0, 0])
    show(axes[2][0], img[0])
    axes[2][0].set_title(f"cortical crops at (0, 0), offset {g_cort}", fontsize=8)
    for side in cort.sides:
        axes[2][0].add_patch(
            plt.Rectangle(((size - side) / 2 - 0.5, (size - side) / 2 - 0.5), side, side, fill=False, ec="cyan", lw=0.8)
        )
    for k, s in enumerate(scales):
        show(axes[2][k + 1], s[0])
        axes[2][k + 1].set_title(f"scale {cort.sides[k]} px / r={cort.radii[k]}", fontsize=7)
    for k in range(len(scales) + 1, 6):
        axes[2][k].axis("off")
    board = ((torch.arange(size)[:, None] // 8 + torch.arange(size)[None, :] // 8) % 2).float()
    board = board.expand(1, 3, size, size)
    gaze = torch.tensor([[-float(g_ret), float(g_ret)]])
    show(axes[3][0], board[0])
    axes[3][0].scatter([c + g_ret], [c - g_ret], c="red", s=12)
    axes[3][0].set_title("checkerboard, gaze", fontsize=8)
    for k, sampling in enumerate(("discrete", "bilinear")):
        show(axes[3][k + 1], RetinalSampler(size, sampling)(board, gaze)[0])
        axes[3][k + 1].set_title(f"retinal {sampling}", fontsize=8)
    for k in range(3, 6):
        axes[3][k].axis("off")
    fig.tight_layout()
    path = out / f"{prefix}_fixations.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(str(path))

    # 2. STN boxes
    nets = [(label, _trained(config, label, runs_dir)) for label in ("stn-affine", "stn-attention")]
    nets = [(label, net) for label, net in nets if net is not None]
    if nets:
        fig, axes = plt.subplots(len(nets), len(x), figsize=(2.6 * len(x), 2.7 * len(nets)), dpi=90, squeeze=False)
        corners = torch.tensor([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]])
        for r, (label, net) in enumerate(nets):
            with torch.no_grad():
                theta = net.thetas(x)  # type: ignore[operator]
            for i in range(len(x)):
                ax = axes[r][i]
                show(ax, x[i])
                for k in range(theta.shape[1]):
                    xy = corners @ theta[i, k].T  # normalised (x, y) of the glimpse's corners
                    pix = (xy + 1) * size / 2 - 0.5
                    ax.add_patch(Polygon(pix.numpy(), closed=True, fill=False, ec=f"C{k}", lw=1))
                ax.set_title(f"{label}", fontsize=8)
        fig.tight_layout()
        path = out / f"{prefix}_stn.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(str(path))

    # 3. multi-gaze points
    net = _trained(config, "multigaze", runs_dir)
    if net is not None:
        with torch.no_grad():
            gz = net.gaze(x)  # type: ignore[operator]
        fig, axes = plt.subplots(1, len(x), figsize=(2.6 * len(x), 2.8), dpi=90, squeeze=False)
        for i in range(len(x)):
            ax = axes[0][i]
            show(ax, x[i])
            ax.scatter(c + gz[i, :, 1], c + gz[i, :, 0], c=[f"C{k}" for k in range(gz.shape[1])], s=18)
            ax.scatter(c + pts[:, 1], c + pts[:, 0], marker="x", c="white", s=10, lw=0.6)
            ax.set_title("multi-gaze (x: initial)", fontsize=8)
        fig.tight_layout()
        path = out / f"{prefix}_multigaze.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(str(path))

    # 4. adversarial accuracy vs eps, from the store
    if not curves:
        return written
    with ResultsStore(store) as st:
        rows_ = latest_rows(st.results(experiment=spec.name, done_only=True))
    for attack in ("pgd20", "pgd5"):
        done = curve_figure(rows_, attack, out / f"{prefix}_{attack}.png")
        if done is not None:
            written.append(str(done))
    return written


THESIS_TABLES = {
    "Table 1": {
        "standard": [89.2, 79.6, 24.4, 3.0, 0.02, 0.00],
        "coarse": [91.2, 80.8, 16.4, 1.20, 0.01, 0.00],
        "retinal-discrete": [90.0, 82.8, 41.0, 9.0, 0.2, 0.00],
        "cortical": [87.8, 82.0, 42.8, 11.8, 1.00, 0.00],
    },
    "Table 2": {
        "standard": [88.2, 79.6, 24.4, 3.0, 0.2, 0.00],
        "retinal-discrete": [90.0, 82.8, 41.0, 9.0, 0.2, 0.00],
        "retinal-bilinear": [89.8, 85.4, 45.0, 12.6, 0.4, 0.00],
    },
}
"""Burhanpurkar (2021) Tables 1-2 (ImageNet10, 20-step PGD): standard accuracy, then adversarial accuracy (%) at
eps 0.001, 0.005, 0.01, 0.02, 0.05 (images in [0, 1])."""

_GRID = (0.001, 0.005, 0.01, 0.02, 0.05)


def paper_tables(
    rows: list[dict[str, Any]], attack: str = "pgd20", eps_scale: float = 1.0, *, thesis: bool = True
) -> list[tuple[str, list[str], list[list[str]]]]:
    """Tables 1-2 with ours next to the thesis' (``ours / thesis``) from :func:`~neurorobust.report.build.latest_rows`
    output, plus every other model (ours only): clean and balanced accuracy, adversarial accuracy by eps, mean
    (± sd) over seeds, n and the seed count; as ``(title, header, body)``. The thesis' numbers are shown only
    for ``attack="pgd20"`` (its tables are 20-step L-inf PGD) and ``thesis=True`` (``False`` for experiments
    the thesis has no numbers for, e.g. CIFAR-10: every model then goes in one table of ours). ``eps_scale``
    maps the grid to the stored eps (L2 attacks: the grid times sqrt(input dimension))."""

    def cell(model: str, att: str, metric: str, eps: float | None) -> tuple[float | None, dict[str, Any]]:
        for r in rows:
            same_eps = (eps is None and r["eps"] is None) or (
                eps is not None and r["eps"] is not None and abs(r["eps"] - eps) < 1e-6 * max(1.0, eps)
            )
            if r["model"] == model and r["attack"] == att and r["metric"] == metric and same_eps:
                return r["value"], r
        return None, {}

    def fmt(v: float | None, r: dict[str, Any]) -> str:
        if v is None:
            return "—"
        sd = r.get("params", {}).get("sd")
        return f"{100 * v:.1f}" + (f" ± {100 * sd:.1f}" if sd else "")

    def row(model: str, paper: list[float] | None) -> list[str]:
        clean, r0 = cell(model, "clean", "accuracy", None)
        bal, rb = cell(model, "clean", "balanced_accuracy", None)
        cells = [fmt(clean, r0) + (f" / {paper[0]:g}" if paper else ""), fmt(bal, rb)]
        n = seeds = "—"
        for k, e in enumerate(_GRID):
            v, r = cell(model, attack, "accuracy", e * eps_scale)
            cells.append(fmt(v, r) + (f" / {paper[k + 1]:g}" if paper else ""))
            if r:
                n, seeds = str(r["n"]), str(r.get("params", {}).get("seeds", 1))
        return [model, *cells, n, seeds]

    header = ["model", "clean", "balanced", *[f"eps {e:g}" for e in _GRID], "n", "seeds"]
    models = sorted({r["model"] for r in rows if r["attack"] == attack})
    compare = attack == "pgd20" and thesis
    out = []
    for title, table in THESIS_TABLES.items() if compare else ():
        present = [(m, paper) for m, paper in table.items() if m in models]
        if present:
            out.append((f"{title} (ours / thesis, %; {attack})", header, [row(m, p) for m, p in present]))
    others = [m for m in models if not compare or not any(m in t for t in THESIS_TABLES.values())]
    if others:
        title = f"{'Other models' if compare else 'All models'} (ours only, %; {attack})"
        out.append((title, header, [row(m, None) for m in others]))
    return out


def tables_markdown(
    experiment: str,
    store: str | None = None,
    attack: str = "pgd20",
    eps_scale: float = 1.0,
    thesis: bool | None = None,
) -> str:
    """Markdown of :func:`paper_tables` for ``experiment`` read from the store (default: the user's store);
    ``thesis`` defaults to whether a claims file maps to the experiment (caltech10 yes, CIFAR-10 no)."""
    from ..report.build import latest_rows, paper_values
    from ..store import ResultsStore

    if thesis is None:
        thesis = bool(paper_values(experiment))

    with ResultsStore(store) as st:
        rows = latest_rows(st.results(experiment=experiment, done_only=True))
    out = []
    for title, header, body in paper_tables(rows, attack, eps_scale, thesis=thesis):
        out.append(f"**{title}**\n")
        out.append("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        out += ["| " + " | ".join(cells) + " |" for cells in body]
        out.append("")
    return "\n".join(out) + "\n"


def report_items(
    config: str | Path, rows: list[dict[str, Any]], outdir: Path, store: str | None = None, *, thesis: bool = True
) -> list[tuple[str, str, Any]]:
    """The report's foveation sections (``(kind, title, payload)`` as ``report.build`` renders them):
    the thesis' Tables 1-2 next to ours (``thesis=False``: ours only), and the fixation, STN-box and
    multi-gaze figures drawn from the trained networks in the checkpoint cache (:func:`save_figures`,
    without its accuracy curves, which the report draws for every attack)."""
    items: list[tuple[str, str, Any]] = [
        ("table", title, (header, body)) for title, header, body in paper_tables(rows, thesis=thesis)
    ]
    try:
        items += _figure_items(config, outdir, store)
    except Exception as err:  # missing data, a checkpoint that no longer loads, a plotting error
        # the tables above need only the store: keep them and say why the figures are missing
        logging.getLogger(__name__).warning("foveation figures skipped: %s", err)
        items.append(("table", "Foveation figures skipped", (["reason"], [[f"{type(err).__name__}: {err}"]])))
    return items


def _figure_items(config: str | Path, outdir: Path, store: str | None) -> list[tuple[str, str, Any]]:
    items: list[tuple[str, str, Any]] = []
    outdir.mkdir(parents=True, exist_ok=True)
    captions = {
        "fixations": "Fixations: retinal (discrete, bilinear), coarse crops, cortical scales, warped checkerboard",
        "stn": "Parallel spatial transformers: glimpse boxes on test images",
        "multigaze": "Multi-gaze: predicted fixation points (x: the initial five)",
    }
    for path in save_figures(str(config), str(outdir), prefix="foveation", store=store, curves=False):
        kind = Path(path).stem.removeprefix("foveation_")
        items.append(("figure", captions.get(kind, kind), Path(path).name))
    return items


if __name__ == "__main__":  # python -m neurorobust.mechanisms.foveation CONFIG OUT_DIR [PREFIX]
    import sys

    for f in save_figures(sys.argv[1], sys.argv[2], prefix=sys.argv[3] if len(sys.argv) > 3 else "foveation"):
        logging.getLogger(__name__).warning("wrote %s", f)
