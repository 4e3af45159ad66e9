r"""Stochastic binary neurons and the regularisers of Kubo's thesis, chapter 3 (Kubo 2019).

A **stochastic binary neuron** fires with the probability given by the logistic sigmoid of its
net input (thesis eqs 2.10-2.12):

.. math::

    p = \sigma(m a), \qquad h = \mathbb{1}[u < p], \quad u \sim \mathcal{U}[0, 1)

with :math:`a` the pre-activation and :math:`m` the slope. Its forward pass has no gradient; three
estimators train it (DESIGN §9: the logistic sigmoid, not the hard sigmoid of BNN weights):

* ``"ste"``: soft straight-through with slope annealing (eqs 2.12-2.13),
  :math:`\partial h / \partial a := \partial \sigma(m a) / \partial a = m\,\sigma(m a)(1 - \sigma(m a))`,
  with :math:`m = \min(5, 1 + 0.04\,N_{\text{epoch}})` (:func:`annealed_slope`);
* ``"reinforce"``: the REINFORCE-style estimator of Bengio et al. (2013) with its
  variance-minimising baseline (eqs 2.14-2.15), per unit :math:`j` over the batch,

  .. math::

      \widehat{\frac{\partial L}{\partial a_{ij}}} = m\,(h_{ij} - p_{ij})\,(L_i - \bar L_j), \qquad
      \bar L_j = \frac{\sum_i (h_{ij} - p_{ij})^2 L_i}{\sum_i (h_{ij} - p_{ij})^2}

  (:func:`reinforce_gradient`). It needs each sample's loss :math:`L_i`, which a layer cannot
  see: :class:`StochasticNet` (or a model with :class:`StochasticMixin`) taps the logits, and in the
  backward pass recovers :math:`L_i` from the gradient of the logits (for a cross-entropy loss
  :math:`\partial L / \partial z = s\,(\operatorname{softmax}(z) - e_y)`: the one negative entry is
  the label; other losses use the first-order value :math:`\langle \partial L/\partial z, z\rangle`,
  exact for losses linear in the logits). Training and gradient attacks therefore see the same
  score-function gradient the thesis' TensorFlow code computed (a gradient override of the
  sigmoid that ignores the incoming gradient);
* ``"dbn"``: the deterministic binary neuron, :math:`h = \operatorname{round}(\sigma(m a))`, trained
  straight-through like ``"ste"`` (thesis §3.2.1).

Every random layer here subclasses :class:`RandomLayer` and declares ``is_stochastic``; a model with
:class:`StochasticMixin` declares ``is_stochastic`` when any of its layers is random, and
``bpda_surrogate()``: the same network with every random layer replaced by its expected value
(:math:`\sigma(m a)` for a binary neuron), so the evaluation engine attacks it with EOT (20 draws)
and BPDA automatically. ``on_epoch_start`` anneals the slopes from the training loop.

Dropout and weight decay (thesis §3.2.2-3.2.3) need no new code: dropout is the ``dropout``
parameter of the Kubo networks (``dropout_at_test=True`` keeps it on at test time, declared random),
L1 is ``train.l1`` and L2 is ``train.weight_decay`` of the one training loop.

Models registered here: ``kubo_sbn_mlp``, ``kubo_sbn_1cnn``, ``kubo_sbn_2cnn`` (thesis Tables
3.1-3.3 with the dense-100 layer of stochastic binary neurons, ``activation`` choosing the
estimator, or ``"relu"`` for the plain networks with test-time dropout).

References
----------
T. Kubo (2019). *Learning stochastic weight masking to resist adversarial attacks.* PhD thesis,
Dalhousie University, chapters 2-3 (also Kubo, Trappenberg, Canadian AI 2019).
Y. Bengio, N. Léonard, A. Courville (2013). Estimating or propagating gradients through stochastic
neurons for conditional computation. :arxiv:`1308.3432`.
J. Chung, S. Ahn, Y. Bengio (2017). Hierarchical multiscale recurrent neural networks (slope
annealing). ICLR. :arxiv:`1609.01704`.

Examples
--------
>>> import torch
>>> from torch import nn
>>> from neurorobust.mechanisms.stochastic import StochasticBinary, StochasticNet
>>> net = StochasticNet(nn.Sequential(nn.Flatten(), nn.Linear(4, 8), StochasticBinary("ste"), nn.Linear(8, 3)))
>>> net.is_stochastic, net(torch.rand(2, 1, 2, 2)).shape
(True, torch.Size([2, 3]))
>>> net.bpda_surrogate()(torch.rand(2, 1, 2, 2)).shape
torch.Size([2, 3])
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidParameterError
from ..models import MODELS, KuboNet
from ..registry import signature_of
from ..validation import Constraint, Interval, Options, Type, validate_params

__all__ = [
    "ACTIVATIONS",
    "ESTIMATORS",
    "ExpectedValue",
    "RandomLayer",
    "StochasticBinary",
    "StochasticKuboNet",
    "StochasticMixin",
    "StochasticNet",
    "annealed_slope",
    "expected_mode",
    "recover_sample_loss",
    "registered_forwarder",
    "reinforce_gradient",
]

ESTIMATORS = ("ste", "reinforce", "dbn")
ACTIVATIONS = ("relu", *ESTIMATORS)

_KUBO = "Kubo 2019, PhD thesis, Dalhousie, Tables 3.1-3.3 (stochastic binary dense layer, ch. 3)"


def annealed_slope(epoch: int, *, start: float = 1.0, rate: float = 0.04, max_slope: float = 5.0) -> float:
    r"""The slope-annealing schedule of thesis §3.2.1: :math:`m = \min(m_{\max}, m_0 + r\,N_{\text{epoch}})`.

    ``epoch`` is the 0-based epoch index the training loop passes to ``on_epoch_start``
    (so the first epoch trains at :math:`m_0`).

    Examples
    --------
    >>> [annealed_slope(e) for e in (0, 1, 25, 100, 200)]
    [1.0, 1.04, 2.0, 5.0, 5.0]
    """
    validate_params(
        "annealed_slope",
        {
            "epoch": Interval(int, 0, None),
            "start": Interval(float, 0, None, closed="neither"),
            "rate": Interval(float, 0, None),
            "max_slope": Interval(float, 0, None, closed="neither"),
        },
        {"epoch": epoch, "start": start, "rate": rate, "max_slope": max_slope},
    )
    return float(min(max_slope, start + rate * epoch))


# --------------------------------------------------------------------------------------------
# REINFORCE: the estimator, the per-sample loss and the autograd plumbing
# --------------------------------------------------------------------------------------------


def reinforce_gradient(
    h: torch.Tensor, p: torch.Tensor, loss: torch.Tensor, *, baseline: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    r"""Bengio et al.'s REINFORCE estimate of :math:`\partial L_i / \partial a_{ij}` (thesis eqs 2.14-2.15).

    .. math::

        g_{ij} = (h_{ij} - p_{ij})\,(L_i - \bar L_j), \qquad
        \bar L_j = \frac{\sum_i (h_{ij} - p_{ij})^2 L_i}{\sum_i (h_{ij} - p_{ij})^2 + \varepsilon}

    Parameters
    ----------
    h : torch.Tensor of shape (N, ...)
        The binary samples.
    p : torch.Tensor of shape (N, ...)
        Their firing probabilities :math:`\sigma(a)`.
    loss : torch.Tensor of shape (N,)
        Each sample's loss (the reward).
    baseline : bool, default=True
        Subtract the per-unit baseline :math:`\bar L_j` over the batch (eq 2.15); ``False`` gives the
        plain estimator :math:`(h - p) L` (unbiased; the baseline adds an O(1/N) bias, as in the
        thesis' code).

    Returns
    -------
    torch.Tensor of the shape of ``h``
        Multiply by the slope :math:`m` for the gradient with respect to :math:`a` when
        :math:`p = \sigma(m a)`.
    """
    diff = h - p
    rewards = loss.reshape(-1, *([1] * (h.dim() - 1))).to(diff.dtype)
    if not baseline:
        return diff * rewards
    w = diff.pow(2)
    lbar = (w * rewards).sum(0, keepdim=True) / (w.sum(0, keepdim=True) + eps)
    return diff * (rewards - lbar)


def recover_sample_loss(logits: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Each sample's loss and loss scale, read off the gradient of a loss with respect to the logits.

    For cross-entropy in any positive scale :math:`s` (a batch mean, a sum, a mean over EOT draws),
    :math:`\partial L / \partial z = s\,(\operatorname{softmax}(z) - e_y)` has exactly one negative
    entry, at the label :math:`y` (or the target of a targeted attack that descends it), and all
    others positive: then
    :math:`L_i = \mathrm{CE}(z_i, y_i)` and :math:`s_i = g_{iy}/(p_{iy} - 1)`. A row without that
    pattern (another loss) takes the first-order value :math:`\langle g_i, z_i\rangle / \bar s`, exact
    for losses linear in the logits (e.g. the margin), with :math:`\bar s` the median scale of the
    cross-entropy rows (1 if none); an all-zero row gets loss 0.

    Returns
    -------
    loss, scale : torch.Tensor of shape (N,)
    """
    z, g = logits.detach(), grad.detach()
    probs = torch.softmax(z, dim=1)
    label = g.argmin(dim=1)
    # cross-entropy: one negative entry (the label) and every other entry positive (a softmax > 0)
    ce_like = ((g < 0).sum(dim=1) == 1) & ((g > 0).sum(dim=1) == g.shape[1] - 1)
    g_y = g.gather(1, label[:, None]).squeeze(1)
    p_y = probs.gather(1, label[:, None]).squeeze(1)
    s_ce = g_y / (p_y - 1).clamp(max=-1e-12)
    common = s_ce[ce_like].median() if bool(ce_like.any()) else torch.ones((), dtype=z.dtype, device=z.device)
    ce = F.cross_entropy(z, label, reduction="none")
    linear = (g * z).sum(dim=1) / common.clamp(min=1e-30)
    loss = torch.where(ce_like, ce, linear)
    scale = torch.where(ce_like, s_ce, common.expand_as(s_ce))
    return loss, scale


class _RewardSlot:
    """Filled in the backward pass by the loss tap: each sample's loss and scale."""

    __slots__ = ("loss", "scale")

    def __init__(self) -> None:
        self.loss: torch.Tensor | None = None
        self.scale: torch.Tensor | None = None


class _ReinforceFn(torch.autograd.Function):
    """Forward: the binary sample; backward: the REINFORCE estimate (the incoming gradient is ignored)."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, h: torch.Tensor, p: torch.Tensor, info: tuple) -> torch.Tensor:  # type: ignore[override]
        slot, slope, baseline = info
        ctx.save_for_backward(h, p)
        ctx.info = (slot, slope, baseline)
        return h.clone()

    @staticmethod
    def backward(ctx: Any, grad_h: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:  # type: ignore[override]
        h, p = ctx.saved_tensors
        slot, slope, baseline = ctx.info
        if slot is None or slot.loss is None or slot.scale is None:
            raise RuntimeError(
                "StochasticBinary('reinforce') needs each sample's loss in its backward pass: put the layer in a model "
                "wrapped by neurorobust.mechanisms.stochastic.StochasticNet (or one using StochasticMixin), whose "
                "output it taps"
            )
        g = reinforce_gradient(h, p, slot.loss, baseline=baseline)
        scale = slot.scale.reshape(-1, *([1] * (h.dim() - 1))).to(g.dtype)
        return slope * scale * g, None, None, None


class _LossTapFn(torch.autograd.Function):
    """Identity on the logits; its backward recovers each sample's loss for the REINFORCE layers."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, slots: list[_RewardSlot]) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(logits)
        ctx.slots = slots
        return logits.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (logits,) = ctx.saved_tensors
        loss, scale = recover_sample_loss(logits, grad)
        for slot in ctx.slots:
            slot.loss, slot.scale = loss, scale
        return grad, None


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


class RandomLayer(nn.Module):
    """Base of every random or non-differentiable layer of the stochastic/SGBN family.

    A subclass declares ``is_stochastic`` (random in eval mode), computes its expected value when
    ``self.expected`` is set (the BPDA surrogate, see :func:`expected_mode`), and may follow the
    training loop's epochs (:meth:`set_epoch`).
    """

    expected: bool = False

    @property
    def is_stochastic(self) -> bool:
        return False

    @property
    def needs_surrogate(self) -> bool:
        """True when the layer blocks or fakes gradients (a sampler or quantiser): BPDA then helps.
        Layers that are random but differentiable (dropout, SAP, weight noise) need EOT only."""
        return True

    def set_epoch(self, epoch: int) -> None:
        """Called by the model's ``on_epoch_start`` before each training epoch (0-based)."""


class StochasticBinary(RandomLayer):
    r"""Stochastic (or deterministic) binary neurons on the pre-activation ``a`` (any shape).

    .. math::

        p = \sigma(m a), \qquad
        h = \begin{cases} \mathbb{1}[u < p],\ u \sim \mathcal U[0, 1) & \text{'ste', 'reinforce'} \\
        \operatorname{round}(p) & \text{'dbn'} \end{cases}

    with the gradients of the module docstring. :math:`m` (``slope``) follows
    :func:`annealed_slope` when ``anneal`` is on (default for ``'ste'`` and ``'dbn'``).

    Parameters
    ----------
    estimator : {'ste', 'reinforce', 'dbn'}, default='ste'
    slope : float, default=1.0
        :math:`m_0`, the slope at epoch 0.
    slope_rate : float, default=0.04
        Increase of the slope per epoch.
    max_slope : float, default=5.0
    anneal : bool or None, default=None
        Anneal the slope over epochs; ``None`` means on for ``'ste'`` and ``'dbn'``, off for
        ``'reinforce'`` (the thesis anneals the soft STE only).
    at_test : bool, default=True
        Sample in eval mode too (the stochastic networks of the thesis); ``False`` thresholds
        :math:`p` at 1/2 in eval mode (deterministic).
    baseline : bool, default=True
        REINFORCE's variance-minimising baseline (eq 2.15).

    Attributes
    ----------
    slope : torch.Tensor
        Buffer holding the current :math:`m` (saved with the weights).

    Notes
    -----
    Samples come from the global torch generator (as ``nn.Dropout``'s do): seed it with
    ``torch.manual_seed`` for repeatable draws.
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "estimator": Options(ESTIMATORS),
        "slope": Interval(float, 0, None, closed="neither"),
        "slope_rate": Interval(float, 0, None),
        "max_slope": Interval(float, 0, None, closed="neither"),
        "anneal": Type(bool, optional=True),
        "at_test": Type(bool),
        "baseline": Type(bool),
    }

    def __init__(
        self,
        estimator: str = "ste",
        *,
        slope: float = 1.0,
        slope_rate: float = 0.04,
        max_slope: float = 5.0,
        anneal: bool | None = None,
        at_test: bool = True,
        baseline: bool = True,
    ) -> None:
        validate_params("StochasticBinary", self._parameter_constraints, locals())
        if slope > max_slope:
            raise InvalidParameterError("slope", "StochasticBinary", f"at most max_slope={max_slope:g}", slope)
        super().__init__()
        self.estimator = estimator
        self.slope_start, self.slope_rate, self.max_slope = float(slope), float(slope_rate), float(max_slope)
        self.anneal = (estimator != "reinforce") if anneal is None else anneal
        self.at_test = at_test
        self.baseline = baseline
        self.register_buffer("slope", torch.tensor(float(slope)))
        self._collector: list[_RewardSlot] | None = None

    @property
    def is_stochastic(self) -> bool:
        return self.estimator != "dbn" and self.at_test

    def extra_repr(self) -> str:
        return f"estimator={self.estimator!r}, slope={float(self.slope):g}, anneal={self.anneal}"

    def set_epoch(self, epoch: int) -> None:
        if self.anneal:
            m = annealed_slope(epoch, start=self.slope_start, rate=self.slope_rate, max_slope=self.max_slope)
            self.slope.fill_(m)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        m = float(self.slope)
        p = torch.sigmoid(m * a)
        if self.expected:
            return p
        if self.estimator == "dbn":
            return p + (torch.round(p) - p).detach()
        hard = (torch.rand_like(p) < p).to(p.dtype) if self.training or self.at_test else (p > 0.5).to(p.dtype)
        if self.estimator == "ste":
            return p + (hard - p).detach()
        slot = _RewardSlot()
        if self._collector is not None:
            self._collector.append(slot)
            info = (slot, m, self.baseline)
        else:
            info = (None, m, self.baseline)
        return _ReinforceFn.apply(a, hard, p.detach(), info)


class TestTimeDropout(RandomLayer):
    """Inverted dropout that stays on in eval mode when ``at_test`` (thesis §3.2.2 option)."""

    __test__ = False  # not a pytest class

    def __init__(self, p: float = 0.5, *, at_test: bool = False) -> None:
        validate_params("TestTimeDropout", {"p": Interval(float, 0, 1, closed="left"), "at_test": Type(bool)}, locals())
        super().__init__()
        self.p, self.at_test = float(p), at_test

    @property
    def is_stochastic(self) -> bool:
        return self.at_test and self.p > 0

    @property
    def needs_surrogate(self) -> bool:
        return False

    def extra_repr(self) -> str:
        return f"p={self.p:g}, at_test={self.at_test}"

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.expected or self.p == 0:
            return h
        return F.dropout(h, self.p, training=self.training or self.at_test)


# --------------------------------------------------------------------------------------------
# Models: declarations, the expected-value surrogate, the REINFORCE tap
# --------------------------------------------------------------------------------------------


def _random_layers(model: nn.Module) -> list[RandomLayer]:
    return [m for m in model.modules() if isinstance(m, RandomLayer)]


@contextlib.contextmanager
def expected_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every :class:`RandomLayer` of ``model`` returns its expected value (restored after)."""
    layers = _random_layers(model)
    before = [layer.expected for layer in layers]
    try:
        for layer in layers:
            layer.expected = True
        yield model
    finally:
        for layer, flag in zip(layers, before, strict=True):
            layer.expected = flag


class ExpectedValue(nn.Module):
    r"""The BPDA surrogate of a model with random layers: the same weights, each layer at its expected value.

    .. math::

        g(x) = f\big(x;\ h \mapsto \mathbb{E}[h]\big), \quad \text{e.g. } \mathbb{E}[h] = \sigma(m a)

    For a stochastic binary layer this is the straight-through path of the soft STE; for SGBN gates
    the soft mask :math:`\sigma(\cdot)` (the deterministic SGBN of thesis §4.6.1); SAP and DropConnect
    are the identity in expectation.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with expected_mode(self.model):
            return self.model(x)


class StochasticMixin:
    """Declarations for an ``nn.Module`` built from :class:`RandomLayer` s (mix into the model class).

    * ``is_stochastic``: any random layer is random in eval mode (settable, e.g. by
      :func:`neurorobust.declare`);
    * ``bpda_surrogate()``: :class:`ExpectedValue` of the model, declared when a layer blocks or fakes
      gradients (``needs_surrogate``; ``None`` otherwise, so EOT alone is used);
    * ``on_epoch_start(x, epoch)``: anneals the slopes (the training loop calls it);
    * :meth:`_tapped`: runs the forward pass so that REINFORCE layers receive each sample's loss.
    """

    _declared_stochastic: bool | None = None
    _declared_surrogate: Callable[[], nn.Module] | None = None

    def random_layers(self) -> list[RandomLayer]:
        return _random_layers(cast(nn.Module, self))

    @property
    def is_stochastic(self) -> bool:
        if self._declared_stochastic is not None:
            return self._declared_stochastic
        return any(layer.is_stochastic for layer in self.random_layers())

    @is_stochastic.setter
    def is_stochastic(self, value: bool) -> None:
        self._declared_stochastic = bool(value)

    @property
    def bpda_surrogate(self) -> Callable[[], nn.Module] | None:
        """A callable returning the differentiable stand-in, or ``None`` when none is needed."""
        if self._declared_surrogate is not None:
            return self._declared_surrogate
        if not any(layer.needs_surrogate for layer in self.random_layers()):
            return None
        model = cast(nn.Module, self)
        return lambda: ExpectedValue(model)

    @bpda_surrogate.setter
    def bpda_surrogate(self, fn: Callable[[], nn.Module]) -> None:
        self._declared_surrogate = fn

    def on_epoch_start(self, x: torch.Tensor, epoch: int) -> None:
        for layer in self.random_layers():
            layer.set_epoch(epoch)

    def _tapped(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        reinforce = [m for m in self.random_layers() if isinstance(m, StochasticBinary) and m.estimator == "reinforce"]
        if not reinforce or not torch.is_grad_enabled():
            return fn(x)
        slots: list[_RewardSlot] = []
        for layer in reinforce:
            layer._collector = slots
        try:
            logits = fn(x)
        finally:
            for layer in reinforce:
                layer._collector = None
        return _LossTapFn.apply(logits, slots) if slots else logits


class StochasticNet(StochasticMixin, nn.Module):
    """Wrap any classifier that contains :class:`RandomLayer` s so that it declares how to attack it.

    Parameters
    ----------
    net : nn.Module
        Images to logits; may contain :class:`StochasticBinary` layers of any estimator (REINFORCE
        layers get their per-sample losses from this wrapper).
    """

    def __init__(self, net: nn.Module) -> None:
        if not isinstance(net, nn.Module):
            raise InvalidParameterError("net", "StochasticNet", "an nn.Module", net)
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._tapped(self.net, x)


class StochasticKuboNet(StochasticMixin, KuboNet):
    r"""Kubo's MLP / 1CNN / 2CNN (thesis Tables 3.1-3.3) with a chosen hidden activation.

    conv 32x5x5 stride 2 (ReLU), conv 64x5x5 stride 2 (ReLU) for ``n_conv`` = 1, 2; dense ``hidden``
    with ``activation``; optional dropout; dense ``num_classes`` (softmax cross-entropy). Xavier
    initialisation as the thesis.

    Parameters
    ----------
    input_shape : tuple of int, default=(1, 28, 28)
    num_classes : int, default=10
    n_conv : {0, 1, 2}, default=2
    hidden : int, default=100
    activation : {'ste', 'reinforce', 'dbn', 'relu'}, default='ste'
        Stochastic binary neurons with an estimator (:class:`StochasticBinary`), or ReLU.
    dropout : float, default=0.0
        Inverted dropout after the hidden layer.
    dropout_at_test : bool, default=False
        Keep dropout on at test time (declared random: attacked with EOT).
    slope_rate, max_slope : float, default=0.04, 5.0
        Slope annealing (:func:`annealed_slope`).
    binary_at_test : bool, default=True
        Binary neurons sample at test time too.

    Examples
    --------
    >>> net = StochasticKuboNet(n_conv=1, activation="reinforce")
    >>> net.is_stochastic, net(torch.zeros(2, 1, 28, 28)).shape
    (True, torch.Size([2, 10]))
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        **KuboNet._parameter_constraints,
        "activation": Options(ACTIVATIONS),
        "dropout_at_test": Type(bool),
        "slope_rate": Interval(float, 0, None),
        "max_slope": Interval(float, 1, None),
        "binary_at_test": Type(bool),
    }

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        *,
        n_conv: int = 2,
        hidden: int = 100,
        activation: str = "ste",
        dropout: float = 0.0,
        dropout_at_test: bool = False,
        slope_rate: float = 0.04,
        max_slope: float = 5.0,
        binary_at_test: bool = True,
    ) -> None:
        validate_params("StochasticKuboNet", self._parameter_constraints, locals())
        super().__init__(input_shape, num_classes, n_conv=n_conv, hidden=hidden, dropout=dropout)
        self.activation = activation
        self.binary = (
            None
            if activation == "relu"
            else StochasticBinary(activation, slope_rate=slope_rate, max_slope=max_slope, at_test=binary_at_test)
        )
        self.dropout = TestTimeDropout(dropout, at_test=dropout_at_test)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        a = self.hidden(self.features(x))
        h = torch.relu(a) if self.binary is None else self.binary(a)
        return self.out(self.dropout(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self._tapped(self._logits, x)


def registered_forwarder(
    cls: type[nn.Module], name: str, summary: str, fixed: dict[str, Any] | None = None
) -> Callable[..., nn.Module]:
    """A model-registry constructor that forwards its keyword arguments to ``cls`` (with ``fixed`` set).

    It shows ``cls``'s signature without ``fixed`` (``__signature__``), so ``Registry.create`` still
    rejects keys the class does not take and lists the parameters with their defaults.
    """
    fixed = dict(fixed or {})

    @signature_of(cls, drop=tuple(fixed), returns=nn.Module)
    def build(*args: Any, **params: Any) -> nn.Module:
        return cls(*args, **fixed, **params)

    build.__doc__ = summary
    build.__name__ = build.__qualname__ = name
    return build


_kubo_sbn = registered_forwarder(
    StochasticKuboNet,
    "_kubo_sbn",
    "Kubo's MLP/1CNN/2CNN with a dense-100 layer of stochastic binary neurons (STE, REINFORCE, DBN) or ReLU.",
)
for _name, _n in (("kubo_sbn_mlp", 0), ("kubo_sbn_1cnn", 1), ("kubo_sbn_2cnn", 2)):
    MODELS.register(_name, defaults={"n_conv": _n}, paper=_KUBO)(_kubo_sbn)
del _name, _n
