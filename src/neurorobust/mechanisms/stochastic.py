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
parameter of the Kubo networks (``test_dropout=True`` keeps it on at test time, declared random),
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
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidParameterError
from ..models import MODELS, KuboNet
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
    sample_at_eval : bool, default=True
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
        "sample_at_eval": Type(bool),
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
        sample_at_eval: bool = True,
        baseline: bool = True,
    ) -> None:
        validate_params("StochasticBinary", self._parameter_constraints, locals())
        if slope > max_slope:
            raise InvalidParameterError("slope", "StochasticBinary", f"at most max_slope={max_slope:g}", slope)
        super().__init__()
        self.estimator = estimator
        self.slope_start, self.slope_rate, self.max_slope = float(slope), float(slope_rate), float(max_slope)
        self.anneal = (estimator != "reinforce") if anneal is None else anneal
        self.sample_at_eval = sample_at_eval
        self.baseline = baseline
        self.register_buffer("slope", torch.tensor(float(slope)))
        self._collector: list[_RewardSlot] | None = None

    @property
    def is_stochastic(self) -> bool:
        return self.estimator != "dbn" and self.sample_at_eval

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
        hard = (torch.rand_like(p) < p).to(p.dtype) if self.training or self.sample_at_eval else (p > 0.5).to(p.dtype)
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
        assert isinstance(self, nn.Module)
        return _random_layers(self)

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
        model = self
        assert isinstance(model, nn.Module)
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
    test_dropout : bool, default=False
        Keep dropout on at test time (declared random: attacked with EOT).
    slope_rate, max_slope : float, default=0.04, 5.0
        Slope annealing (:func:`annealed_slope`).
    sample_at_eval : bool, default=True
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
        "test_dropout": Type(bool),
        "slope_rate": Interval(float, 0, None),
        "max_slope": Interval(float, 1, None),
        "sample_at_eval": Type(bool),
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
        test_dropout: bool = False,
        slope_rate: float = 0.04,
        max_slope: float = 5.0,
        sample_at_eval: bool = True,
    ) -> None:
        validate_params("StochasticKuboNet", self._parameter_constraints, locals())
        super().__init__(input_shape, num_classes, n_conv=n_conv, hidden=hidden, dropout=dropout)
        self.activation = activation
        self.binary = (
            None
            if activation == "relu"
            else StochasticBinary(activation, slope_rate=slope_rate, max_slope=max_slope, sample_at_eval=sample_at_eval)
        )
        self.dropout = TestTimeDropout(dropout, at_test=test_dropout)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        a = self.hidden(self.features(x))
        h = torch.relu(a) if self.binary is None else self.binary(a)
        return self.out(self.dropout(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self._tapped(self._logits, x)


def _kubo_sbn(
    input_shape: Sequence[int] = (1, 28, 28),
    num_classes: int = 10,
    n_conv: int = 2,
    hidden: int = 100,
    activation: str = "ste",
    dropout: float = 0.0,
    test_dropout: bool = False,
    slope_rate: float = 0.04,
    max_slope: float = 5.0,
    sample_at_eval: bool = True,
) -> nn.Module:
    """Kubo's MLP/1CNN/2CNN with a dense-100 layer of stochastic binary neurons (STE, REINFORCE, DBN) or ReLU."""
    return StochasticKuboNet(
        input_shape,
        num_classes,
        n_conv=n_conv,
        hidden=hidden,
        activation=activation,
        dropout=dropout,
        test_dropout=test_dropout,
        slope_rate=slope_rate,
        max_slope=max_slope,
        sample_at_eval=sample_at_eval,
    )


if __name__ != "__main__":  # `python -m` runs this file again as __main__; the package import registered them
    for _name, _n in (("kubo_sbn_mlp", 0), ("kubo_sbn_1cnn", 1), ("kubo_sbn_2cnn", 2)):
        MODELS.register(_name, defaults={"n_conv": _n}, paper=_KUBO)(_kubo_sbn)
    del _name, _n


# --------------------------------------------------------------------------------------------
# Tables and figures of docs/stochastic.md, from the results store (python -m neurorobust.mechanisms.stochastic)
# --------------------------------------------------------------------------------------------


def _kubo_rows(store: Any, experiment: str) -> list[dict[str, Any]]:
    from ..report.build import latest_rows

    return latest_rows(store.results(experiment=experiment, done_only=True))


def _same_eps(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) < 1e-9)


def _cell(rows: list[dict[str, Any]], model: str, attack: str, eps: float | None, metric: str = "accuracy") -> str:
    for r in rows:
        if r["model"] == model and r["attack"] == attack and r["metric"] == metric and r["value"] is not None:
            if (eps is None and r["eps"] is not None) or (
                eps is not None and (r["eps"] is None or abs(r["eps"] - eps) > 1e-9)
            ):
                continue
            sd, seeds = r["params"].get("sd"), r["params"].get("seeds", 1)
            return f"{100 * r['value']:.1f}" + (f" ± {100 * sd:.1f}" if seeds > 1 and sd is not None else "")
    return "—"


def _thesis(claims: dict[tuple[str, str, str, float | None], Any], model: str, attack: str, eps: float | None) -> str:
    c = claims.get((model, attack, None if eps is None else round(eps, 4)))
    return "—" if c is None else f"{c.value:g}" + (f" ± {c.sd:g}" if c.sd else "")


def _claims_index(experiment: str) -> dict[tuple[str, str, float | None], Any]:
    from ..claims import load_claims
    from ..data.search import REPO_ROOT

    out = {}
    for c in load_claims(REPO_ROOT / "claims" / "kubo.toml").claims:
        if c.experiment == experiment and c.kind == "absolute":
            out[(c.model, c.attack, None if c.eps is None else round(c.eps, 4))] = c
    return out


def _verdicts(rows: list[dict[str, Any]]) -> dict[str, str]:
    return {r["model"]: r["params"].get("verdict", "") for r in rows if r["attack"] == "checklist"}


def _md(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def _curves(
    rows: list[dict[str, Any]], models: list[str], attack: str, path: Any, title: str, styles: Any = None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..report.figures import distinct_styles, save_with_legend

    fig, ax = plt.subplots(figsize=(5.8, 3.9), dpi=110)
    ax.set_prop_cycle(distinct_styles())
    for model in models:
        att = attack(model) if callable(attack) else attack
        pts = sorted(
            (r["eps"], r["value"], r["params"].get("sd") or 0.0)
            for r in rows
            if r["model"] == model and r["attack"] == att and r["metric"] == "accuracy" and r["eps"] is not None
        )
        if not pts:
            continue
        xs, ys, sds = zip(*pts, strict=True)
        style = (styles(model),) if styles else ()
        line = ax.plot(xs, [100 * v for v in ys], *style, marker="o", ms=3, label=model)[0]
        lo = [100 * (v - s) for v, s in zip(ys, sds, strict=True)]
        hi = [100 * (v + s) for v, s in zip(ys, sds, strict=True)]
        ax.fill_between(xs, lo, hi, alpha=0.12, color=line.get_color())
    ax.set_xlabel("FGSM eps" if "fgsm" in str(title).lower() else "eps")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    save_with_legend(fig, ax, path, len(models), fontsize=7, beside_fontsize=7)
    plt.close(fig)


def _train_accuracy(store: Any, experiment: str, runs_dir: Any) -> dict[str, list[float]]:
    """Per model label, the last epoch's (running) training accuracy of each seed, from the checkpoints."""
    import json
    from pathlib import Path

    out: dict[str, dict[int, float]] = {}
    for run in store.runs(name=experiment):
        if run["status"] != "done" or not run.get("train_key"):
            continue
        info = Path(runs_dir) / "checkpoints" / f"{run['train_key']}.json"
        if not info.is_file():
            continue
        meta = json.loads(info.read_text())
        spec = meta.get("spec", {})
        history = meta.get("history") or []
        label = json.loads(run["spec"]).get("label", "") if isinstance(run["spec"], str) else run["spec"].get("label")
        if history and "train_acc" in history[-1] and label:
            out.setdefault(label, {})[spec.get("seed", 0)] = history[-1]["train_acc"]
    return {k: list(v.values()) for k, v in out.items()}


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "—"
    t = torch.tensor(values, dtype=torch.float64)
    sd = float(t.std()) if len(values) > 1 else 0.0
    return f"{100 * float(t.mean()):.1f}" + (f" ± {100 * sd:.1f}" if len(values) > 1 else "")


def kubo_report(store_path: str = "runs/results.db", figures: str = "docs/figures", runs_dir: str = "runs") -> str:
    """Markdown tables (ours next to the thesis') and figures for docs/stochastic.md, from the store."""
    from pathlib import Path

    from ..report.build import claims_table
    from ..store import ResultsStore

    fig_dir = Path(figures)
    parts: list[str] = []
    with ResultsStore(store_path) as st:
        known = set(st.experiments())
        for exp in ("stochastic_mnist", "stochastic_mnist_full"):
            if exp not in known:
                continue
            rows = _kubo_rows(st, exp)
            claims = _claims_index(exp)
            verdict = _verdicts(rows)
            train = _train_accuracy(st, exp, runs_dir)
            models = sorted({r["model"] for r in rows if not r["model"].endswith("[EOT/BPDA]")})
            body = []
            for m in sorted(models, key=lambda s: (not s.endswith(("-1CNN", "-MLP", "-2CNN")), s)):
                e = f"{m} [EOT/BPDA]"
                body.append(
                    [
                        m,
                        _mean_sd(train.get(m, [])),
                        _cell(rows, m, "clean", None),
                        _thesis(claims, m, "clean", None),
                        _cell(rows, m, "fgsm-1draw", 0.09),
                        _cell(rows, m, "fgsm-1draw", 0.13),
                        _cell(rows, m, "fgsm-1draw", 0.25),
                        _thesis(claims, m, "fgsm-1draw", 0.25),
                        _cell(rows, e, "fgsm", 0.25),
                        _cell(rows, e, "pgd-20", 0.25),
                        _cell(rows, e, "worst-case", 0.25),
                        verdict.get(e, "—"),
                    ]
                )
            header = [
                "network", "train acc (last epoch)", "test acc", "thesis test", "FGSM 1 draw, eps .09", ".13", ".25",
                "thesis .25", "FGSM EOT/BPDA .25", "PGD-20 EOT/BPDA .25", "worst case .25", "checklist (seed 0)",
            ]  # fmt: skip
            parts.append(f"### {exp}: chapter-3 networks (accuracy %, mean ± sd over seeds)\n\n" + _md(header, body))
            groups = {
                "dropout": [m for m in models if m == "1CNN" or "dropout" in m],
                "l1": [m for m in models if m == "1CNN" or " L1 " in m],
                "l2": [m for m in models if m == "1CNN" or " L2 " in m],
            }
            for name, ms in groups.items():
                _curves(rows, ms, "fgsm-1draw", fig_dir / f"stochastic_{name}.png", f"{exp}: FGSM (one draw), {name}")
            binary = [m for m in models if m.endswith(("-1CNN", "-MLP", "-2CNN"))]
            both = binary + [f"{m} [EOT/BPDA]" for m in binary]
            _curves(
                rows,
                both,
                lambda m: "fgsm" if m.endswith("[EOT/BPDA]") else "fgsm-1draw",
                fig_dir / "stochastic_binary.png",
                f"{exp}: FGSM, one draw (solid) and EOT/BPDA (dashed)",
                styles=lambda m: "--" if m.endswith("[EOT/BPDA]") else "-",
            )
            parts.append(_claims_md(claims_table(exp, rows), exp))
        for exp in ("sgbn_mnist", "sgbn_mnist_full", "sgbn_cifar10", "sgbn_cifar10_full"):
            if exp not in known:
                continue
            rows = _kubo_rows(st, exp)
            claims = _claims_index(exp)
            verdict = _verdicts(rows)
            models = [m for m in sorted({r["model"] for r in rows}) if not m.endswith("[EOT/BPDA]")]
            order = [
                "SGBN",
                "1W-SGBN",
                "SGBN (DT)",
                "SGBN ±1",
                "SGBN shuffled",
                "BNN+PGD",
                "BNN (ST)+PGD",
                "SAP",
                "CNN-BIN",
            ]
            models.sort(key=lambda m: next((i for i, o in enumerate(order) if m.startswith(o)), 99))
            body = []
            for m in models:
                e = f"{m} [EOT/BPDA]"
                row = [m, _cell(rows, m, "clean", None) + " (" + _thesis(claims, m, "clean", None) + ")"]
                for eps in (0.1, 0.2, 0.3):
                    row.append(_cell(rows, m, "fgsm-1draw", eps) + " (" + _thesis(claims, m, "fgsm-1draw", eps) + ")")
                row += [_cell(rows, e, "fgsm", 0.3), _cell(rows, e, "worst-case", 0.3), verdict.get(e, "—")]
                body.append(row)
            header = [
                "network", "clean (thesis)", "FGSM 1 draw .1 (thesis)", ".2 (thesis)", ".3 (thesis)",
                "FGSM EOT/BPDA .3", "worst case .3", "checklist (seed 0)",
            ]  # fmt: skip
            parts.append(f"### {exp}: Table 4.11 (accuracy %, mean ± sd over seeds)\n\n" + _md(header, body))
            _curves(
                rows, models, "fgsm-1draw", fig_dir / f"{exp.replace('_full', '')}_fgsm.png", f"{exp}: FGSM, one draw"
            )
            if "mnist" in exp:
                iterative = [m for m in models if _cell(rows, m, "bim-1draw", 0.1) != "—"]
                body = []
                for m in iterative:
                    e = f"{m} [EOT/BPDA]"
                    body.append(
                        [m]
                        + [_cell(rows, m, f"{a}-1draw", eps) for a in ("bim", "ill") for eps in (0.06, 0.1)]
                        + [_cell(rows, e, a, eps) for a in ("bim", "ill") for eps in (0.06, 0.1)]
                        + [_thesis(claims, m, "bim-1draw", 0.06), _thesis(claims, m, "bim-1draw", 0.1)]
                    )
                header = ["network"] + [f"{a} 1 draw {eps:g}" for a in ("BIM", "ILL") for eps in (0.06, 0.1)]
                header += [f"{a} EOT/BPDA {eps:g}" for a in ("BIM", "ILL") for eps in (0.06, 0.1)]
                header += ["thesis BIM .06", "thesis BIM .1"]
                parts.append(f"### {exp}: BIM and ILL, T = 10 (Fig. 4.4)\n\n" + _md(header, body))
                _curves(rows, iterative, "bim-1draw", fig_dir / "sgbn_bim.png", f"{exp}: BIM (T = 10), one draw")
                _curves(rows, iterative, "ill-1draw", fig_dir / "sgbn_ill.png", f"{exp}: ILL (T = 10), one draw")
                sources = ["SGBN", "SAP", "BNN+PGD", "CNN-BIN", "CNN"]
                src_labels = {s: next((m for m in models if m.split(" (reduced")[0] == s), s) for s in sources}
                body = []
                for m in models:
                    cells = [
                        _cell(rows, m, f"transfer from {src_labels[s]} (1 draw)", 0.3)
                        + " ("
                        + _thesis(claims, m, f"transfer from {src_labels[s]} (1 draw)", 0.3)
                        + ")"
                        for s in sources
                    ]
                    eot = [_cell(rows, f"{m} [EOT/BPDA]", f"transfer from {src_labels[s]}", 0.3) for s in sources]
                    if any(c != "— (—)" for c in cells):
                        body.append([m, *cells, " / ".join(eot)])
                header = ["target \\ source", *sources, "EOT/BPDA on the source (same order)"]
                parts.append(
                    f"### {exp}: FGSM eps 0.3 transferred between models (Table 4.8; ours (thesis))\n\n"
                    + _md(header, body)
                )
            parts.append(_claims_md(claims_table(exp, rows), exp))
    return "\n\n".join(p for p in parts if p)


def _claims_md(table: tuple[list[str], list[list[str]]] | None, exp: str) -> str:
    """The claims table with one more column: the DESIGN §7 rule applied at this (reduced) scale."""
    if table is None:
        return ""
    from ..claims import Claim, judge, load_claims
    from ..data.search import REPO_ROOT

    by_id = {f"kubo:{c.id}": c for c in load_claims(REPO_ROOT / "claims" / "kubo.toml").claims}
    _, body = table
    out = []
    for row in body:
        c: Claim | None = by_id.get(row[0])
        at_scale = ""
        if c is not None and row[8] == "not comparable" and c.kind == "absolute" and row[7] != "—":
            at_scale = judge(c.model_copy(update={"comparable": True, "reason": ""}), float(row[7])).verdict
        out.append([row[0].removeprefix("kubo:"), *row[1:3], *row[4:9], at_scale or "—"])
    head = ["claim", "table / row", "model", "attack", "eps", "thesis", "ours", "verdict", "rule applied at this scale"]
    return f"#### Claims of `claims/kubo.toml` for {exp}\n\n" + _md(head, out)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m neurorobust.mechanisms.stochastic [--store PATH] [--figures DIR]``: print docs tables."""
    import argparse

    parser = argparse.ArgumentParser(description="Tables and figures of docs/stochastic.md from the results store")
    parser.add_argument("--store", default="runs/results.db")
    parser.add_argument("--figures", default="docs/figures")
    parser.add_argument("--runs", default="runs", help="runs folder with checkpoints/ (training accuracies)")
    args = parser.parse_args(argv)
    import sys

    sys.stdout.write(kubo_report(args.store, args.figures, args.runs) + "\n")


if __name__ == "__main__":
    main()
