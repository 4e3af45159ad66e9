r"""Representation spectra: eigenvalues of a layer's covariance, the power-law exponent alpha, and
the regularisers that shape them (Stringer et al. 2019; Nassar et al. 2020; Holzhausen et al.).

**Spectrum.** For the representations :math:`h(x) \in \mathbb{R}^U` of one named layer (its
output, captured with a forward hook; name a linear layer to get pre-activations) over
:math:`N` images, the centred, unbiased covariance

.. math::

    C = \frac{1}{N-1} \sum_{j=1}^{N} (h_j - \bar h)(h_j - \bar h)^\top,\qquad
    \lambda_1 \ge \lambda_2 \ge \dots \ge \lambda_U \text{ its eigenvalues.}

**Alpha** is minus the slope of the ordinary least-squares line through
:math:`(\log n, \log \lambda_n / \lambda_1)` over the ranks :math:`n = 11, \dots, 500`
(Holzhausen et al.'s ``cov_spectrum`` and Figure 2-3 notebook, DESIGN §9), with the slope's
standard error as the fit error: :math:`\lambda_n \propto n^{-\alpha}`. Stringer et al. found
:math:`\alpha \approx 1` in mouse V1 and showed that a representation of :math:`d`-dimensional
stimuli is differentiable (smooth) only if :math:`\alpha > 1 + 2/d`. The authors also measure
alpha on :math:`N(0, 1)` images fed to the layer itself, fitted over ranks 11-100
(:func:`gaussian_alpha_rows`): a spectrum that does not inherit the low dimension of the data.

Caveats handled (each raises a warning and is stored with the result): with :math:`N \le U`
samples the covariance has rank at most :math:`N - 1` and every eigenvalue past it is zero; a
rank range beyond the non-zero spectrum is cut to it (and fewer than 3 ranks left is an error);
the spectrum of responses to low-dimensional stimuli is bounded by the stimulus dimension
(Stringer et al.), so compare alphas measured on the same images.

**Spectral regulariser** (Nassar et al. 2020, as Holzhausen et al. coded it, ``Regularizers.py``
``SpecReg``): at the start of every epoch the eigenbasis :math:`S` (columns sorted by decreasing
eigenvalue) of the covariance of :math:`h` over the training set; per batch of :math:`B`
pre-activations, with the coded shift :math:`K = 0.02`, :math:`H = h - K`,
:math:`m = \frac1B \sum_b H_b`,

.. math::

    \hat\lambda_n = \frac{\|H s_n\|^2 - (m^\top s_n)^2 / B}{B - 1},\qquad
    \mathcal{L}_{\text{spec}} = \frac{1}{U} \sum_{n > \tau}
        \Bigl[\bigl(\tfrac{\hat\lambda_n}{\gamma_n} - 1\bigr)^2
        + \max\bigl(\tfrac{\hat\lambda_n}{\gamma_n} - 1, 0\bigr)\Bigr],\qquad \gamma_n = n^{-\alpha_t},

i.e. the diagonal of :math:`S^\top C_{\text{batch}} S` against the target :math:`1/n`. As coded,
the batch "covariance" subtracts :math:`m m^\top / B` where centring would subtract
:math:`B\, m m^\top`, so it is nearly the uncentred second moment of :math:`h - K`
(``centred=True`` gives the true batch covariance), and the coded class ignores the ``tau``
argument and keeps its class value 1 (the first eigenvalue is left free). One deviation: the
coded epoch basis accumulates only the last batch of the training set (its loop overwrites the
sums); we use the whole training set, which is what its docstring says.

**Jacobian penalty** (Hoffman et al. 2019, as coded ``JFReg``): with :math:`P` random unit vectors
:math:`v_b` per sample, :math:`\mathcal{L}_J = \frac{U}{P B} \sum_{p} \sum_b \|J_b^\top v_{b}\|^2`,
:math:`J_b = \partial h(x_b) / \partial x_b`, an unbiased estimate of
:math:`\frac1B\sum_b \|J_b\|_F^2`. Weight decay (L2) is the training loop's ``weight_decay``
(the authors' :math:`5\cdot 10^{-4} \sum \|P\|^2` is ``weight_decay = 1e-3``).

References
----------
C. Stringer, M. Pachitariu, N. Steinmetz, M. Carandini, K. D. Harris (2019). High-dimensional
geometry of population responses in visual cortex. Nature 571, 361-365. :doi:`10.1038/s41586-019-1346-5`.
J. Nassar, P. A. Sokol, S. Chung, K. D. Harris, I. M. Park (2020). On 1/n neural representation and
robustness. NeurIPS 2020. :arxiv:`2012.04729`.
J. Hoffman, D. A. Roberts, S. Yaida (2019). Robust learning with Jacobian regularization. :arxiv:`1908.02729`.
K. Holzhausen et al. Exploring biologically inspired mechanisms of adversarial robustness (seed 001);
code github.com/holzhauk/LocalLearning (``Statistics.py``, ``Regularizers.py``).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..modes import eval_mode

__all__ = [
    "DEFAULT_RANKS",
    "MAX_UNITS",
    "NOISE_RANKS",
    "ZERO",
    "PowerLawFit",
    "Regularised",
    "SpectralRegulariser",
    "SpectrumResult",
    "alpha_rows",
    "covariance_spectrum",
    "fit_power_law",
    "gaussian_alpha_rows",
    "jacobian_penalty",
    "layer_module",
    "layer_names",
    "layer_spectrum",
    "spectral_distance",
]

#: The rank range of the fit (1-based, inclusive), as the authors fit alpha.
DEFAULT_RANKS = (11, 500)
#: The rank range of the fit on N(0, 1) images, as the authors fit it (``win_gauss=(10, 100)``).
NOISE_RANKS = (11, 100)
#: Largest layer whose covariance we form (U x U in float64).
MAX_UNITS = 8192
#: Eigenvalues below this fraction of lambda_1 count as zero (rank deficiency, round-off).
ZERO = 1e-10


@dataclass(frozen=True)
class PowerLawFit:
    """The fitted power law lambda_n / lambda_1 ~ exp(intercept) n^-alpha over ``ranks``."""

    alpha: float
    alpha_se: float
    intercept: float
    r2: float
    ranks: tuple[int, int]
    points: int
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "alpha_se": self.alpha_se,
            "intercept": self.intercept,
            "r2": self.r2,
            "ranks": list(self.ranks),
            "points": self.points,
            "warnings": list(self.warnings),
        }


@dataclass
class SpectrumResult:
    """Eigenvalues (descending, float64) of one layer's covariance over ``samples`` inputs, and the fit."""

    layer: str
    eigenvalues: torch.Tensor
    fit: PowerLawFit
    samples: int
    units: int
    warnings: list[str] = field(default_factory=list)

    @property
    def alpha(self) -> float:
        return self.fit.alpha

    def normalised(self) -> torch.Tensor:
        """lambda_n / lambda_1."""
        return self.eigenvalues / self.eigenvalues[0]


def _warn(messages: list[str], text: str) -> None:
    messages.append(text)
    warnings.warn(text, stacklevel=3)


def covariance_spectrum(h: torch.Tensor) -> torch.Tensor:
    """Eigenvalues, descending, of the centred unbiased covariance of the rows of ``h`` (N, U), in float64."""
    if h.dim() != 2 or len(h) < 2:
        raise InvalidParameterError("h", "covariance_spectrum", "a (N, U) tensor with N >= 2 samples", h)
    h = h.double()
    centred = h - h.mean(0, keepdim=True)
    cov = centred.T @ centred / (len(h) - 1)
    return torch.linalg.eigvalsh(cov).flip(0)


def fit_power_law(eigenvalues: torch.Tensor | Sequence[float], ranks: tuple[int, int] = DEFAULT_RANKS) -> PowerLawFit:
    r"""Fit :math:`\log(\lambda_n/\lambda_1) = c - \alpha \log n` by OLS over ``ranks`` (1-based, inclusive).

    Parameters
    ----------
    eigenvalues : tensor or sequence of float
        Sorted in decreasing order (:func:`covariance_spectrum`); lambda_1 must be positive.
    ranks : (int, int), default=(11, 500)

    Returns
    -------
    PowerLawFit
        alpha, its standard error (from the OLS slope), intercept, R^2, the ranks actually used.
        A range reaching past the non-zero eigenvalues is cut to them with a warning.

    Examples
    --------
    >>> lam = torch.arange(1, 1001, dtype=torch.float64) ** -1.0
    >>> round(fit_power_law(lam).alpha, 6)
    1.0
    """
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64).flatten()
    lo, hi = int(ranks[0]), int(ranks[1])
    if not 1 <= lo < hi:
        raise InvalidParameterError("ranks", "fit_power_law", "two ranks 1 <= low < high", ranks)
    if len(lam) == 0 or not torch.isfinite(lam).all() or lam[0] <= 0:
        raise InvalidParameterError(
            "eigenvalues", "fit_power_law", "a finite, decreasing spectrum with a positive largest eigenvalue", lam
        )
    if len(lam) > 1 and bool((lam[1:] > lam[:-1] * (1 + 1e-9) + 1e-300).any()):
        raise InvalidParameterError("eigenvalues", "fit_power_law", "eigenvalues sorted in decreasing order", lam)
    messages: list[str] = []
    positive = int((lam > ZERO * lam[0]).sum())
    if hi > positive:
        _warn(
            messages,
            f"rank range {lo}-{hi} exceeds the spectrum's {positive} non-zero eigenvalues: fitted over {lo}-{positive}",
        )
        hi = positive
    if hi - lo + 1 < 3:
        raise InvalidParameterError(
            "ranks",
            "fit_power_law",
            f"a range with at least 3 non-zero eigenvalues (the spectrum has {positive})",
            ranks,
        )
    n = torch.arange(lo, hi + 1, dtype=torch.float64)
    x, y = n.log(), (lam[lo - 1 : hi] / lam[0]).log()
    xm, ym = x.mean(), y.mean()
    sxx = ((x - xm) ** 2).sum()
    slope = ((x - xm) * (y - ym)).sum() / sxx
    intercept = ym - slope * xm
    resid = y - (intercept + slope * x)
    sst = ((y - ym) ** 2).sum()
    se = math.sqrt(float((resid**2).sum()) / (len(x) - 2) / float(sxx)) if len(x) > 2 else float("nan")
    r2 = 1.0 - float((resid**2).sum() / sst) if sst > 0 else 1.0
    return PowerLawFit(-float(slope), se, float(intercept), r2, (lo, hi), len(x), tuple(messages))


def layer_names(model: nn.Module) -> list[str]:
    """Names of every sub-module of ``model`` (what ``layer`` may be)."""
    return [name for name, _ in model.named_modules() if name]


def layer_module(model: nn.Module, layer: str) -> nn.Module:
    """``model``'s sub-module named ``layer``; an unknown name raises an error listing :func:`layer_names`."""
    modules = dict(model.named_modules())
    if not layer or layer not in modules:
        raise InvalidParameterError(
            "layer",
            f"the spectrum of {type(model).__name__}",
            "one of " + ", ".join(map(repr, layer_names(model))),
            layer,
        )
    return modules[layer]


def layer_spectrum(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    *,
    ranks: tuple[int, int] = DEFAULT_RANKS,
    batch_size: int = 1000,
) -> SpectrumResult:
    """The covariance spectrum of the output of ``model``'s sub-module ``layer`` over images ``x``.

    Parameters
    ----------
    model : nn.Module
        Run in eval mode (restored afterwards); a forward hook captures the layer's output.
    x : torch.Tensor of shape (N, C, H, W)
    layer : str
        A name from :func:`layer_names`; an unknown name raises an error listing them.
    ranks : (int, int), default=(11, 500)
        Rank range of the alpha fit.
    batch_size : int, default=1000

    Returns
    -------
    SpectrumResult
    """
    module = layer_module(model, layer)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameterError("batch_size", "layer_spectrum", "an int in [1, inf)", batch_size)
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or len(x) < 2:
        raise InvalidParameterError("x", "layer_spectrum", "a (N, C, H, W) tensor of at least 2 images", x)
    if not torch.isfinite(x).all():
        raise InvalidParameterError("x", "layer_spectrum", "finite images (no NaN or inf)", "a tensor with NaN/inf")
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out.detach().flatten(1)))
    device = next((p.device for p in model.parameters()), x.device)
    total = mean = shift = torch.empty(0, dtype=torch.float64)  # sized by the first batch
    count = 0
    try:
        with eval_mode(model), torch.no_grad():
            for i in range(0, len(x), batch_size):
                captured.clear()
                model(x[i : i + batch_size].to(device))
                if not captured:
                    raise InvalidParameterError("layer", "layer_spectrum", "a layer the forward pass runs", layer)
                h = captured[-1].double().cpu()
                if h.shape[1] > MAX_UNITS:
                    raise InvalidParameterError(
                        "layer",
                        "layer_spectrum",
                        f"a layer with at most {MAX_UNITS} output units",
                        f"{layer!r} ({h.shape[1]} units)",
                    )
                if count == 0:
                    shift = h.mean(0, keepdim=True)  # a shift near the mean keeps the sums well conditioned
                    total = torch.zeros(h.shape[1], h.shape[1], dtype=torch.float64)
                    mean = torch.zeros(h.shape[1], dtype=torch.float64)
                h = h - shift
                total += h.T @ h
                mean += h.sum(0)
                count += len(h)
    finally:
        handle.remove()
    cov = (total - torch.outer(mean, mean) / count) / (count - 1)
    eig = torch.linalg.eigvalsh(cov).flip(0).clamp_min(0.0)
    units = cov.shape[0]
    messages: list[str] = []
    if count <= units:
        _warn(
            messages,
            f"{count} samples for {units} units: the covariance has rank at most {count - 1}, so eigenvalues past "
            f"rank {count - 1} are zero; use more images than units (the authors use 10,000)",
        )
    if float(eig[0]) <= 0:
        raise InvalidParameterError("layer", "layer_spectrum", "a layer whose output varies over the images", layer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_power_law(eig, ranks)
    for w in caught:
        _warn(messages, str(w.message))
    return SpectrumResult(layer, eig, fit, count, units, messages)


def alpha_rows(
    model: nn.Module, dataset: Any, *, layer: str, max_samples: int = 10000, ranks: tuple[int, int] = DEFAULT_RANKS
) -> list[dict[str, Any]]:
    """Result-row fields (attack ``spectrum``, metrics ``alpha`` and ``alpha_fit_se``) for ``layer``'s
    alpha over a seeded class-balanced subset of ``dataset``'s evaluated split (``x_test``).

    The alpha row's ``params`` hold the fit, the caveats and the normalised spectrum (first 1,000
    ranks, 4 significant digits) so reports draw spectra from the store alone.
    """
    from ..data import balanced_subset

    x, y = dataset.x_test, dataset.y_test
    if max_samples < len(x):
        idx = balanced_subset(y, max_samples, seed=0)
        x = x[idx]
    return _spectrum_rows(layer_spectrum(model, x, layer, ranks=ranks), "spectrum", layer)


def gaussian_alpha_rows(
    module: nn.Module,
    input_shape: Sequence[int],
    *,
    layer: str,
    samples: int = 10000,
    ranks: tuple[int, int] = NOISE_RANKS,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Result-row fields (attack ``spectrum-gaussian``, metrics ``alpha`` and ``alpha_fit_se``) for the
    output of ``module`` (the model's layer named ``layer``) over ``samples`` images of ``input_shape``
    drawn from N(0, 1), flattened.

    As the authors probe their layers (``GaussianData`` in their Figure 2-3 notebook): the noise images go
    into the layer itself, without the model's input normalisation (theirs lived in the data loader),
    and the fit runs over ranks 11-100 (:data:`NOISE_RANKS`). The draw is seeded with ``seed``, so every
    model of an experiment is probed with the same images.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise InvalidParameterError("samples", "gaussian_alpha_rows", "an int in [2, inf)", samples)
    z = torch.randn(samples, *input_shape, generator=torch.Generator().manual_seed(seed))
    # the layer may hold only buffers (the Krotov-Hopfield synapses): the images go where its tensors are
    where = next(itertools.chain(module.parameters(), module.buffers()), z)
    probe = nn.Sequential(nn.Flatten(), module)
    res = layer_spectrum(probe, z.to(where.device), "1", ranks=ranks)
    return _spectrum_rows(res, "spectrum-gaussian", layer, inputs="N(0, 1) images, not normalised")


def _spectrum_rows(res: SpectrumResult, attack: str, layer: str, **extra: Any) -> list[dict[str, Any]]:
    """The alpha and fit-error rows of one measured spectrum (the alpha row's params hold the fit, the
    caveats and the normalised spectrum, first 1,000 ranks, 4 significant digits)."""
    spectrum = [float(f"{v:.4g}") for v in res.normalised()[:1000].tolist()]
    params = {
        "layer": layer,
        **extra,
        "ranks": list(res.fit.ranks),
        "alpha_se": round(res.fit.alpha_se, 6),
        "intercept": round(res.fit.intercept, 6),
        "r2": round(res.fit.r2, 6),
        "units": res.units,
        "samples": res.samples,
        "warnings": res.warnings,
        "spectrum": spectrum,
    }
    return [
        {"attack": attack, "metric": "alpha", "value": res.alpha, "n": res.samples, "params": params},
        {
            "attack": attack,
            "metric": "alpha_fit_se",
            "value": res.fit.alpha_se,
            "n": res.samples,
            "params": {"layer": layer, **extra, "ranks": list(res.fit.ranks)},
        },
    ]


# --------------------------------------------------------------------------------------------------
# Regularisers
# --------------------------------------------------------------------------------------------------
class SpectralRegulariser(nn.Module):
    r"""Nassar et al.'s spectral loss on a representation of ``units`` dimensions, as the authors coded it.

    Call :meth:`update_basis` with the training set's representations at the start of each epoch,
    then ``loss = reg(h_batch)`` (see the module docstring for the formula).

    Parameters
    ----------
    units : int
    target_alpha : float, default=1.0
        gamma_n = n^-target_alpha.
    tau : int, default=1
        Ranks n <= tau are left out of the loss (as the coded class runs).
    centred : bool, default=False
        ``True``: the true batch covariance; ``False``: the coded estimate (shift K, m m^T / B).
    shift : float, default=0.02
        The coded K.
    """

    def __init__(
        self, units: int, *, target_alpha: float = 1.0, tau: int = 1, centred: bool = False, shift: float = 0.02
    ) -> None:
        if isinstance(units, bool) or not isinstance(units, int) or units < 2:
            raise InvalidParameterError("units", "SpectralRegulariser", "an int in [2, inf)", units)
        if isinstance(tau, bool) or not isinstance(tau, int) or not 0 <= tau < units:
            raise InvalidParameterError("tau", "SpectralRegulariser", f"an int in [0, {units - 1}]", tau)
        if not isinstance(target_alpha, int | float) or not target_alpha > 0:
            raise InvalidParameterError("target_alpha", "SpectralRegulariser", "a float in (0, inf)", target_alpha)
        super().__init__()
        self.units, self.tau, self.centred, self.shift = units, tau, bool(centred), float(shift)
        self.target_alpha = float(target_alpha)
        n = torch.arange(1, units + 1, dtype=torch.float32)
        self.register_buffer("gamma", n.pow(-self.target_alpha), persistent=False)
        self.register_buffer("basis", torch.empty(0), persistent=False)

    @torch.no_grad()
    def update_basis(self, h: torch.Tensor) -> torch.Tensor:
        """Eigenbasis (columns by decreasing eigenvalue) of the centred covariance of ``h`` (N, units);
        returns the eigenvalues."""
        if h.dim() != 2 or h.shape[1] != self.units or len(h) < 2:
            raise InvalidParameterError(
                "h", "SpectralRegulariser.update_basis", f"a (N, {self.units}) tensor with N >= 2", h
            )
        centred = (h.double() - h.double().mean(0, keepdim=True)).float()  # float32 products, float64 eigh
        lam, vec = torch.linalg.eigh((centred.T @ centred).double() / (len(h) - 1))
        order = torch.argsort(lam, descending=True)
        self.basis = vec[:, order].to(self.gamma.device, torch.float32)
        return lam[order]

    def batch_eigenvalues(self, h: torch.Tensor) -> torch.Tensor:
        r"""The diagonal of :math:`S^\top C_{\text{batch}} S` (see the module docstring)."""
        if self.basis.numel() == 0:
            self.update_basis(h.detach())  # no epoch basis yet: this batch's own
        b = len(h)
        hs = h - self.shift
        z = hs @ self.basis  # (B, U)
        proj_mean = z.mean(0)
        scale = b if self.centred else 1.0 / b
        return (z.pow(2).sum(0) - scale * proj_mean.pow(2)) / (b - 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() != 2 or h.shape[1] != self.units or len(h) < 2:
            raise InvalidParameterError("h", "SpectralRegulariser", f"a (B, {self.units}) batch with B >= 2", h)
        dev = self.batch_eigenvalues(h) / self.gamma - 1.0
        dev = dev[self.tau :]
        return (dev.pow(2) + torch.relu(dev)).sum() / self.units


def spectral_distance(eigenvalues: torch.Tensor, target_alpha: float = 1.0, tau: int = 1) -> float:
    """Mean squared fractional deviation of ``eigenvalues`` (descending) from n^-target_alpha over
    ranks n > tau (the quadratic part of the spectral loss on a whole dataset)."""
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    n = torch.arange(1, len(lam) + 1, dtype=torch.float64)
    dev = lam / n.pow(-target_alpha) - 1.0
    return float(dev[tau:].pow(2).mean())


def jacobian_penalty(
    x: torch.Tensor, h: torch.Tensor, *, projections: int = 3, generator: torch.Generator | None = None
) -> torch.Tensor:
    r"""The projected Jacobian penalty :math:`\frac{U}{P B}\sum_p \sum_b \|J_b^\top v_{pb}\|^2` (as coded).

    Parameters
    ----------
    x : torch.Tensor
        The input batch (requires grad; ``h`` computed from it).
    h : torch.Tensor of shape (B, U)
    projections : int, default=3
    generator : torch.Generator, optional
        Draws the random unit vectors.
    """
    if not x.requires_grad:
        raise InvalidParameterError("x", "jacobian_penalty", "the input batch with requires_grad=True", x)
    b, units = h.shape
    total = h.new_zeros(())
    for _ in range(projections):
        v = torch.randn(h.shape, generator=generator).to(h.device, h.dtype)
        v = v / v.norm(dim=1, keepdim=True)
        (jv,) = torch.autograd.grad(h, x, grad_outputs=v, create_graph=True, retain_graph=True)
        total = total + units * jv.pow(2).sum() / (projections * b)
    return total


class Regularised(nn.Module):
    """Any model with a spectral or Jacobian penalty on one named layer, through the training loop's hooks.

    ``fit(Regularised(model, "layers.0", kind="spectral"), x, y)`` recomputes the eigenbasis of the
    layer's output over the training set at every epoch and adds ``strength`` x the penalty to each
    batch's loss. The wrapped model is ``self.model``.

    Parameters
    ----------
    model : nn.Module
    layer : str
        Name of the sub-module whose output is regularised (:func:`layer_names`).
    kind : {'spectral', 'jacobian'}, default='spectral'
    strength : float, default=1.0
    target_alpha, tau, centred
        See :class:`SpectralRegulariser`.
    projections : int, default=3
        Jacobian projections.
    seed : int, default=0
        Seeds the Jacobian's random projections.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        *,
        kind: str = "spectral",
        strength: float = 1.0,
        target_alpha: float = 1.0,
        tau: int = 1,
        centred: bool = False,
        projections: int = 3,
        seed: int = 0,
    ) -> None:
        if kind not in ("spectral", "jacobian"):
            raise InvalidParameterError("kind", "Regularised", "'spectral' or 'jacobian'", kind)
        if not isinstance(strength, int | float) or isinstance(strength, bool) or strength < 0:
            raise InvalidParameterError("strength", "Regularised", "a float in [0, inf)", strength)
        super().__init__()
        self.model, self.layer, self.kind, self.strength = model, layer, kind, float(strength)
        self.projections = int(projections)
        self._captured: list[torch.Tensor] = []
        self._x = torch.empty(0)  # the batch of the last forward pass (its input gradient: Jacobian)
        layer_module(model, layer).register_forward_hook(lambda _m, _i, out: self._captured.append(out))
        self._settings = {"target_alpha": target_alpha, "tau": tau, "centred": centred}
        self.spectral: SpectralRegulariser | None = None
        self._gen = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._captured.clear()
        if self.training and self.kind == "jacobian" and not x.requires_grad:
            x = x.detach().requires_grad_(True)
        self._x = x
        return self.model(x)

    def _representation(self) -> torch.Tensor:
        return self._captured[-1].flatten(1)

    def on_epoch_start(self, x: torch.Tensor, epoch: int) -> None:
        if self.kind != "spectral":
            return
        device = next((p.device for p in self.parameters()), x.device)
        with torch.no_grad(), eval_mode(self.model):
            reps = []
            for i in range(0, len(x), 1000):
                self._captured.clear()
                self.model(x[i : i + 1000].to(device))
                reps.append(self._representation())
        h = torch.cat(reps)
        if self.spectral is None:
            self.spectral = SpectralRegulariser(h.shape[1], **self._settings).to(h.device)
        self.spectral.update_basis(h)

    def training_penalty(self, xb: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        h = self._representation()
        if self.kind == "jacobian":
            return self.strength * jacobian_penalty(self._x, h, projections=self.projections, generator=self._gen)
        if self.spectral is None:
            self.spectral = SpectralRegulariser(h.shape[1], **self._settings).to(h.device)
        return self.strength * self.spectral(h)
