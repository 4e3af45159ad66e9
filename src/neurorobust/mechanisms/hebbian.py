r"""Local unsupervised Hebbian learning with winner-takes-all (Krotov & Hopfield, PNAS 2019).

A hidden layer of :math:`H` units with synapses :math:`W \in \mathbb{R}^{H \times D}` learns
from unlabelled inputs :math:`v \in \mathbb{R}^D` with a local rule; a frozen copy then feeds a
power nonlinearity and a supervised read-out trained with the one training loop
(:func:`~neurorobust.training.fit`). This is the learning model whose representation spectra
Holzhausen et al. (seed 001) study.

**Currents** (the p-norm "bracket" of the rule):

.. math::

    I_\mu = \langle W_\mu, v\rangle_\mu = \sum_i \operatorname{sign}(W_{\mu i})\,|W_{\mu i}|^{p-1} v_i .

**Competition**: per input, the unit with the largest current gets :math:`g = +1`, the unit ranked
:math:`k`-th gets :math:`g = -\Delta` (anti-Hebbian), all others :math:`g = 0` (ranked on
:math:`I` itself, as both the authors' codes rank).

**Update**, summed over a mini-batch :math:`b` (the authors' vectorised form) and normalised by
its largest entry:

.. math::

    \Delta W_{\mu i} = \sum_b g_{b\mu}\bigl(R^p\, v_{bi} - I_{b\mu} W_{\mu i}\bigr),\qquad
    W \leftarrow W + \varepsilon_e \,\frac{\Delta W}{\max(\max_{\mu i}|\Delta W_{\mu i}|,\ 10^{-30})},

with the learning rate annealed linearly over the :math:`N_e` epochs,
:math:`\varepsilon_e = \varepsilon_0 (1 - e / N_e)` (:func:`~neurorobust.training.loop.lr_at`,
``schedule="linear"``). Under this rule every unit that keeps winning converges to the sphere
:math:`\|W_\mu\|_p = R` (:math:`d\|W_\mu\|_p^p/dt \propto g\,I_\mu\,(R^p - \|W_\mu\|_p^p)`).

**Convergence**, as the authors judge it (their ``weight_convergence_criterion``): a unit has converged
when :math:`|\,\|W_\mu\|_p - R\,| \le 0.01`, the layer when fewer than 10% of its units have not
(:func:`converged_units`, :func:`layer_converged`). The fraction of converged units is recorded after
every unsupervised epoch (the layer's ``learn`` summary, ``HebbianNet.convergence``) and stored with
every evaluation (attack ``kh-convergence``).

**Classifier** (Holzhausen et al.'s ``KHModel``; Krotov & Hopfield's read-out form):

.. math::

    \text{logits} = U\,\mathrm{ReLU}(I)^{n} + b,

with :math:`n = 4.5`, trained with cross-entropy and Adam while :math:`W` stays frozen. Inputs
are divided by their own :math:`L_p` norm first (``input_norm="lp"``, the authors' ``LpUnitMNIST``
/ ``LpUnitCIFAR10``), inside the model, so attacks see images in [0, 1].

Legend: ``hidden`` = :math:`H`, ``p``, ``k``, ``delta`` = :math:`\Delta`, ``radius`` = :math:`R`,
``power`` = :math:`n`, ``unsup_lr`` = :math:`\varepsilon_0`, ``unsup_epochs`` = :math:`N_e`.

Presets (:data:`PRESETS`): ``mnist`` (Krotov & Hopfield's MNIST values p = 3, k = 7, Delta = 0.4,
2,000 units; the authors' ``llearn_MNIST.py``: lr 0.04, batch 100, 1,000 epochs, W ~ N(0, 1)),
``cifar10`` (the authors' ``llearn_CIFAR.py``: p = 3, k = 2, Delta = 0.4, 2,000 units, lr 0.02,
batch 1,000, 1,000 epochs, L3-normalised images) and ``demo`` (Krotov's demo notebook size:
100 units, p = 2, k = 2, a few epochs).

The backprop control of the same width is :class:`HiddenLayerNet` (model ``shlp``, the authors'
"single hidden layer perceptron"), with the regularisers of :mod:`neurorobust.mechanisms.spectra`
(spectral, Jacobian) as options and L2 through ``train.weight_decay``.

References
----------
D. Krotov, J. J. Hopfield (2019). Unsupervised learning by competing hidden units. PNAS 116(16),
7723-7731. :doi:`10.1073/pnas.1820458116`. Code: github.com/DimaKrotov/Biological_Learning.
K. Holzhausen, M. Merlid, H. O. Torvik, A. Malthe-Sorenssen, M. E. Lepperod. Exploring biologically
inspired mechanisms of adversarial robustness (seed 001). Code: github.com/holzhauk/LocalLearning.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..models import MODELS
from ..models.base import ImageModel
from ..registry import signature_of
from ..training.loop import lr_at
from ..types import ProgressFn
from ..validation import Constraint, Interval, Options, validate_params
from .spectra import SpectralRegulariser, alpha_rows, gaussian_alpha_rows, jacobian_penalty

__all__ = [
    "CONVERGENCE_TOL",
    "FLUSH",
    "PRESETS",
    "UNCONVERGED_LIMIT",
    "HebbianNet",
    "HiddenLayerNet",
    "KrotovHopfieldLayer",
    "LpNormalise",
    "competition",
    "converged_units",
    "currents",
    "kh_increment",
    "kh_increment_loop",
    "layer_converged",
    "normalised_step",
    "prune_unconverged",
    "signed_power",
    "sparse_step",
    "wrong_attractor_units",
]

log = logging.getLogger(__name__)

_PAPER = "Krotov & Hopfield 2019, PNAS (unsupervised learning by competing hidden units); Holzhausen et al. (seed 001)"

#: Named settings of the rule and its unsupervised schedule (see the module docstring).
PRESETS: dict[str, dict[str, Any]] = {
    "mnist": {
        "hidden": 2000,
        "p": 3.0,
        "k": 7,
        "delta": 0.4,
        "radius": 1.0,
        "power": 4.5,
        "input_norm": "lp",
        "init_std": 1.0,
        "unsup_lr": 0.04,
        "unsup_batch": 100,
        "unsup_epochs": 1000,
        "prune": False,
    },
    "cifar10": {
        "hidden": 2000,
        "p": 3.0,
        "k": 2,
        "delta": 0.4,
        "radius": 1.0,
        "power": 4.5,
        "input_norm": "lp",
        "init_std": 1.0,
        "unsup_lr": 0.02,
        "unsup_batch": 1000,
        "unsup_epochs": 1000,
        "prune": True,
    },
    "demo": {
        "hidden": 100,
        "p": 2.0,
        "k": 2,
        "delta": 0.4,
        "radius": 1.0,
        "power": 4.5,
        "input_norm": "lp",
        "init_std": 1.0,
        "unsup_lr": 0.02,
        "unsup_batch": 100,
        "unsup_epochs": 5,
        "prune": False,
    },
}


# --------------------------------------------------------------------------------------------------
# The rule as pure functions
# --------------------------------------------------------------------------------------------------
def currents(weight: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
    r"""Currents :math:`I_{b\mu} = \sum_i \operatorname{sign}(W_{\mu i})|W_{\mu i}|^{p-1} v_{bi}`.

    Parameters
    ----------
    weight : torch.Tensor of shape (H, D)
    v : torch.Tensor of shape (B, D)
    p : float

    Returns
    -------
    torch.Tensor of shape (B, H)
    """
    return v @ signed_power(weight, p).T


def competition(current: torch.Tensor, k: int, delta: float) -> torch.Tensor:
    """The activation function g of the rule: +1 for each row's largest entry, -delta for its k-th.

    Parameters
    ----------
    current : torch.Tensor of shape (B, H)
    k : int
        Rank of the inhibited unit (2 <= k <= H).
    delta : float
        Strength of the anti-Hebbian term.
    """
    ranked = current.topk(k, dim=1).indices  # (B, k), descending
    g = torch.zeros_like(current)
    rows = torch.arange(len(current), device=current.device)
    g[rows, ranked[:, 0]] = 1.0
    g[rows, ranked[:, k - 1]] = -delta
    return g


def kh_increment(
    weight: torch.Tensor, v: torch.Tensor, *, p: float, k: int, delta: float, radius: float = 1.0
) -> torch.Tensor:
    r"""The batch increment :math:`\Delta W = g^\top (R^p v) - \operatorname{diag}(\sum_b g_b \odot I_b)\, W`
    (before normalisation), vectorised over the mini-batch.

    Parameters
    ----------
    weight : torch.Tensor of shape (H, D)
    v : torch.Tensor of shape (B, D)
    p, k, delta, radius
        See :class:`KrotovHopfieldLayer`.

    Returns
    -------
    torch.Tensor of shape (H, D)
    """
    current = currents(weight, v, p)
    g = competition(current, k, delta)
    return (radius**p) * (g.T @ v) - (g * current).sum(0)[:, None] * weight


def kh_increment_loop(
    weight: torch.Tensor, v: torch.Tensor, *, p: float, k: int, delta: float, radius: float = 1.0
) -> torch.Tensor:
    """:func:`kh_increment` written as the straightforward loop over the samples of a batch (the
    reference the benchmark and the tests compare with; same result, one sample at a time)."""
    total = torch.zeros_like(weight)
    metric = signed_power(weight, p)
    for vb in v:
        current = metric @ vb  # (H,)
        order = torch.argsort(current, descending=True)
        winner, loser = int(order[0]), int(order[k - 1])
        total[winner] += (radius**p) * vb - current[winner] * weight[winner]
        total[loser] -= delta * ((radius**p) * vb - current[loser] * weight[loser])
    return total


def normalised_step(weight: torch.Tensor, increment: torch.Tensor, lr: float, prec: float = 1e-30) -> None:
    """``W += lr * dW / max(max |dW|, prec)`` in place (the authors' normalised update; entries below
    :data:`FLUSH` become 0)."""
    scale = max(float(increment.abs().max()), prec)
    _flush(weight.add_(increment, alpha=lr / scale))


#: Synapses and metric entries below this are set to 0: the rule shrinks unused synapses
#: geometrically into float32 denormals, which make every matmul with them ~40x slower (measured:
#: 179 ms vs 4.6 ms for 100 MNIST images through 2,000 learned units); 1e-30 is far below any
#: current's float32 resolution, so no result changes.
FLUSH = 1e-30


def _flush(t: torch.Tensor) -> torch.Tensor:
    return t.masked_fill_(t.abs() < FLUSH, 0.0)


def signed_power(weight: torch.Tensor, p: float) -> torch.Tensor:
    """``sign(W) |W|^(p-1)`` (= ``W |W|^(p-2)``), with the common p = 2, 3 without a pow; entries
    below :data:`FLUSH` are 0."""
    if p == 2:
        out = weight.clone()
    elif p == 3:
        out = weight * weight.abs()
    else:
        out = weight * weight.abs().pow(p - 2)
    return _flush(out)


def sparse_step(
    weight: torch.Tensor,
    metric: torch.Tensor,
    v: torch.Tensor,
    lr: float,
    *,
    p: float,
    k: int,
    delta: float,
    radius: float = 1.0,
    prec: float = 1e-30,
) -> torch.Tensor:
    """One normalised update, in place, touching only the rows of units that won or came k-th;
    returns the winner of each input.

    The same arithmetic as ``normalised_step(weight, kh_increment(weight, v, ...), lr)``: g has two
    non-zero entries per input, so the increment is zero on every other row. ``metric`` (=
    ``sign(W)|W|^(p-1)``, kept by the caller) is refreshed on the changed rows.
    """
    current = v @ metric.T  # (B, H)
    ranked = current.topk(k, dim=1).indices
    rows = torch.cat([ranked[:, 0], ranked[:, k - 1]])  # (2B,)
    b = len(v)
    g = torch.cat([torch.ones(b, device=v.device), torch.full((b,), -delta, device=v.device)])
    samples = torch.arange(b, device=v.device).repeat(2)
    units, where = torch.unique(rows, return_inverse=True)
    gv = torch.zeros(len(units), v.shape[1], dtype=v.dtype, device=v.device).index_add_(
        0, where, g[:, None] * v[samples]
    )
    gi = torch.zeros(len(units), dtype=v.dtype, device=v.device).index_add_(0, where, g * current[samples, rows])
    w = weight[units]
    increment = (radius**p) * gv - gi[:, None] * w
    scale = max(float(increment.abs().max()), prec)
    w.add_(increment, alpha=lr / scale)
    weight[units] = _flush(w)
    metric[units] = signed_power(w, p)
    return ranked[:, 0]


def prune_unconverged(weight: torch.Tensor, *, significance: float = 0.01) -> dict[str, Any]:
    """Zero the units that have not converged, in place, as the authors prune their CIFAR-10 layer.

    Holzhausen et al.'s ``StatisticGardener``: the log-variances of the units' weights (clipped to
    (-9, -3)) are fitted by Gaussian mixtures of 1, 2, ... 4 components (initial means -7.1, -8.5,
    -6.5, -6.0), each accepted while a likelihood-ratio test against the previous one has
    p < ``significance`` (chi-square, 3 degrees of freedom); units whose variance is at least
    exp(mu_top - |mu_top - mu_next| / 2), between the two highest components' means, are zeroed.
    One deviation: the coded loop keeps the last mixture *fitted*, also when the test rejected it
    (a rejected fit may hold an empty component, whose mean makes the cutoff meaningless); we keep
    the last accepted mixture and prune only when at least two components are accepted.

    Returns ``{"pruned": count, "components": c, "cutoff": variance or None}``.
    """
    import numpy as np
    from scipy.stats import chi2, norm
    from sklearn.mixture import GaussianMixture

    var = weight.var(dim=1)
    log_var = var.log().cpu().double().numpy()
    data = log_var[(log_var < -3.0) & (log_var > -9.0)]
    heuristic = np.array([[-7.1], [-8.5], [-6.5], [-6.0]])
    if len(data) < 10:
        return {"pruned": 0, "components": 1, "cutoff": None}

    def loglik(c: int) -> tuple[float, Any]:
        if c == 1:
            return float(norm.logpdf(data, data.mean(), data.std()).sum()), None
        gmm = GaussianMixture(n_components=c, means_init=heuristic[:c], max_iter=2000, random_state=0)
        gmm.fit(data.reshape(-1, 1))
        return float(gmm.score(data.reshape(-1, 1)) * len(data)), gmm

    components, (best, mixture) = 1, loglik(1)
    while components < len(heuristic):
        ll, candidate = loglik(components + 1)
        if 1 - chi2.cdf(-2 * (best - ll), 3) >= significance:
            break
        components, best, mixture = components + 1, ll, candidate
    if mixture is None:
        return {"pruned": 0, "components": 1, "cutoff": None}
    means = np.sort(mixture.means_.ravel())
    cutoff = float(np.exp(means[-1] - abs(means[-1] - means[-2]) / 2.0))
    drop = var >= cutoff
    weight[drop] = 0.0
    return {"pruned": int(drop.sum()), "components": components, "cutoff": cutoff}


#: The authors' convergence criterion, ``weight_convergence_criterion(model, 1e-2, 1e-1)`` checked after
#: learning in ``llearn_MNIST.py`` and ``llearn_CIFAR.py`` (``holzhauk/LocalLearning:
#: src/LocalLearning/LocalLearning.py``): a unit has converged when | ||W_mu||_p - R | <= CONVERGENCE_TOL ...
CONVERGENCE_TOL = 1e-2
#: ... and the layer when the fraction of units that have not is below UNCONVERGED_LIMIT (the authors
#: discard the run otherwise). Their message and docstring say "less than 10% converged"; the code they
#: ran requires fewer than 10% *un*converged, i.e. more than 90% converged: we follow the code.
UNCONVERGED_LIMIT = 0.1


def converged_units(weight: torch.Tensor, *, p: float, radius: float, tol: float = CONVERGENCE_TOL) -> torch.Tensor:
    r"""Which units have converged to the sphere: :math:`|\,\|W_\mu\|_p - R\,| \le` ``tol``, shape (H,).

    The rule drives every unit that keeps winning to :math:`\|W_\mu\|_p = R` (module docstring), so the
    fraction of units on the sphere measures how far learning has come; ``tol`` is absolute, as the
    authors' :data:`CONVERGENCE_TOL`.
    """
    norms = weight.abs().pow(p).sum(1).pow(1.0 / p)
    return (norms - radius).abs() <= tol


def layer_converged(converged: torch.Tensor) -> bool:
    """The authors' verdict on a layer from :func:`converged_units`' mask: fewer than
    :data:`UNCONVERGED_LIMIT` of its units off the sphere (their ``fraction < tol`` on the unconverged count)."""
    return int((~converged).sum()) / max(len(converged), 1) < UNCONVERGED_LIMIT


def wrong_attractor_units(weight: torch.Tensor, radius: float) -> int:
    """Units whose mean weight is below -R/2: the all-negative attractor the authors' ``weight_mean_criterion``
    rejects (a run with any such unit is discarded)."""
    return int((weight.mean(dim=1) < -radius / 2.0).sum())


# --------------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------------
class LpNormalise(nn.Module):
    """Divide each flattened input by its own L_p norm (``p=None``: identity)."""

    def __init__(self, p: float | None) -> None:
        super().__init__()
        self.p = p

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if self.p is None:
            return v
        return v / v.abs().pow(self.p).sum(1, keepdim=True).pow(1.0 / self.p).clamp_min(1e-12)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class KrotovHopfieldLayer(nn.Module):
    r"""A layer of ``hidden`` units learned without labels by the Krotov-Hopfield rule.

    The forward pass returns the currents :math:`I` (the pre-activations whose spectrum
    :mod:`~neurorobust.mechanisms.spectra` measures). Weights are a buffer: they never receive
    gradients, so the supervised read-out trained on top leaves them fixed.

    Parameters
    ----------
    in_features : int
    hidden : int, default=2000
    p : float, default=3.0
        Order of the Lebesgue norm of the rule (p >= 2).
    k : int, default=7
        Rank of the inhibited unit (2 <= k <= hidden).
    delta : float, default=0.4
        Anti-Hebbian strength of the k-th unit.
    radius : float, default=1.0
        R: learned weights converge to ||W_mu||_p = R.
    init_std : float, default=1.0
        Weights start as N(0, init_std^2) (the authors: 1.0; Glorot init falls into an
        all-negative attractor, their note in ``llearn_MNIST.py``).
    generator : torch.Generator, optional
        Draws the initial weights (default: the global generator).

    Examples
    --------
    >>> layer = KrotovHopfieldLayer(4, hidden=3, p=2.0, k=2, generator=torch.Generator().manual_seed(0))
    >>> layer(torch.rand(5, 4)).shape
    torch.Size([5, 3])
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "in_features": Interval(int, 1, None),
        "hidden": Interval(int, 2, None),
        "p": Interval(float, 2, None),
        "k": Interval(int, 2, None),
        "delta": Interval(float, 0, None),
        "radius": Interval(float, 0, None, closed="neither"),
        "init_std": Interval(float, 0, None, closed="neither"),
    }

    def __init__(
        self,
        in_features: int,
        hidden: int = 2000,
        *,
        p: float = 3.0,
        k: int = 7,
        delta: float = 0.4,
        radius: float = 1.0,
        init_std: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        validate_params("KrotovHopfieldLayer", self._parameter_constraints, locals())
        if k > hidden:
            raise InvalidParameterError(
                "k", "KrotovHopfieldLayer", f"an int in [2, hidden] = [2, {hidden}] (the rank of the inhibited unit)", k
            )
        super().__init__()
        self.in_features, self.hidden = int(in_features), int(hidden)
        self.p, self.k, self.delta, self.radius = float(p), int(k), float(delta), float(radius)
        self.register_buffer("weight", torch.randn(hidden, in_features, generator=generator) * init_std)
        self.wins = torch.zeros(hidden, dtype=torch.long)
        self._metric_key: tuple[Any, ...] | None = None
        self._metric = torch.empty(0)

    def metric(self) -> torch.Tensor:
        """``sign(W)|W|^(p-1)``, cached until the weights change (in place or by a move)."""
        key = (self.weight._version, self.weight.data_ptr(), self.weight.device)
        if self._metric_key != key:
            with torch.no_grad():
                self._metric = signed_power(self.weight, self.p)
            self._metric_key = key
        return self._metric

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return v @ self.metric().T

    def increment(self, v: torch.Tensor) -> torch.Tensor:
        """The batch increment :func:`kh_increment` for inputs ``v`` of shape (B, D)."""
        return kh_increment(self.weight, v, p=self.p, k=self.k, delta=self.delta, radius=self.radius)

    @torch.no_grad()
    def step(self, v: torch.Tensor, lr: float) -> None:
        """One normalised update from the mini-batch ``v`` (B, D) (:func:`sparse_step`)."""
        metric = signed_power(self.weight, self.p)
        sparse_step(self.weight, metric, v, lr, p=self.p, k=self.k, delta=self.delta, radius=self.radius)

    def norms(self) -> torch.Tensor:
        """||W_mu||_p of every unit, shape (H,)."""
        return self.weight.abs().pow(self.p).sum(1).pow(1.0 / self.p)

    @torch.no_grad()
    def learn(
        self,
        v: torch.Tensor,
        *,
        epochs: int,
        batch_size: int = 100,
        lr: float = 0.04,
        seed: int = 0,
        progress: ProgressFn | None = None,
    ) -> dict[str, Any]:
        """Learn from the rows of ``v`` (N, D), reshuffled every epoch, lr annealed linearly to 0.

        Returns a summary: epochs, seconds, the fraction of units that won at least once (active;
        ``wins`` keeps each unit's count), the mean p-norm of the units, the fraction of units on
        the sphere after each epoch (``convergence``, the authors' criterion: :func:`converged_units`)
        and after the last (``converged_fraction``), whether the layer passes the authors' check
        (``layer_converged``: :func:`layer_converged`), the mean weight and the units in the
        all-negative attractor (:func:`wrong_attractor_units`; the authors reject such runs).
        """
        validate_params(
            "KrotovHopfieldLayer.learn",
            {"epochs": Interval(int, 0, None), "batch_size": Interval(int, 1, None), "lr": Interval(float, 0, None)},
            {"epochs": epochs, "batch_size": batch_size, "lr": lr},
        )
        if v.dim() != 2 or v.shape[1] != self.in_features:
            raise InvalidParameterError(
                "v", "KrotovHopfieldLayer.learn", f"a (N, {self.in_features}) tensor of flattened inputs", v
            )
        if len(v) == 0:
            raise InvalidParameterError("v", "KrotovHopfieldLayer.learn", "a non-empty dataset (N >= 1)", v)
        if not torch.isfinite(v).all():
            raise InvalidParameterError("v", "KrotovHopfieldLayer.learn", "finite values (no NaN or inf)", "NaN/inf")
        gen = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        v = v.to(self.weight.device)
        steps = math.ceil(len(v) / batch_size)
        metric = signed_power(self.weight, self.p)
        wins = torch.zeros(self.hidden, dtype=torch.long, device=v.device)
        history: list[float] = []
        for epoch in range(epochs):
            rate = lr_at(epoch, base=lr, epochs=epochs, schedule="linear")
            order = torch.randperm(len(v), generator=gen).to(v.device)
            for s in range(steps):
                batch = v[order[s * batch_size : (s + 1) * batch_size]]
                won = sparse_step(
                    self.weight, metric, batch, rate, p=self.p, k=self.k, delta=self.delta, radius=self.radius
                )
                wins += torch.bincount(won, minlength=self.hidden)
            # after every epoch, not only at the end: 20 of the authors' 1,000 epochs can only be judged
            # by how far the layer has come, and a flat curve says more epochs would not help
            history.append(round(float(self.converged_units().float().mean()), 6))
            if progress is not None:
                progress({"stage": "unsupervised", "epoch": epoch + 1, "epochs": epochs})
        norms = self.norms()
        self.wins = wins.cpu()
        converged = self.converged_units()
        return {
            "unsupervised_epochs": epochs,
            "active_fraction": float((wins > 0).float().mean()) if epochs else 0.0,
            "unsupervised_seconds": round(time.perf_counter() - start, 3),
            "mean_norm": float(norms.mean()),
            "convergence": history,
            "converged_fraction": float(converged.float().mean()),
            "layer_converged": layer_converged(converged),
            "mean_weight": float(self.weight.mean()),
            "wrong_attractor_units": wrong_attractor_units(self.weight, self.radius),
        }

    def converged_units(self) -> torch.Tensor:
        """:func:`converged_units` of this layer's weights (boolean, shape (H,))."""
        return converged_units(self.weight, p=self.p, radius=self.radius)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.hidden}, p={self.p:g}, k={self.k}, delta={self.delta:g}, R={self.radius:g}"


class _HiddenLayerModel(ImageModel):
    """Shared layout: ``normalise`` -> ``hidden`` (pre-activations) -> ReLU^power -> ``bn`` -> ``readout``.

    Layer names (for :func:`~neurorobust.mechanisms.spectra.layer_spectrum` and ``neurorobust
    spectrum --layer``): ``normalise``, ``hidden`` (its output is the pre-activation whose alpha is
    reported), ``bn`` (identity unless ``batch_norm``) and ``readout``.
    """

    spectrum_layer = "hidden"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        hidden_layer: nn.Module,
        hidden: int,
        power: float,
        input_norm: str,
        norm_p: float,
        batch_norm: bool,
        readout_bias: bool,
        spectrum_samples: int,
    ) -> None:
        super().__init__(input_shape, num_classes)
        self.normalise = LpNormalise(norm_p if input_norm == "lp" else None)
        self.hidden = hidden_layer
        self.power = float(power)
        self.bn: nn.Module = nn.BatchNorm1d(hidden) if batch_norm else nn.Identity()
        self.readout = nn.Linear(hidden, num_classes, bias=readout_bias)
        self.spectrum_samples = int(spectrum_samples)

    def preactivation(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden layer's pre-activations (N, H) for images (N, C, H, W)."""
        self.check_input(x)
        return self.hidden(self.normalise(x.flatten(1)))

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits from pre-activations: ``readout(bn(ReLU(h)^power))``."""
        a = torch.relu(h)
        if self.power != 1.0:
            a = a.pow(self.power)
        return self.readout(self.bn(a))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.preactivation(x))

    def evaluation_rows(self, dataset: Any) -> list[dict[str, Any]]:
        """Rows the evaluation stores with this model's results: alpha of the ``hidden`` layer's
        pre-activations over (up to ``spectrum_samples``) images of the evaluated split (attack
        ``spectrum``), and over as many N(0, 1) images fed to the layer itself (attack
        ``spectrum-gaussian``: the authors measure both, the noise images without their input
        normalisation, which lived in their data loader)."""
        rows = alpha_rows(self, dataset, layer=self.spectrum_layer, max_samples=self.spectrum_samples)
        return rows + gaussian_alpha_rows(
            self.hidden, self.input_shape, samples=self.spectrum_samples, layer=self.spectrum_layer
        )


_COMMON: dict[str, Constraint] = {
    "num_classes": Interval(int, 2, None),
    "hidden": Interval(int, 2, None),
    "power": Interval(float, 1, None),
    "input_norm": Options(["lp", "none"]),
    "spectrum_samples": Interval(int, 2, None),
}


class HebbianNet(_HiddenLayerModel):
    r"""Krotov-Hopfield hidden layer (learned without labels, then frozen) and a supervised read-out.

    The unsupervised phase runs once, on the training images only, when the one training loop
    starts (``on_epoch_start`` at epoch 0, :func:`~neurorobust.training.fit` calls it with the
    training images and no labels), or explicitly with :meth:`learn_unsupervised`; then ``fit``
    trains the read-out (the only parameters with gradients).

    Parameters
    ----------
    input_shape : tuple of int, default=(1, 28, 28)
    num_classes : int, default=10
    preset : {'mnist', 'cifar10', 'demo'}, default='mnist'
        Defaults for every rule and schedule parameter below left at ``None`` (:data:`PRESETS`).
    hidden, p, k, delta, radius, init_std : optional
        See :class:`KrotovHopfieldLayer`.
    power : float, optional
        n of the ReLU(I)^n nonlinearity (4.5).
    input_norm : {'lp', 'none'}, optional
        ``'lp'``: divide each image by its L_p norm (p of the rule), the authors' input; ``'none'``:
        Krotov's notebook (pixels in [0, 1]).
    unsup_epochs, unsup_batch, unsup_lr : optional
        The unsupervised schedule: epochs, mini-batch size and initial learning rate (annealed
        linearly to 0).
    unsup_subset : int, optional
        Learn from the first this many training images (30-minute tiers); default all.
    prune : bool, optional
        Zero the units that did not converge after learning (:func:`prune_unconverged`, the
        authors' pruning of their CIFAR-10 layer; preset ``cifar10``: on).
    readout_bias : bool, default=True
    spectrum_samples : int, default=10000
        Images of the evaluated split over which the stored alpha is measured (and N(0, 1) images for
        the alpha on noise).

    Attributes
    ----------
    convergence : torch.Tensor of shape (unsup_epochs,)
        The fraction of converged units (:func:`converged_units`) after each unsupervised epoch, a
        buffer saved with the weights (NaN before learning, and in checkpoints written before it was kept).
    mechanism_report : dict
        The learning summary (:meth:`KrotovHopfieldLayer.learn`, the pruning's), saved in the checkpoint's metadata.

    Examples
    --------
    >>> net = HebbianNet(preset="demo", hidden=8, unsup_epochs=1)
    >>> _ = net.learn_unsupervised(torch.rand(20, 1, 28, 28))
    >>> net(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        **_COMMON,
        "preset": Options(list(PRESETS)),
        "p": Interval(float, 2, None),
        "k": Interval(int, 2, None),
        "delta": Interval(float, 0, None),
        "radius": Interval(float, 0, None, closed="neither"),
        "init_std": Interval(float, 0, None, closed="neither"),
        "unsup_epochs": Interval(int, 0, None),
        "unsup_batch": Interval(int, 1, None),
        "unsup_lr": Interval(float, 0, None, closed="neither"),
    }

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        *,
        preset: str = "mnist",
        hidden: int | None = None,
        p: float | None = None,
        k: int | None = None,
        delta: float | None = None,
        radius: float | None = None,
        power: float | None = None,
        input_norm: str | None = None,
        init_std: float | None = None,
        unsup_epochs: int | None = None,
        unsup_batch: int | None = None,
        unsup_lr: float | None = None,
        unsup_subset: int | None = None,
        prune: bool | None = None,
        readout_bias: bool = True,
        spectrum_samples: int = 10000,
    ) -> None:
        if preset not in PRESETS:
            raise InvalidParameterError("preset", "HebbianNet", Options(list(PRESETS)).describe(), preset)
        given = {name: value for name, value in locals().items() if name in PRESETS[preset] and value is not None}
        cfg = {**PRESETS[preset], **given}  # the rule and schedule parameters left at None: the preset's
        validate_params(
            "HebbianNet", self._parameter_constraints, {**cfg, "num_classes": num_classes, "preset": preset}
        )
        if cfg["k"] > cfg["hidden"]:
            raise InvalidParameterError(
                "k",
                "HebbianNet",
                f"an int in [2, hidden] = [2, {cfg['hidden']}] (the rank of the inhibited unit)",
                cfg["k"],
            )
        if unsup_subset is not None and (
            isinstance(unsup_subset, bool) or not isinstance(unsup_subset, int) or unsup_subset < 1
        ):
            raise InvalidParameterError("unsup_subset", "HebbianNet", "None or an int in [1, inf)", unsup_subset)
        in_features = int(torch.tensor(tuple(input_shape)).prod())
        layer = KrotovHopfieldLayer(
            in_features,
            cfg["hidden"],
            p=float(cfg["p"]),
            k=cfg["k"],
            delta=float(cfg["delta"]),
            radius=float(cfg["radius"]),
            init_std=float(cfg["init_std"]),
        )
        super().__init__(
            input_shape,
            num_classes,
            hidden_layer=layer,
            hidden=cfg["hidden"],
            power=cfg["power"],
            input_norm=cfg["input_norm"],
            norm_p=float(cfg["p"]),
            batch_norm=False,
            readout_bias=readout_bias,
            spectrum_samples=spectrum_samples,
        )
        self.config = {"preset": preset, **cfg, "unsup_subset": unsup_subset}
        # the shuffling seed of the unsupervised phase, drawn from the (spec-seeded) global generator
        self.unsup_seed = int(torch.randint(0, 2**31 - 1, (1,)))
        self.register_buffer("learned", torch.zeros((), dtype=torch.bool))
        # the fraction of converged units after each unsupervised epoch (NaN: not learned yet), kept with the
        # weights so that an evaluation of a cached checkpoint still reports how learning went
        self.register_buffer("convergence", torch.full((cfg["unsup_epochs"],), math.nan))
        self.mechanism_report: dict[str, Any] = {}

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # a checkpoint written before the convergence history was kept: load it with an unknown (NaN) history
        # rather than retrain it (its final convergence is still measured from the weights)
        state_dict.setdefault(prefix + "convergence", torch.full_like(self.convergence, math.nan))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def learn_unsupervised(self, x: torch.Tensor, progress: ProgressFn | None = None) -> dict[str, Any]:
        """Learn the hidden layer from images ``x`` (N, C, H, W) without labels, with the configured
        schedule; returns (and keeps in ``mechanism_report``) the learning summary."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or len(x) == 0:
            raise InvalidParameterError(
                "x", "HebbianNet.learn_unsupervised", "a non-empty (N, C, H, W) tensor of training images", x
            )
        self.check_input(x)
        subset = self.config["unsup_subset"]
        v = self.normalise(x[:subset].flatten(1).float())
        summary = self.hidden.learn(
            v,
            epochs=self.config["unsup_epochs"],
            batch_size=self.config["unsup_batch"],
            lr=self.config["unsup_lr"],
            seed=self.unsup_seed,
            progress=progress,
        )
        self.convergence.copy_(torch.tensor(summary["convergence"], dtype=self.convergence.dtype))
        if self.config["prune"]:
            # the authors judge convergence before pruning (llearn_CIFAR.py, then prune_and_plot_FKHL3_CIFAR.py):
            # the history and the verdict stay those of the learned layer; pruned units are off the sphere
            summary.update(prune_unconverged(self.hidden.weight))
            summary["converged_fraction_after_pruning"] = float(self.hidden.converged_units().float().mean())
        self.learned.fill_(True)
        self.mechanism_report = {**self.config, **summary, "images": len(v)}
        log.info("Krotov-Hopfield layer learned: %s", {k: v for k, v in summary.items() if k != "convergence"})
        return self.mechanism_report

    def on_epoch_start(self, x: torch.Tensor, epoch: int) -> None:
        """Training-loop hook: learn the hidden layer (labels unused) before the read-out's first epoch."""
        if not bool(self.learned):
            self.learn_unsupervised(x)

    def evaluation_rows(self, dataset: Any) -> list[dict[str, Any]]:
        """The spectra's rows (:meth:`_HiddenLayerModel.evaluation_rows`) and :meth:`convergence_rows`."""
        return super().evaluation_rows(dataset) + self.convergence_rows()

    def convergence_rows(self) -> list[dict[str, Any]]:
        """Rows (attack ``kh-convergence``) saying whether the layer converged, by the authors' criterion.

        ``converged_fraction``: the fraction of units on the sphere (:func:`converged_units`) after the
        last unsupervised epoch; ``layer_converged``: 1 when fewer than :data:`UNCONVERGED_LIMIT` of them
        are off it (:func:`layer_converged`), else 0. Their params hold the fraction after every epoch
        (``history``) and where the numbers come from (``source``): the kept history, or, for a
        checkpoint written before it was kept, the weights as loaded (after pruning, where the preset
        prunes: pruned units count as off the sphere).
        """
        history = [round(float(f), 6) for f in self.convergence.tolist()]
        layer = self.hidden
        if history and not any(math.isnan(f) for f in history):
            fraction, source = history[-1], "history"
            converged = round(fraction * layer.hidden)  # the fraction is a count / H, kept to 6 decimals
            passed = (layer.hidden - converged) / layer.hidden < UNCONVERGED_LIMIT
        else:
            mask = layer.converged_units()
            fraction, source, history = float(mask.float().mean()), "weights", []
            passed = layer_converged(mask)
        params = {
            "criterion": "|‖W_μ‖_p − R| ≤ tol per unit; the layer when fewer than unconverged_limit of its units are "
            "not (the authors' weight_convergence_criterion(model, 1e-2, 1e-1))",
            "tol": CONVERGENCE_TOL,
            "unconverged_limit": UNCONVERGED_LIMIT,
            "epochs": self.config["unsup_epochs"],
            "history": history,
            "source": source,
            "pruned": bool(self.config["prune"]),
            "wrong_attractor_units": wrong_attractor_units(layer.weight, layer.radius),
        }
        base = {"attack": "kh-convergence", "n": layer.hidden, "params": params}
        return [
            {**base, "metric": "converged_fraction", "value": fraction},
            {**base, "metric": "layer_converged", "value": float(passed)},
        ]


@MODELS.register("kh_net", paper=_PAPER)
@signature_of(HebbianNet, returns=nn.Module)
def kh_net(*args: Any, **kwargs: Any) -> nn.Module:
    """Krotov-Hopfield layer learned without labels (frozen), ReLU^n and a supervised read-out (presets)."""
    return HebbianNet(*args, **kwargs)


class HiddenLayerNet(_HiddenLayerModel):
    r"""The backprop control of the same width: one trained hidden layer, ReLU^n and a read-out
    (Holzhausen et al.'s ``SHLP``: :math:`h = \tilde v W` without bias, He init N(0, 2/D)), with
    the representation regularisers of :mod:`~neurorobust.mechanisms.spectra` as options.

    Parameters
    ----------
    input_shape : tuple of int, default=(1, 28, 28)
    num_classes : int, default=10
    hidden : int, default=2000
    power : float, default=1.0
        n of ReLU(h)^n (1: a plain ReLU network, the authors' SHLP; 4.5 as the KH read-out).
    input_norm : {'lp', 'none'}, default='lp'
        Divide each image by its L_``norm_p`` norm first (the authors train every model on the
        L3-normalised data).
    norm_p : float, default=3.0
    batch_norm : bool, default=False
        BatchNorm1d before the read-out (the authors' spectral-regulariser model has it).
    regulariser : {'none', 'spectral', 'jacobian'}, default='none'
        ``'spectral'``: :class:`~neurorobust.mechanisms.spectra.SpectralRegulariser` on ``hidden``
        (Nassar et al. 2020, as the authors coded it); ``'jacobian'``: the projected Frobenius norm
        of d hidden / d input (:func:`~neurorobust.mechanisms.spectra.jacobian_penalty`). L2 is the
        training loop's ``weight_decay``.
    strength : float, default=1.0
        Weight of the regulariser in the loss (the authors: 1 spectral, 1e-3 Jacobian).
    target_alpha : float, default=1.0
        Spectral target gamma_n = n^-target_alpha.
    tau : int, default=1
        Spectral: ranks n <= tau are left free (as the coded loss runs: see spectra).
    centred : bool, default=False
        Spectral: per-batch covariance properly centred (``False``: as coded, see spectra).
    basis_samples : int, optional
        Spectral: training images used for each epoch's eigenbasis (default all).
    projections : int, default=3
        Jacobian: random projections per batch.
    readout_bias : bool, default=True
    spectrum_samples : int, default=10000

    Examples
    --------
    >>> net = HiddenLayerNet(hidden=16, regulariser="spectral")
    >>> net(torch.rand(3, 1, 28, 28)).shape
    torch.Size([3, 10])
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        **_COMMON,
        "norm_p": Interval(float, 1, None),
        "regulariser": Options(["none", "spectral", "jacobian"]),
        "strength": Interval(float, 0, None),
        "projections": Interval(int, 1, None),
    }

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        *,
        hidden: int = 2000,
        power: float = 1.0,
        input_norm: str = "lp",
        norm_p: float = 3.0,
        batch_norm: bool = False,
        regulariser: str = "none",
        strength: float = 1.0,
        target_alpha: float = 1.0,
        tau: int = 1,
        centred: bool = False,
        basis_samples: int | None = None,
        projections: int = 3,
        readout_bias: bool = True,
        spectrum_samples: int = 10000,
    ) -> None:
        validate_params("HiddenLayerNet", self._parameter_constraints, locals())
        in_features = int(torch.tensor(tuple(input_shape)).prod())
        layer = nn.Linear(in_features, hidden, bias=False)
        nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / in_features))  # He init, as coded
        super().__init__(
            input_shape,
            num_classes,
            hidden_layer=layer,
            hidden=hidden,
            power=power,
            input_norm=input_norm,
            norm_p=norm_p,
            batch_norm=batch_norm,
            readout_bias=readout_bias,
            spectrum_samples=spectrum_samples,
        )
        self.regulariser = regulariser
        self.strength = float(strength)
        self.projections = int(projections)
        self.basis_samples = basis_samples
        self.spectral = (
            SpectralRegulariser(hidden, target_alpha=target_alpha, tau=tau, centred=centred)
            if regulariser == "spectral"
            else None
        )
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self._jac_gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.regulariser == "jacobian" and not x.requires_grad:
            x = x.detach().requires_grad_(True)
        h = self.preactivation(x)
        if self.training and self.regulariser != "none":
            self._cache = (x, h)
        return self.head(h)

    def on_epoch_start(self, x: torch.Tensor, epoch: int) -> None:
        """Training-loop hook: the spectral regulariser's eigenbasis from the whole training set."""
        if self.spectral is None:
            return
        if self.basis_samples is not None and self.basis_samples < len(x):
            gen = torch.Generator().manual_seed(epoch)
            x = x[torch.randperm(len(x), generator=gen)[: self.basis_samples]]
        device = self.readout.weight.device
        with torch.no_grad():
            h = torch.cat([self.preactivation(x[i : i + 2000].to(device)) for i in range(0, len(x), 2000)])
        self.spectral.update_basis(h)

    def training_penalty(self, xb: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Training-loop hook: ``strength`` x the regulariser on this batch's hidden layer."""
        if self.regulariser == "none" or self._cache is None:
            return logits.new_zeros(())
        x, h = self._cache
        self._cache = None
        if self.spectral is not None:
            return self.strength * self.spectral(h)
        return self.strength * jacobian_penalty(x, h, projections=self.projections, generator=self._jac_gen)


@MODELS.register("shlp", paper="Holzhausen et al. (seed 001): backprop single-hidden-layer perceptron (SHLP), as coded")
@signature_of(HiddenLayerNet, returns=nn.Module)
def shlp(*args: Any, **kwargs: Any) -> nn.Module:
    """Backprop control of the KH net's width (one hidden layer, ReLU^n, read-out); spectral / Jacobian regularisers."""
    return HiddenLayerNet(*args, **kwargs)
