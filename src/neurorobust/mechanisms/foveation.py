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
their pooled features concatenated into one dense layer. With ``auxiliary=True`` (the authors'
``wAUXILIARY`` ECNN, thesis §2.4: "an auxiliary loss is trained at the end of each branch") each scale
:math:`j` also has a linear softmax head on its pooled features :math:`h_j`, trained only, with the
main loss and the per-scale losses summed with equal weights (5 cross-entropies for 4 scales, as coded):

.. math::

    L = \mathrm{CE}(z, y) + \sum_{j} \mathrm{CE}(W_j h_j + b_j,\ y)

(:math:`z` the main logits). The heads are not used at test time: the attacked function is unchanged.

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

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidParameterError
from ..models import MODELS, ImageModel, create_model
from ..models.resnet import ResNet
from ..validation import Interval, Options, Type, validate_params
from .retina import (
    CorticalSampler,
    RetinalSampler,
    _options,
    bilinear_sample,
    coarse_crop,
    coarse_size,
    cortical_geometry,
    discrete_sample,
    five_points,
    fixation_offset,
    retinal_constants,
    retinal_radii,
    retinal_source,
)

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
    "retinal_constants",
    "retinal_radii",
    "retinal_source",
    "stn_theta",
]

_VUYYURU = "Vuyyuru, Banburski, Pant, Poggio 2020, NeurIPS 33 (as coded: mvuyyuru/adversary)"
_THESIS = "Burhanpurkar 2021, CS 91R thesis, Harvard, Sec. 3.3 (parallel STN, multi-gaze)"


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
    auxiliary : bool, default=False
        Cortical only: one linear head per scale on that scale's pooled (global-average-pooled) features,
        as the authors' ``ecnn(auxiliary=True)`` puts them (``mvuyyuru/adversary: model_backbone.py``;
        ``seeds/NOTES.md`` §2: "one softmax head per scale: 5 cross-entropies, equal weights").
        ``training_penalty(xb, logits, y)`` returns the sum of their cross-entropies (each the batch
        mean, weight 1, as Keras sums a multi-output model's losses), which the training loop adds to
        the main cross-entropy. They see the features of the training forward pass (cached then, so
        nothing is recomputed; with ``combine="concat"`` those of the five points, labels repeated).
        At evaluation they are unused and nothing is cached: the attacked function, the main logits,
        is the same network's with or without them.
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
        auxiliary: bool = False,
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
                "auxiliary": Type(bool),
            },
            locals(),
        )
        super().__init__(input_shape, num_classes)
        c, h, w = self.input_shape
        if h != w:
            raise InvalidParameterError("input_shape", "FixationNet", "square images (C, S, S)", tuple(input_shape))
        if auxiliary and frontend != "cortical":  # only the cortical model has scales to put heads on
            raise InvalidParameterError(
                "auxiliary", "FixationNet", "False unless frontend='cortical' (one head per cortical scale)", auxiliary
            )
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
        # built after every other layer, so that without them the seeded initialisation is the one before
        self.aux_heads = nn.ModuleList([nn.Linear(d, num_classes) for d in dims]) if auxiliary else None
        self._scale_feats: list[torch.Tensor] | None = None  # the training batch's per-scale features

    # one fixation -> logits
    def _glimpse_logits(self, x: torch.Tensor, gaze: torch.Tensor | Sequence[int]) -> torch.Tensor:
        if self.frontend == "coarse":
            off = [int(v) for v in gaze]  # type: ignore[union-attr]
            return self.backbone(coarse_crop(x, off, self.crop))
        if self.frontend == "retinal":
            g = gaze if isinstance(gaze, torch.Tensor) and gaze.dim() == 2 else torch.as_tensor(gaze).expand(len(x), 2)
            return self.backbone(self.sampler(x, g.to(x.device)))
        off = [int(v) for v in gaze]  # type: ignore[union-attr]
        feats = [net(s) for net, s in zip(self.scales, self.sampler(x, off), strict=True)]
        self._keep_scale_feats(feats)
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
        if self.frontend == "retinal":
            gaze = self.points.to(x.device, x.dtype).repeat_interleave(b, dim=0)
            return self.backbone(self.sampler(x.repeat(5, 1, 1, 1), gaze)).view(5, b, -1)
        per_point = [self.sampler(x, p) for p in pts]  # [point][scale]
        feats = [net(torch.cat([sc[j] for sc in per_point])) for j, net in enumerate(self.scales)]
        self._keep_scale_feats(feats)  # (5B, dim) each, point-major
        return self.scale_head(torch.cat(feats, dim=1)).view(5, b, -1)

    def _keep_scale_feats(self, feats: list[torch.Tensor]) -> None:
        """Cache the per-scale features for the auxiliary losses: training with heads only, so no graph is kept
        at evaluation (attacks), and the penalty reuses this forward pass instead of running another."""
        if self.aux_heads is not None and self.training:
            self._scale_feats = feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        self._scale_feats = None  # a stale batch's features (and graph) never outlive the next forward
        if self.concat_head is not None:  # combine="concat"
            return self.concat_head(self.five_logits(x).permute(1, 0, 2).flatten(1))
        if self.training:
            return self._glimpse_logits(x, self._random_gaze(len(x)))
        return self.five_logits(x).mean(0)

    def training_penalty(self, xb: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r"""The auxiliary losses :math:`\sum_j \mathrm{CE}(W_j h_j + b_j, y)` of the last training forward pass
        (``auxiliary=True``; else 0): one cross-entropy per cortical scale, each the batch mean, weight 1, so
        that with the loop's main cross-entropy the loss is the coded sum of 5 (``seeds/NOTES.md`` §2).

        ``y`` (B,) class indices or (B, classes) probabilities; the loop passes the batch's labels. The
        cached features are used once: a second call without a new forward pass returns 0.
        """
        feats, self._scale_feats = self._scale_feats, None
        if self.aux_heads is None or feats is None:
            return logits.new_zeros(())
        reps = len(feats[0]) // len(y)  # combine="concat": the five points' features, stacked point-major
        target = y.repeat(reps, *([1] * (y.dim() - 1)))
        losses = [F.cross_entropy(head(f), target) for head, f in zip(self.aux_heads, feats, strict=True)]
        return torch.stack(losses).sum()

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
        sampler = self.net.sampler  # a RetinalSampler: only discrete retinal networks declare this view
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


#: The network class of each front-end (``"none"``: the plain backbone, the control).
_FRONTENDS: dict[str, type[ImageModel] | None] = {
    "none": None,
    "coarse": FixationNet,
    "retinal": FixationNet,
    "cortical": FixationNet,
    "stn": ParallelSTN,
    "multigaze": MultiGazeNet,
}

#: The options of ``foveated`` with their defaults, listed once: its signature (what the registry lists
#: and accepts) is built from them, and each front-end's class takes those of its own parameters.
_FOVEATED_OPTIONS: dict[str, Any] = {
    "frontend": "retinal",
    "backbone": "resnet18",
    "width": None,
    "sampling": "discrete",
    "rounding": "round",
    "combine": "average",
    "offset": None,
    "transform": "affine",
    "shared": True,
    "glimpse": None,
    "loc_width": None,
    "loc_pool": 2,
    "gaze_l2": 0.0,
    "bpda": False,
    "auxiliary": False,
}


def _with_options(options: dict[str, Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a ``(..., **options)`` forwarder the explicit signature of ``options`` (keyword parameters with
    their defaults), so that ``Registry.create`` rejects any other key and the registry lists the defaults."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn)
        params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in options.items()]
        fn.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        return fn

    return deco


def _taken_by(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``options`` that ``cls`` takes as parameters."""
    names = inspect.signature(cls).parameters
    return {k: v for k, v in options.items() if k in names}


@MODELS.register("foveated", paper=f"{_VUYYURU}; {_THESIS}")
@_with_options(_FOVEATED_OPTIONS)
def foveated(input_shape: Sequence[int] = (3, 128, 128), num_classes: int = 10, **options: Any) -> nn.Module:
    """A foveation front-end (coarse, retinal, cortical, stn, multigaze; or none) in front of a backbone.

    ``backbone`` is a registered model (``resnet18`` on caltech10, ``resnet20`` on CIFAR-10) and
    ``width`` its width; ``frontend="none"`` is the plain backbone (the control). Retinal:
    ``sampling`` discrete (as coded) or bilinear, ``rounding`` round or floor; fixation models:
    ``combine`` average (as coded) or concat; STN: ``transform`` affine or attention, ``glimpse``
    side (multi-gaze: the side its retinal images are pooled to); STN and multi-gaze: ``shared``
    branch weights, the localisation network's ``loc_width`` and input pooling ``loc_pool``;
    multi-gaze: ``gaze_l2``; cortical: ``auxiliary`` per-scale heads and losses (refused for the other
    front-ends). Other options a front-end does not use are ignored. See
    :mod:`neurorobust.mechanisms.foveation`.
    """
    unknown = sorted(set(options) - set(_FOVEATED_OPTIONS))
    if unknown:
        allowed = "one of " + ", ".join(repr(k) for k in ("input_shape", "num_classes", *_FOVEATED_OPTIONS))
        raise InvalidParameterError(unknown[0], "foveated", allowed, options[unknown[0]])
    opts = {**_FOVEATED_OPTIONS, **options}
    frontend, backbone, width, loc_width = (opts.pop(k) for k in ("frontend", "backbone", "width", "loc_width"))
    if frontend not in _FRONTENDS:
        raise InvalidParameterError("frontend", "foveated", _options(_FRONTENDS), frontend)
    if opts["auxiliary"] is not False and frontend != "cortical":  # asked-for losses never silently dropped
        raise InvalidParameterError(
            "auxiliary", "foveated", "False unless frontend='cortical' (one head per cortical scale)", opts["auxiliary"]
        )
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
        raise InvalidParameterError("width", "foveated", "an int >= 1 or None (the backbone's default)", width)
    if loc_width is not None and (isinstance(loc_width, bool) or not isinstance(loc_width, int) or loc_width < 1):
        raise InvalidParameterError("loc_width", "foveated", "an int >= 1 or None", loc_width)
    params = {} if width is None else {"width": width}
    shape = tuple(int(s) for s in input_shape)
    cls = _FRONTENDS[frontend]
    if cls is None:
        return create_model(backbone, input_shape=shape, num_classes=num_classes, **params)
    opts.update(frontend=frontend, loc_params=None if loc_width is None else {"width": loc_width})
    if cls is MultiGazeNet:  # learnable gazes need bilinear sampling: the fixations' default 'discrete' reads so
        opts.update(sampling="bilinear" if opts["sampling"] == "discrete" else opts["sampling"])
        opts.update(gaze_l2=float(opts["gaze_l2"]))
    return cls(shape, num_classes, backbone=backbone, backbone_params=params, **_taken_by(cls, opts))
