r"""Stochastic-gated partially binarised networks (SGBN) and their baselines (Kubo 2019, thesis chapter 4).

**SGBN.** A small CNN whose convolution weights are masked, per input, by *gate modules*
(thesis §4.2, eqs 4.1-4.2). The gate of a conv layer sees that layer's input :math:`x`, is itself
a shallow CNN (conv, dense 512 + batch norm, dense 512, dense with one logistic unit per masked
weight; Tables 4.1-4.4), and its outputs are binarised stochastically:

.. math::

    q = \sigma(g(x)), \qquad h = \mathbb{1}[u < q],\ u \sim \mathcal U[0, 1), \qquad
    w' = w \odot h, \qquad o = f(x; w')

with the *hard* straight-through estimator for the gates, :math:`\partial h / \partial q := 1`
(thesis §4.2.2), and the soft STE with slope annealing for the dense layer of stochastic binary
neurons (:class:`~neurorobust.mechanisms.stochastic.StochasticBinary`). The mask :math:`h` has the
shape of the conv weight it masks (DESIGN §9: the thesis' Table 4.3 "6912" contradicts its own
reshape 6x6x128x64; we use the reshape), so each input gets its own filters. Variants:

* ``gate="st"`` (stochastic binary, the SGBN) or ``"dt"`` (deterministic, :math:`w' = w \odot q`:
  SGBN (DT) of §4.6.1); ``gate_values="pm1"`` gives the :math:`\pm 1` gates of Table 4.8;
* ``shared_weights=True``: the gate's conv reuses the main conv's filters (1W-SGBN, §4.6.3);
* ``mask="channel"``: a **reduced gate** with one unit per (output, input) channel pair, shared
  over the kernel window (the CIFAR-10 30-minute tier: the full CIFAR gates have a 409,600-unit
  output layer, ~210M parameters; every result of a reduced gate says so in its label);
* the gate-activation shuffling control of Table 4.8 (:func:`shuffle_gates`: at test time each
  input is masked with the gate output of another input of its batch).

**Baselines** (thesis §4.3.1, §4.6.4, §4.7), all on the same main network:

* CNN (ReLU dense layer) and CNN-BIN (stochastic binary dense layer, soft STE);
* SAP, stochastic activation pruning (Dhillon et al. 2018) on the conv activations of CNN-BIN
  (:class:`StochasticActivationPruning`), at test time as its authors apply it;
* BNN (Galloway et al. 2018): first conv full precision, later convs and the dense layer with
  binarised weights :math:`\pm\alpha` (sign, per-filter scale, straight-through within
  :math:`|w| \le 1`, eq 2.21) and binarised activations (sign, htanh straight-through); weights of
  the second layer quantised deterministically (DT) or stochastically (ST, eq 2.18 with the hard
  sigmoid); trained with PGD for the last epochs (:func:`pgd_phase`, clean/adversarial loss
  weighted by :math:`\tau = 0.5`);
* DropConnect (Wan et al. 2013; drop 40% / 50%, one mask per batch, inverted scaling) and random
  masks (Bernoulli keep 0.6 / 0.5, one mask per input, no scaling), in training and at test;
* adaptive dropout (Ba & Frey 2013, "standout" with the conv's own weights): keep probability
  :math:`\sigma(\alpha a + \beta)` of each conv unit, sampled (ST, hard STE) or multiplied (DT).

Every random layer declares itself (``is_stochastic``), and every model declares
``bpda_surrogate()``: the network with each random layer at its expected value (soft gates
:math:`q`, :math:`\sigma(m a)` neurons, SAP and DropConnect as the identity, BNN weights
:math:`\operatorname{clip}(w, -1, 1)` and htanh activations), so the evaluation engine applies
EOT and BPDA automatically.

Architectures (``arch``): ``"mnist"``: conv 32 5x5 stride 2 and conv 64 5x5 stride 2 (DESIGN §9,
as chapter 3), batch norm on the convs, dense 100, dense 10; gates on both convs (mask 5x5x32x1,
5x5x64x32). ``"cifar10"``: cleverhans' basic CNN that the thesis takes from Galloway et al.: conv
64 8x8 stride 2 (same padding), conv 128 6x6 stride 2, conv 128 5x5 stride 1 (valid), then the
output layer; the first conv is full precision in every model, gates on convs 2 and 3.
``"auto"`` picks by input size (28 -> MNIST, 32 -> CIFAR-10).

References
----------
T. Kubo (2019). *Learning stochastic weight masking to resist adversarial attacks.* PhD thesis,
Dalhousie University, chapter 4 (also Kubo, Trappenberg, Nishino, IJCNN 2019).
G. S. Dhillon et al. (2018). Stochastic activation pruning for robust adversarial defense. ICLR.
:arxiv:`1803.01442`.
A. Galloway, G. W. Taylor, M. Moussa (2018). Attacking binarized neural networks. ICLR.
:arxiv:`1711.00449`.
L. Wan et al. (2013). Regularization of neural networks using DropConnect. ICML.
J. Ba, B. Frey (2013). Adaptive dropout for training deep neural networks. NeurIPS.

Examples
--------
>>> import torch
>>> from neurorobust.models import create_model
>>> net = create_model("sgbn", mask="channel")
>>> net.is_stochastic, net(torch.rand(2, 1, 28, 28)).shape
(True, torch.Size([2, 10]))
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..data import balanced_subset
from ..errors import InvalidParameterError
from ..models import MODELS, ImageModel
from ..training.adversarial import AdversarialObjective
from ..training.loop import fit
from ..validation import AnyOf, Constraint, Interval, Options, Type, validate_params
from . import MECHANISMS
from .stochastic import RandomLayer, StochasticBinary, StochasticMixin, registered_forwarder

__all__ = [
    "BinaryNet",
    "ConvSpec",
    "GateModule",
    "GatedConv2d",
    "MixedPGDObjective",
    "SGBNNet",
    "StochasticActivationPruning",
    "binary_gate",
    "pgd_phase",
    "shuffle_gates",
]

_KUBO4 = "Kubo 2019, PhD thesis, Dalhousie, ch. 4 (SGBN, Tables 4.1-4.4)"


@dataclass(frozen=True)
class ConvSpec:
    """One conv layer of the main network: filters, kernel, stride, padding."""

    out: int
    kernel: int
    stride: int
    padding: int


ARCHS: dict[str, tuple[tuple[ConvSpec, ...], tuple[bool, ...], int]] = {
    # (convs, which convs are gated / binarised, dense hidden units; 0 = straight to the output)
    "mnist": ((ConvSpec(32, 5, 2, 2), ConvSpec(64, 5, 2, 2)), (True, True), 100),
    "cifar10": ((ConvSpec(64, 8, 2, 3), ConvSpec(128, 6, 2, 0), ConvSpec(128, 5, 1, 0)), (False, True, True), 0),
}
GATE_ACTIVATIONS = ("asinh", "tanh")  # second dense layer of the 1st / 2nd gate (Tables 4.1-4.4)


def _out_size(size: int, c: ConvSpec) -> int:
    return (size + 2 * c.padding - c.kernel) // c.stride + 1


def _arch(arch: str, input_shape: Sequence[int]) -> str:
    if arch != "auto":
        return arch
    return "cifar10" if tuple(input_shape[1:]) == (32, 32) else "mnist"


# --------------------------------------------------------------------------------------------
# Random layers: the gate binariser, SAP, adaptive dropout
# --------------------------------------------------------------------------------------------


def binary_gate(q: torch.Tensor, *, stochastic: bool = True, values: str = "01") -> torch.Tensor:
    r"""Binarise probabilities :math:`q` with the hard straight-through estimator.

    .. math::

        h = q + \operatorname{stopgrad}(\mathbb{1}[u < q] - q), \qquad \partial h / \partial q = 1

    ``stochastic=False`` thresholds at 1/2; ``values="pm1"`` maps to :math:`2h - 1`.
    """
    hard = (torch.rand_like(q) < q) if stochastic else (q > 0.5)
    h = q + (hard.to(q.dtype) - q).detach()
    return 2 * h - 1 if values == "pm1" else h


class _GateBinariser(RandomLayer):
    """The gates' output non-linearity: stochastic binary with hard STE ('st') or the soft mask ('dt')."""

    def __init__(self, mode: str, values: str) -> None:
        super().__init__()
        self.mode, self.values = mode, values

    @property
    def is_stochastic(self) -> bool:
        return self.mode == "st"

    @property
    def needs_surrogate(self) -> bool:
        return self.mode == "st"

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        if self.mode == "dt" or self.expected:
            return 2 * q - 1 if self.values == "pm1" else q
        return binary_gate(q, stochastic=True, values=self.values)


class StochasticActivationPruning(RandomLayer):
    r"""Stochastic activation pruning (Dhillon et al. 2018), thesis eqs 2.23-2.25, per sample.

    .. math::

        p_j = \frac{|h_j|}{\sum_k |h_k|}, \qquad
        M(h)_j = h_j\,\frac{\mathbb{1}[j \text{ drawn at least once in } r \text{ draws}]}{1 - (1 - p_j)^r}

    with :math:`r` = ``frac`` times the number of activations, drawn with replacement; the
    rescaling keeps :math:`\mathbb E[M(h)] = h`. Gradients pass through the kept, rescaled units.

    Parameters
    ----------
    frac : float, default=1.0
        Draws per sample, as a fraction of the layer's activations (Dhillon et al.'s 100%).
    at_train : bool, default=False
        Prune in training too (the authors apply SAP to trained networks only).
    exact : bool, default=False
        Draw the :math:`r` samples with replacement as the authors do (``torch.multinomial``, slow on
        CPU); by default each unit is kept independently with its exact marginal probability
        :math:`1 - (1 - p_j)^r`: the same keep probabilities, rescaling and expectation, without the
        (weak, negative) correlation between units of one multinomial draw.
    """

    def __init__(self, frac: float = 1.0, *, at_train: bool = False, exact: bool = False) -> None:
        validate_params(
            "StochasticActivationPruning",
            {"frac": Interval(float, 0, None, closed="neither"), "at_train": Type(bool), "exact": Type(bool)},
            locals(),
        )
        super().__init__()
        self.frac, self.at_train, self.exact = float(frac), at_train, exact

    @property
    def is_stochastic(self) -> bool:
        return True

    @property
    def needs_surrogate(self) -> bool:
        return False  # differentiable given the draw: EOT suffices (Athalye et al. 2018)

    def extra_repr(self) -> str:
        return f"frac={self.frac:g}, at_train={self.at_train}"

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.expected or (self.training and not self.at_train):
            return h
        flat = h.reshape(h.shape[0], -1)
        mag = flat.detach().abs()
        total = mag.sum(dim=1, keepdim=True)
        alive = total.squeeze(1) > 0
        r = max(1, round(self.frac * flat.shape[1]))
        probs = torch.where(alive[:, None], mag / total.clamp_min(1e-30), torch.full_like(mag, 1.0 / flat.shape[1]))
        keep_prob = -torch.expm1(r * torch.log1p(-probs.clamp(max=1 - 1e-7)))  # 1 - (1 - p)^r, stable
        if self.exact:
            draws = torch.multinomial(probs, r, replacement=True)
            kept = torch.zeros_like(mag, dtype=torch.bool).scatter_(1, draws, True)
        else:  # each unit with its exact marginal probability of being drawn at least once
            kept = torch.rand_like(mag) < keep_prob
        q = torch.where(kept, 1.0 / keep_prob.clamp_min(1e-30), torch.zeros_like(mag))
        return (flat * q).reshape(h.shape)


class _AdaptiveDropout(RandomLayer):
    r"""Standout (Ba & Frey 2013) on a conv's pre-activation :math:`a`: keep :math:`\pi = \sigma(\alpha a + \beta)`."""

    def __init__(self, channels: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    @property
    def is_stochastic(self) -> bool:
        return self.mode == "st"

    @property
    def needs_surrogate(self) -> bool:
        return self.mode == "st"

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        keep = torch.sigmoid(self.alpha * a + self.beta)
        mask = keep if (self.mode == "dt" or self.expected) else binary_gate(keep)
        return torch.relu(a) * mask


class _WeightMaskNoise(RandomLayer):
    """Random weight masks without a gate: DropConnect (one mask per batch) or per-input random masks."""

    def __init__(self, kind: str, p: float) -> None:
        super().__init__()
        self.kind, self.p = kind, float(p)

    @property
    def is_stochastic(self) -> bool:
        return True

    @property
    def needs_surrogate(self) -> bool:
        return False

    def mask(self, weight: torch.Tensor, n: int) -> torch.Tensor | None:
        """(n, *weight.shape) per-input mask, (*weight.shape) batch mask, or None (expected value)."""
        if self.kind == "dropconnect":  # p = drop probability; inverted scaling keeps E[w'] = w
            if self.expected:
                return None
            return (torch.rand_like(weight) >= self.p).to(weight.dtype) / (1 - self.p)
        if self.expected:  # random mask, p = keep probability: E[w'] = p w
            return torch.full_like(weight, self.p)
        return (torch.rand((n, *weight.shape), device=weight.device) < self.p).to(weight.dtype)


# --------------------------------------------------------------------------------------------
# The gate module and the gated conv
# --------------------------------------------------------------------------------------------


class GateModule(nn.Module):
    r"""A gate module (thesis Tables 4.1-4.4): conv + BN + ReLU, dense 512 + BN + ReLU, dense 512 + ``act``,
    dense to one logistic unit per masked weight, binarised.

    Parameters
    ----------
    in_shape : tuple of int
        (C, H, W) of the masked conv's input (also the gate's input).
    conv : ConvSpec
        The masked conv (the gate's conv has the same filters, kernel, stride and padding).
    mask_shape : tuple of int
        (O, I, k, k) for a full mask, (O, I, 1, 1) for a channel-level one.
    hidden : int, default=512
    act : {'asinh', 'tanh'}, default='asinh'
    mode : {'st', 'dt'}, default='st'
    values : {'01', 'pm1'}, default='01'
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        conv: ConvSpec,
        mask_shape: Sequence[int],
        *,
        hidden: int = 512,
        act: str = "asinh",
        mode: str = "st",
        values: str = "01",
    ) -> None:
        super().__init__()
        c, h, w = in_shape
        self.spec = conv
        self.mask_shape = tuple(int(s) for s in mask_shape)
        self.conv = nn.Conv2d(c, conv.out, conv.kernel, stride=conv.stride, padding=conv.padding)
        self.bn = nn.BatchNorm2d(conv.out)
        flat = conv.out * _out_size(h, conv) * _out_size(w, conv)
        self.fc1 = nn.Linear(flat, hidden)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act = torch.asinh if act == "asinh" else torch.tanh
        self.fc3 = nn.Linear(hidden, int(torch.tensor(self.mask_shape).prod()))
        self.binarise = _GateBinariser(mode, values)
        for m in (self.conv, self.fc1, self.fc2, self.fc3):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    def probabilities(self, x: torch.Tensor, shared_weight: torch.Tensor | None = None) -> torch.Tensor:
        """:math:`q = \\sigma(g(x))` of shape (N, *mask_shape), before binarisation."""
        s = self.spec
        weight = self.conv.weight if shared_weight is None else shared_weight
        z = F.conv2d(x, weight, self.conv.bias, stride=s.stride, padding=s.padding)
        z = torch.relu(self.bn(z)).flatten(1)
        z = self.act(self.fc2(torch.relu(self.bn1(self.fc1(z)))))
        return torch.sigmoid(self.fc3(z)).reshape(x.shape[0], *self.mask_shape)

    def forward(self, x: torch.Tensor, shared_weight: torch.Tensor | None = None) -> torch.Tensor:
        """The (N, *mask_shape) mask for the inputs ``x``."""
        return self.binarise(self.probabilities(x, shared_weight))


class GatedConv2d(nn.Module):
    r"""A conv layer whose weights are masked per input: :math:`o = f(x; w \odot h(x))` (thesis eqs 4.1-4.2).

    ``masking`` chooses :math:`h`: ``"gate"`` (a :class:`GateModule`), ``"dropconnect"``, ``"random"``
    or ``"none"`` (a plain conv). Per-input filters run as one grouped convolution.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        conv: ConvSpec,
        *,
        masking: str = "gate",
        p: float = 0.5,
        mask: str = "full",
        gate_hidden: int = 512,
        gate_act: str = "asinh",
        gate: str = "st",
        gate_values: str = "01",
        shared_weights: bool = False,
    ) -> None:
        super().__init__()
        c = in_shape[0]
        self.spec = conv
        self.weight = nn.Parameter(torch.empty(conv.out, c, conv.kernel, conv.kernel))
        self.bias = nn.Parameter(torch.zeros(conv.out))
        nn.init.xavier_uniform_(self.weight)
        self.masking, self.shared_weights = masking, shared_weights
        self.register_buffer("shuffle", torch.tensor(False))  # the shuffling control (saved with the weights)
        self.gate: GateModule | None = None
        self.noise: _WeightMaskNoise | None = None
        if masking == "gate":
            shape = (conv.out, c, conv.kernel, conv.kernel) if mask == "full" else (conv.out, c, 1, 1)
            self.gate = GateModule(
                in_shape, conv, shape, hidden=gate_hidden, act=gate_act, mode=gate, values=gate_values
            )
        elif masking in ("dropconnect", "random"):
            self.noise = _WeightMaskNoise(masking, p)

    def mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """The mask applied to the weights for inputs ``x``: (N, O, I, k|1, k|1), (O, I, k, k) or None."""
        if self.gate is not None:
            h = self.gate(x, self.weight if self.shared_weights else None)
            if bool(self.shuffle) and not self.training and h.shape[0] > 1:
                h = h[torch.randperm(h.shape[0], device=h.device)]
            return h
        if self.noise is not None:
            return self.noise.mask(self.weight, x.shape[0])
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spec
        m = self.mask(x)
        if m is None or m.dim() == 4:
            w = self.weight if m is None else self.weight * m
            return F.conv2d(x, w, self.bias, stride=s.stride, padding=s.padding)
        n, c, h, w_ = x.shape
        ho, wo = (h + 2 * s.padding - s.kernel) // s.stride + 1, (w_ + 2 * s.padding - s.kernel) // s.stride + 1
        if m.shape[-1] == 1 and 2 * ho * wo <= s.kernel * s.kernel:
            # channel-level mask on a small output: mix the per-(out, in) partial convolutions instead of
            # building each input's filters (4x faster for CIFAR's third conv, same result)
            k2 = s.kernel * s.kernel
            cols = F.unfold(x, s.kernel, padding=s.padding, stride=s.stride).reshape(n, c, k2, ho * wo)
            cols = cols.permute(1, 0, 3, 2).reshape(c, n * ho * wo, k2)
            part = torch.bmm(cols, self.weight.reshape(s.out, c, k2).permute(1, 2, 0)).reshape(c, n, ho * wo, s.out)
            out = torch.einsum("noi,inlo->nol", m.reshape(n, s.out, c), part).reshape(n, s.out, ho, wo)
            return out + self.bias[None, :, None, None]
        weights = (self.weight.unsqueeze(0) * m).reshape(n * s.out, c, s.kernel, s.kernel)
        out = F.conv2d(x.reshape(1, n * c, h, w_), weights, None, stride=s.stride, padding=s.padding, groups=n)
        return out.reshape(n, s.out, out.shape[-2], out.shape[-1]) + self.bias[None, :, None, None]


# --------------------------------------------------------------------------------------------
# The SGBN family
# --------------------------------------------------------------------------------------------


class SGBNNet(StochasticMixin, ImageModel):
    r"""SGBN and the baselines sharing its main network (thesis ch. 4).

    The main network: convs (``arch``) each followed by batch norm and ReLU, a dense layer of
    ``hidden`` units with ``dense`` activation (stochastic binary neurons with the soft STE and
    slope annealing, or ReLU; none for CIFAR-10), and the output layer.

    Parameters
    ----------
    input_shape : tuple of int, default=(1, 28, 28)
    num_classes : int, default=10
    arch : {'auto', 'mnist', 'cifar10'}, default='auto'
    masking : {'gate', 'none', 'dropconnect', 'random'}, default='gate'
        How the weights of the gated convs are masked: learned gates (SGBN), nothing (CNN, CNN-BIN),
        DropConnect or random masks.
    dense : {'ste', 'relu'}, default='ste'
        Activation of the dense hidden layer (CNN-BIN / SGBN: 'ste'; CNN: 'relu').
    hidden : int or None, default=None
        Dense hidden units (``None``: 100 for MNIST, none for CIFAR-10).
    widths : sequence of int or None, default=None
        Filters per conv (``None``: the thesis' 32/64 or 64/128/128).
    gate : {'st', 'dt'}, default='st'
    gate_values : {'01', 'pm1'}, default='01'
    mask : {'full', 'channel'}, default='full'
        Full weight-shaped masks, or the reduced channel-level gate.
    gate_hidden : int, default=512
    shared_weights : bool, default=False
        1W-SGBN: gates reuse the main conv filters.
    mask_p : sequence of float, default=(0.5, 0.5)
        DropConnect drop probabilities / random-mask keep probabilities of the gated convs
        (the thesis: 0.4, 0.5 and 0.6, 0.5).
    sap : bool, default=False
        Stochastic activation pruning after every conv's ReLU (at test time).
    sap_frac : float, default=1.0
    adaptive_dropout : {'none', 'st', 'dt'}, default='none'
        Standout on the conv activations (the adaptive-dropout baseline of §4.7).
    slope_rate, max_slope : float, default=0.04, 5.0
        Slope annealing of the dense stochastic binary layer.
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "num_classes": Interval(int, 2, None),
        "arch": Options(["auto", *ARCHS]),
        "masking": Options(["gate", "none", "dropconnect", "random"]),
        "dense": Options(["ste", "relu"]),
        "hidden": AnyOf(Interval(int, 0, None), Options([None])),
        "widths": AnyOf(Options([None]), Type(list, tuple)),
        "gate": Options(["st", "dt"]),
        "gate_values": Options(["01", "pm1"]),
        "mask": Options(["full", "channel"]),
        "gate_hidden": Interval(int, 1, None),
        "shared_weights": Type(bool),
        "sap": Type(bool),
        "sap_frac": Interval(float, 0, None, closed="neither"),
        "adaptive_dropout": Options(["none", "st", "dt"]),
        "slope_rate": Interval(float, 0, None),
        "max_slope": Interval(float, 1, None),
    }

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        *,
        arch: str = "auto",
        masking: str = "gate",
        dense: str = "ste",
        hidden: int | None = None,
        widths: Sequence[int] | None = None,
        gate: str = "st",
        gate_values: str = "01",
        mask: str = "full",
        gate_hidden: int = 512,
        shared_weights: bool = False,
        mask_p: Sequence[float] = (0.5, 0.5),
        sap: bool = False,
        sap_frac: float = 1.0,
        adaptive_dropout: str = "none",
        slope_rate: float = 0.04,
        max_slope: float = 5.0,
    ) -> None:
        validate_params("SGBNNet", self._parameter_constraints, locals())
        super().__init__(input_shape, num_classes)
        name = _arch(arch, self.input_shape)
        convs, gated, default_hidden = ARCHS[name]
        self.arch = name
        if widths is not None:
            if len(widths) != len(convs) or any(not isinstance(w, int) or w < 1 for w in widths):
                raise InvalidParameterError(
                    "widths", "SGBNNet", f"{len(convs)} positive ints (one per conv of arch {name!r})", widths
                )
            convs = tuple(ConvSpec(w, c.kernel, c.stride, c.padding) for w, c in zip(widths, convs, strict=True))
        n_gated = sum(gated)
        mask_p = tuple(mask_p)
        if len(mask_p) != n_gated or any(not (isinstance(p, int | float) and 0 < p < 1) for p in mask_p):
            raise InvalidParameterError("mask_p", "SGBNNet", f"{n_gated} probabilities in (0, 1)", mask_p)
        if shared_weights and masking != "gate":
            raise InvalidParameterError("shared_weights", "SGBNNet", "False unless masking='gate'", shared_weights)
        self.masking = masking
        c, h, w = self.input_shape
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.post = nn.ModuleList()
        k = 0
        for spec, is_gated in zip(convs, gated, strict=True):
            if spec.kernel > h + 2 * spec.padding or spec.kernel > w + 2 * spec.padding:
                raise InvalidParameterError(
                    "input_shape", "SGBNNet", f"images large enough for arch {name!r}", input_shape
                )
            if is_gated:
                act = GATE_ACTIVATIONS[min(k, len(GATE_ACTIVATIONS) - 1)]
                layer: nn.Module = GatedConv2d(
                    (c, h, w),
                    spec,
                    masking=masking,
                    p=mask_p[k],
                    mask=mask,
                    gate_hidden=gate_hidden,
                    gate_act=act,
                    gate=gate,
                    gate_values=gate_values,
                    shared_weights=shared_weights,
                )
                k += 1
            else:
                layer = GatedConv2d((c, h, w), spec, masking="none")
            self.convs.append(layer)
            self.norms.append(nn.BatchNorm2d(spec.out))
            post: nn.Module = nn.Identity()
            if adaptive_dropout != "none":
                post = _AdaptiveDropout(spec.out, adaptive_dropout)
            self.post.append(post)
            c, h, w = spec.out, _out_size(h, spec), _out_size(w, spec)
        self.sap = nn.ModuleList([StochasticActivationPruning(sap_frac) for _ in self.convs]) if sap else None
        flat = c * h * w
        hidden = default_hidden if hidden is None else hidden
        self.hidden = nn.Linear(flat, hidden) if hidden else None
        self.binary = (
            StochasticBinary("ste", slope_rate=slope_rate, max_slope=max_slope) if hidden and dense == "ste" else None
        )
        self.out = nn.Linear(hidden or flat, num_classes)
        for m in (self.hidden, self.out):
            if m is not None:
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened output of the conv stack."""
        for i, (conv, norm, post) in enumerate(zip(self.convs, self.norms, self.post, strict=True)):
            a = norm(conv(x))
            x = post(a) if isinstance(post, _AdaptiveDropout) else torch.relu(a)
            if self.sap is not None:
                x = self.sap[i](x)
        return x.flatten(1)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x)
        if self.hidden is not None:
            a = self.hidden(z)
            z = self.binary(a) if self.binary is not None else torch.relu(a)
        return self.out(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self._tapped(self._logits, x)

    def gate_masks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The masks each gated conv applies for the inputs ``x`` (eval mode: one draw), for inspection."""
        masks = []
        with torch.no_grad():
            for i, (conv, norm, post) in enumerate(zip(self.convs, self.norms, self.post, strict=True)):
                if isinstance(conv, GatedConv2d) and conv.gate is not None:
                    masks.append(conv.mask(x))
                a = norm(conv(x))
                x = post(a) if isinstance(post, _AdaptiveDropout) else torch.relu(a)
                if self.sap is not None:
                    x = self.sap[i](x)
        return masks


# --------------------------------------------------------------------------------------------
# BNN (Galloway et al. 2018)
# --------------------------------------------------------------------------------------------


class _BinaryWeights(RandomLayer):
    r"""Binarised weights :math:`\alpha\,b(w)`, :math:`\alpha` = mean :math:`|w|` per output unit (scaled BNN).

    ``"det"``: :math:`b = \operatorname{sign}(w)`; ``"stoch"``: :math:`b = +1` with probability
    :math:`\operatorname{clip}((w/\alpha + 1)/2, 0, 1)`, the hard sigmoid of eq 2.18 applied to the scaled
    weight (on the raw weights every draw would be a coin flip for the small weights Adam keeps);
    straight-through within :math:`|w| \le 1` (eq 2.21). The expected value (the BPDA surrogate) is
    :math:`\alpha\,\operatorname{clip}(w/\alpha, -1, 1)`, a smooth stand-in for the sign too.
    """

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    @property
    def is_stochastic(self) -> bool:
        return self.mode == "stoch"

    @property
    def needs_surrogate(self) -> bool:
        return False  # acts on weights; the sign activations are what block input gradients

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        alpha = w.detach().abs().flatten(1).mean(1).reshape(-1, *([1] * (w.dim() - 1))).clamp_min(1e-12)
        if self.expected:
            return alpha * (w / alpha).clamp(-1, 1)
        if self.mode == "det":
            b = torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))
        else:
            b = (torch.rand_like(w) < ((w / alpha + 1) / 2).clamp(0, 1)).to(w.dtype) * 2 - 1
        clipped = w.clamp(-1, 1)
        return alpha * (clipped + (b - clipped).detach())


class _SignActivation(RandomLayer):
    """Binarised activations: sign in the forward pass, htanh straight-through (eq 2.22); htanh when expected."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        soft = a.clamp(-1, 1)
        if self.expected:
            return soft
        return soft + (torch.where(a >= 0, torch.ones_like(a), -torch.ones_like(a)) - soft).detach()


class BinaryNet(StochasticMixin, ImageModel):
    r"""Galloway et al.'s scaled BNN on the SGBN main network (thesis §4.3.1): first conv full precision,
    later convs and the dense layer with binarised weights and activations, full-precision output layer.

    Parameters
    ----------
    input_shape : tuple of int, default=(1, 28, 28)
    num_classes : int, default=10
    arch : {'auto', 'mnist', 'cifar10'}, default='auto'
    quantize : {'det', 'stoch'}, default='det'
        Weight quantisation of the binarised layers (BNN DT / ST of Figs 4.4).
    hidden : int or None, default=None
        Dense hidden units (``None``: 100 for MNIST, none for CIFAR-10).
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "num_classes": Interval(int, 2, None),
        "arch": Options(["auto", *ARCHS]),
        "quantize": Options(["det", "stoch"]),
        "hidden": AnyOf(Interval(int, 0, None), Options([None])),
    }

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        *,
        arch: str = "auto",
        quantize: str = "det",
        hidden: int | None = None,
    ) -> None:
        validate_params("BinaryNet", self._parameter_constraints, locals())
        super().__init__(input_shape, num_classes)
        name = _arch(arch, self.input_shape)
        convs, _, default_hidden = ARCHS[name]
        self.arch = name
        c, h, w = self.input_shape
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.quant = nn.ModuleList()
        self.acts = nn.ModuleList()
        for i, spec in enumerate(convs):
            conv = nn.Conv2d(c, spec.out, spec.kernel, stride=spec.stride, padding=spec.padding)
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
            self.convs.append(conv)
            self.norms.append(nn.BatchNorm2d(spec.out))
            self.quant.append(nn.Identity() if i == 0 else _BinaryWeights(quantize))
            self.acts.append(nn.ReLU() if i == 0 else _SignActivation())
            c, h, w = spec.out, _out_size(h, spec), _out_size(w, spec)
        flat = c * h * w
        hidden = default_hidden if hidden is None else hidden
        self.hidden = nn.Linear(flat, hidden) if hidden else None
        self.hidden_norm = nn.BatchNorm1d(hidden) if hidden else None
        self.hidden_quant = _BinaryWeights(quantize) if hidden else None
        self.hidden_act = _SignActivation() if hidden else None
        self.out = nn.Linear(hidden or flat, num_classes)
        for m in (self.hidden, self.out):
            if m is not None:
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm, quant, act in zip(self.convs, self.norms, self.quant, self.acts, strict=True):
            x = act(norm(F.conv2d(x, quant(conv.weight), conv.bias, stride=conv.stride, padding=conv.padding)))
        z = x.flatten(1)
        if (  # the four are built together (hidden > 0)
            self.hidden is not None
            and self.hidden_quant is not None
            and self.hidden_norm is not None
            and self.hidden_act is not None
        ):
            z = self.hidden_act(self.hidden_norm(F.linear(z, self.hidden_quant(self.hidden.weight), self.hidden.bias)))
        return self.out(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self._tapped(self._logits, x)


# --------------------------------------------------------------------------------------------
# Registered models
# --------------------------------------------------------------------------------------------


def _register(name: str, summary: str, fixed: dict[str, Any], defaults: dict[str, Any] | None = None) -> None:
    """Register ``name``: :class:`SGBNNet` with some parameters fixed (the signature lists the others)."""
    MODELS.register(name, paper=_KUBO4, defaults=defaults)(registered_forwarder(SGBNNet, name, summary, fixed))


_register(
    "sgbn",
    "SGBN: convs masked per input by binary stochastic gate modules, dense-100 stochastic binary (Kubo ch. 4).",
    {},
)
_register(
    "sgbn_cnn",
    "SGBN's main network as a plain CNN (BN convs, ReLU dense 100): the CNN baseline of Kubo ch. 4.",
    {"masking": "none", "dense": "relu"},
)
_register(
    "sgbn_cnn_bin",
    "CNN-BIN: SGBN's main network without gates, dense-100 stochastic binary neurons (soft STE).",
    {"masking": "none"},
)
_register(
    "sgbn_sap",
    "SAP: CNN-BIN with stochastic activation pruning on the conv activations (Dhillon et al. 2018).",
    {"masking": "none", "sap": True},
)
_register(
    "sgbn_dropconnect",
    "DropConnect on SGBN's gated convs, in training and at test (Kubo Table 4.8).",
    {"masking": "dropconnect"},
    {"mask_p": (0.4, 0.5)},
)
_register(
    "sgbn_random_mask",
    "Random Bernoulli weight masks in place of SGBN's gates (Kubo Table 4.8).",
    {"masking": "random"},
    {"mask_p": (0.6, 0.5)},
)
_register(
    "sgbn_adaptive_dropout",
    "Adaptive dropout (standout) on CNN-BIN's conv activations (Kubo §4.7; adaptive_dropout='st' or 'dt').",
    {"masking": "none"},
    {"adaptive_dropout": "st"},
)


MODELS.register(
    "sgbn_bnn",
    paper="Galloway, Taylor, Moussa 2018, ICLR (scaled BNN), as Kubo ch. 4 uses it",
    version=2,  # 2: stochastic binarisation on w / alpha, surrogate alpha * clip(w / alpha)
)(
    registered_forwarder(
        BinaryNet,
        "sgbn_bnn",
        "BNN (Galloway et al. 2018) on SGBN's main network: binarised weights and activations after the first conv.",
    )
)


# --------------------------------------------------------------------------------------------
# Mechanisms: the shuffling control, Galloway's PGD phase
# --------------------------------------------------------------------------------------------


@MECHANISMS.register("shuffle_gates", paper="Kubo 2019, thesis §4.6.4, Fig. 4.24 (gate activations shuffled)")
def shuffle_gates(model: nn.Module, data: Any = None) -> nn.Module:
    """A copy of a trained SGBN whose gated convs, at test time, mask each input with the gate output of
    another input of the batch (a random permutation per forward pass); training is unchanged."""
    gated = [m for m in model.modules() if isinstance(m, GatedConv2d) and m.gate is not None]
    if not gated:
        raise InvalidParameterError("model", "shuffle_gates", "a model with gate modules (e.g. 'sgbn')", model)
    out = copy.deepcopy(model)
    for m in out.modules():
        if isinstance(m, GatedConv2d) and m.gate is not None:
            m.shuffle.fill_(True)
    out.eval()
    return out


class MixedPGDObjective(AdversarialObjective):
    r"""Galloway et al.'s adversarial-training loss, :math:`\tau\,\mathrm{CE}(x) + (1 - \tau)\,\mathrm{CE}(x')`,
    :math:`x'` from PGD with a random start (a loss the one training loop takes as ``adversarial``)."""

    def __init__(self, eps: float, *, steps: int = 40, step_size: float = 0.01, tau: float = 0.5) -> None:
        super().__init__("pgd", eps, steps=steps, step_size=step_size)
        self.tau = float(tau)

    def __repr__(self) -> str:
        return (
            f"MixedPGDObjective(eps={self.eps:g}, steps={self.steps}, step_size={self.step_size:g}, tau={self.tau:g})"
        )

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self._inner(model, x, y, eps=self.eps, generator=generator).x_adv.detach()
        logits = model(x)
        loss = self.tau * F.cross_entropy(logits, y) + (1 - self.tau) * F.cross_entropy(model(x_adv), y)
        return loss, logits


@MECHANISMS.register(
    "pgd_phase", paper="Galloway, Taylor, Moussa 2018 (BNN + PGD), as Kubo ch. 4: PGD for the last epochs"
)
def pgd_phase(
    model: nn.Module,
    data: Any = None,
    *,
    eps: float = 0.3,
    steps: int = 40,
    step_size: float = 0.01,
    tau: float = 0.5,
    epochs: int = 5,
    n: int | None = None,
    train: dict[str, Any] | None = None,
    seed: int = 0,
) -> nn.Module:
    r"""Continue training a copy of ``model`` with PGD adversarial examples for ``epochs`` more epochs.

    The loss is :math:`\tau\,\mathrm{CE}(x) + (1 - \tau)\,\mathrm{CE}(x')`, :math:`x'` from PGD with a
    random start (``steps`` of ``step_size``, L∞ radius ``eps``). The thesis trains BNN clean and
    applies PGD (40 iterations, :math:`\tau = 0.5`) for the last 5 of 25 epochs: set the control's
    ``train.epochs`` to 20 and ``epochs = 5`` here. ``n``: train on the same class-balanced subset of
    ``n`` training images as the control (its ``data.train_subset``); ``train``: the control's
    training settings (the runner passes them).
    """
    validate_params(
        "pgd_phase",
        {
            "eps": Interval(float, 0, 1, closed="right"),
            "steps": Interval(int, 1, None),
            "step_size": Interval(float, 0, None, closed="neither"),
            "tau": Interval(float, 0, 1),
            "epochs": Interval(int, 1, None),
            "n": AnyOf(Interval(int, 1, None), Options([None])),
        },
        locals(),
    )
    if data is None or not hasattr(data, "x_train"):
        raise InvalidParameterError("data", "pgd_phase", "a Dataset with a training split", data)
    settings = {k: v for k, v in (train or {}).items() if k not in ("adversarial", "epochs", "seed")}
    x, y = data.x_train, data.y_train
    if n is not None and n < len(x):  # the control's training subset (same balanced draw as the runner's)
        idx = balanced_subset(y, n, seed=seed)
        x, y = x[idx], y[idx]
    objective = MixedPGDObjective(eps, steps=steps, step_size=step_size, tau=tau)
    tuned = copy.deepcopy(model)
    tuned, history = fit(tuned, x, y, **settings, seed=seed + 1000, epochs=epochs, adversarial=objective)
    tuned.mechanism_report = {"pgd_phase": repr(objective), "history": history.epochs}  # type: ignore[assignment]
    return tuned
