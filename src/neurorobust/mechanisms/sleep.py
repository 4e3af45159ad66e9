r"""Sleep: ANN -> SNN conversion, a sleep phase of modified STDP, and back (Tadros et al., ICLR 2020).

A trained bias-free ReLU MLP is run as an integrate-and-fire spiking network driven by
Bernoulli spikes of training images; a local plasticity rule changes its weights; the changed
weights are then used directly by the ANN. Everything follows the authors' code as recorded in
``seeds/NOTES.md`` §1 (``sleep/sleepnn_old.m``, ``normalize_nn_data.m``):

**Scale factors** (one test-mode pass over the training set). For layer :math:`l` with weights
:math:`W_l` and post-ReLU activations :math:`a_{l}` (the ANN's, including the non-inverted
dropout's test scaling),

.. math::

    \lambda_l = \max\bigl(\max_{ij} W_{l,ij}^{+},\ \max_{n,i} a_{l,i}(x_n)\bigr),\qquad
    A_l = \lambda_l / A_{l-1},\ A_0 = 1,\qquad \alpha_l = \text{alpha\_scale} / A_l .

The weights are **not** rescaled: :math:`\alpha_l` only multiplies the SNN's input current.

**Input spikes** at step :math:`t` from training image :math:`x_t` (dataset order):
:math:`s_{0,i} = \mathbb{1}[u_i \le 2\,dt\,f_{\max}\,x_{t,i}]`, :math:`u_i \sim U(0,1)`, i.e.
Bernoulli with :math:`p = \min(1, 2\,dt\,f_{\max}\,x)`.

**Integrate and fire** for :math:`l = 1..L` in order within one step:

.. math::

    v_l \leftarrow \text{decay}\cdot v_l + \alpha_l W_l s_{l-1},\qquad
    s_l = \mathbb{1}[v_l \ge \beta_l],\qquad v_l[s_l] \leftarrow 0 .

No refractory period, no lateral inhibition; the output units spike and learn too.

**Modified STDP** (applied before the reset, for every post unit :math:`j` that spiked):

.. math::

    W_{l,ji} \leftarrow W_{l,ji} + \begin{cases}
        +\,\text{inc}\cdot\sigma^*(W_{l,ji}) & s_{l-1,i} = 1 \\
        -\,\text{dec}\cdot\sigma^*(W_{l,ji}) & s_{l-1,i} = 0
    \end{cases},\qquad \sigma^*(w) = 2\,\bigl(1 - \tfrac{1}{1 + e^{-w/0.001}}\bigr),

so :math:`\sigma^* \approx 2` for :math:`w \ll 0`, 1 at 0, and :math:`\approx 0` once
:math:`w \gg 0.001`: positive weights barely move, weak and negative ones are pushed down unless
they carry a pre-synaptic spike into a post-synaptic one.

One chain, one training image per step (parallel chains would change the rule: all would write
the same weights), vectorised over neurons. Two parameter sets are coded for MNIST (DESIGN §9):
set ``A`` (FGSM, noise, blur; Boundary uses it too) and set ``B`` (DeepFool, JSMA, C&W).

References
----------
T. Tadros, G. Krishnan, R. Ramyaa, M. Bazhenov (2020). Biologically inspired sleep algorithm for
increased generalization and adversarial robustness in deep neural networks. ICLR 2020.
Authors' code: github.com/tmtadros/Sleep-Robustness (``sleep/sleepnn_old.m``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..modes import eval_mode
from ..types import ProgressFn
from ..validation import Interval, Options, validate_params
from ..validation import Sequence as SeqC
from . import MECHANISMS

__all__ = [
    "PRESETS",
    "SleepReport",
    "encode_input",
    "linear_layers",
    "scale_factors",
    "sleep",
    "snn_predict",
    "stdp_factor",
    "stdp_update",
]

#: The authors' coded parameter sets [f_max, inc, dec, beta_1..beta_3, alpha_scale, steps] (NOTES.md §1).
#: ``patches`` is our starting point for the 3-layer Patches network: the ICLR Patches parameters are
#: not in the authors' code; these are the Patches settings of their SleepReplayConsolidation code
#: (f_max 64, beta = [.95, .65, .35] x 1.1, inc .0035, dec .0002, alpha_scale 4.25), run on the
#: training images in order rather than on the mean image.
PRESETS: dict[str, dict[str, Any]] = {
    "A": {
        "f_max": 39.037119,
        "inc": 0.063997,
        "dec": 0.069220,
        "thresholds": (36.186585, 23.362736, 36.384713),
        "alpha_scale": 2.193698,
        "steps": 27105,
    },
    "B": {
        "f_max": 455.364521,
        "inc": 0.066056,
        "dec": 0.054991,
        "thresholds": (22.687400, 48.092672, 18.983305),
        "alpha_scale": 34.657870,
        "steps": 3365,
    },
    "patches": {
        "f_max": 64.0,
        "inc": 0.0035,
        "dec": 0.0002,
        "thresholds": (1.045, 0.715, 0.385),
        "alpha_scale": 4.25,
        "steps": 30000,
    },
}

_STDP_WIDTH = 0.001  # the 0.001 inside the authors' sigmoid(-w/0.001)


@dataclass
class SleepReport:
    """Diagnostics of one sleep phase (kept on the returned model as ``model.sleep_report``)."""

    params: dict[str, Any]
    alphas: list[float]
    lambdas: list[float]
    spikes: list[int]  # total spikes per layer, input first
    steps: int
    seconds: float
    weight_change: list[float] = field(default_factory=list)  # mean |dW| per weight layer

    @property
    def spikes_per_second(self) -> float:
        return sum(self.spikes) / max(self.seconds, 1e-9)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "spikes_per_second": self.spikes_per_second}


def linear_layers(model: nn.Module, caller: str = "sleep") -> list[nn.Linear]:
    """The weight layers of a bias-free ReLU MLP, input first.

    Accepts :class:`neurorobust.models.MLP` and ``nn.Sequential`` of Flatten / Linear / ReLU /
    Dropout. Anything else (biases, other activations, convolutions) raises
    :class:`InvalidParameterError`: the conversion needs ReLU units without bias (Tadros et al. §3.1).
    """
    from ..models.mlp import MLP

    if isinstance(model, MLP):
        layers = list(model.layers)
    elif isinstance(model, nn.Sequential):
        layers = []
        for m in model:
            if isinstance(m, nn.Linear):
                layers.append(m)
            elif not isinstance(m, nn.Flatten | nn.ReLU | nn.Dropout):
                raise InvalidParameterError(
                    "model", caller, "a bias-free ReLU MLP (Linear, ReLU, Flatten, Dropout only)", type(m).__name__
                )
    else:
        raise InvalidParameterError(
            "model", caller, "a bias-free ReLU MLP (neurorobust MLP or nn.Sequential of Linear/ReLU)", model
        )
    if not layers:
        raise InvalidParameterError("model", caller, "an MLP with at least one Linear layer", model)
    if any(layer.bias is not None for layer in layers):
        raise InvalidParameterError("model", caller, "an MLP without biases (build it with bias=False)", "biases")
    return layers


def _activations(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    if hasattr(model, "hidden_activations"):
        return model.hidden_activations(x)
    acts, h = [], x.flatten(1)
    for m in model:
        h = m(h) if not isinstance(m, nn.Flatten) else h
        if isinstance(m, nn.ReLU):
            acts.append(h)
    if len(acts) < len(linear_layers(model)):
        acts.append(torch.relu(h))  # the SNN's output units only ever see positive currents
    return acts


@torch.no_grad()
def scale_factors(model: nn.Module, x: torch.Tensor, batch_size: int = 2000) -> tuple[list[float], list[float]]:
    r"""Data-based normalisation as coded: per layer :math:`\lambda_l` and the current factor :math:`1/A_l`.

    Returns ``(factors, lambdas)``; multiply ``factors`` by ``alpha_scale`` to get the SNN's alphas.
    """
    layers = linear_layers(model, "scale_factors")
    act_max = [0.0] * len(layers)
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            for j, a in enumerate(_activations(model, x[i : i + batch_size])):
                act_max[j] = max(act_max[j], float(a.max()))
    factors, lambdas, applied = [], [], 1.0
    for layer, amax in zip(layers, act_max, strict=True):
        lam = max(float(layer.weight.clamp(min=0).max()), amax)
        if lam <= 0:
            raise InvalidParameterError(
                "model", "scale_factors", "a trained network with some positive weight or activation", "all zero"
            )
        applied = lam / applied
        lambdas.append(lam)
        factors.append(1.0 / applied)
    return factors, lambdas


def encode_input(
    x: torch.Tensor, f_max: float, dt: float = 0.001, generator: torch.Generator | None = None
) -> torch.Tensor:
    r"""Bernoulli input spikes as coded: ``u / (2 dt f_max) <= x``, i.e. :math:`p = \min(1, 2\,dt\,f_{\max} x)`."""
    if f_max <= 0 or dt <= 0:
        raise InvalidParameterError("f_max", "encode_input", "a float > 0 (with dt > 0)", f_max if f_max <= 0 else dt)
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype)
    return u * (1.0 / (dt * f_max)) / 2 <= x


def stdp_factor(w: torch.Tensor) -> torch.Tensor:
    r"""The rule's weight dependence :math:`\sigma^*(w) = 2\,\mathrm{sigmoid}(-w / 0.001)`."""
    return 2.0 * torch.sigmoid(-w / _STDP_WIDTH)


def stdp_update(w: torch.Tensor, pre: torch.Tensor, post: torch.Tensor, inc: float, dec: float) -> None:
    """Apply the modified STDP rule in place to ``w`` (out, in) for boolean spike vectors ``pre``, ``post``.

    Rows of post units that spiked change: ``+inc * sigma*(w)`` where the pre unit spiked,
    ``-dec * sigma*(w)`` where it did not. Other rows are untouched.
    """
    rows = post.nonzero().squeeze(1)
    if rows.numel() == 0:
        return
    block = w.index_select(0, rows)
    f = stdp_factor(block)
    block += torch.where(pre.unsqueeze(0), inc * f, -dec * f)
    w.index_copy_(0, rows, block)


@torch.no_grad()
def snn_predict(
    model: nn.Module,
    x: torch.Tensor,
    *,
    steps: int = 200,
    f_max: float = 500.0,
    dt: float = 0.001,
    factors: Sequence[float] | None = None,
    data: torch.Tensor | None = None,
    seed: int = 0,
) -> torch.Tensor:
    r"""Class predictions of the converted spiking network (no plasticity): output spike counts' argmax.

    The rate-coded check of the conversion (Diehl et al. 2015): the same integrate-and-fire
    dynamics as the sleep phase, threshold 1, no leak, input currents scaled by the data-based
    ``factors`` (:func:`scale_factors` on ``data``, default ``x``); images run in parallel since
    nothing learns. The default ``f_max = 500`` with ``dt = 0.001`` makes the spike probability
    equal the pixel value. Ties (e.g. no output spike) fall back to the accumulated membrane potential.
    """
    weights = [layer.weight.data for layer in linear_layers(model, "snn_predict")]
    if factors is None:
        factors = scale_factors(model, data if data is not None else x)[0]
    gen = torch.Generator().manual_seed(seed)
    flat = x.flatten(1).float()
    mem = [torch.zeros(len(x), w.shape[0]) for w in weights]
    counts = torch.zeros(len(x), weights[-1].shape[0])
    for _ in range(steps):
        s = encode_input(flat, f_max, dt, gen).float()
        for layer, w in enumerate(weights):
            mem[layer] += factors[layer] * s @ w.T
            s = (mem[layer] >= 1.0).float()
            mem[layer][s.bool()] = 0.0
        counts += s
    return (counts + 1e-6 * mem[-1].clamp(min=0)).argmax(1)


_CONSTRAINTS = {
    "preset": Options(sorted(PRESETS)),
    "f_max": Interval(float, 0, None, closed="neither"),
    "inc": Interval(float, 0, None),
    "dec": Interval(float, 0, None),
    "thresholds": SeqC(Interval(float, 0, None, closed="neither"), min_len=1),
    "alpha_scale": Interval(float, 0, None, closed="neither"),
    "threshold_scale": Interval(float, 0, None, closed="neither"),
    "steps": Interval(int, 1, None),
    "dt": Interval(float, 0, None, closed="neither"),
    "decay": Interval(float, 0, 1, closed="right"),
    "seed": Interval(int, 0, None),
}


@MECHANISMS.register("sleep", paper="Tadros, Krishnan, Ramyaa, Bazhenov 2020, ICLR (sleep phase, as coded)")
def sleep(
    model: nn.Module,
    data: Any = None,
    *,
    preset: str = "A",
    f_max: float | None = None,
    inc: float | None = None,
    dec: float | None = None,
    thresholds: Sequence[float] | None = None,
    alpha_scale: float | None = None,
    steps: int | None = None,
    threshold_scale: float = 1.0,
    dt: float = 0.001,
    decay: float = 0.999,
    seed: int = 0,
    x: torch.Tensor | None = None,
    progress: ProgressFn | None = None,
) -> nn.Module:
    """Return a copy of ``model`` whose weights went through one sleep phase.

    Parameters
    ----------
    model : nn.Module
        A trained bias-free ReLU MLP (:class:`neurorobust.models.MLP` or ``nn.Sequential``).
        It is not modified.
    data : Dataset, optional
        Its training images drive the sleep phase and the scale factors (or pass ``x``).
    preset : {'A', 'B', 'patches'}, default='A'
        Coded parameter set whose values fill every parameter left as ``None``: ``A`` for FGSM,
        noise, blur and Boundary; ``B`` for DeepFool, JSMA and C&W (MNIST, DESIGN §9).
    f_max : float, optional
        Maximum input firing rate in spikes/s (A: 39.04, B: 455.36).
    inc : float, optional
        STDP potentiation step for a pre spike followed by a post spike (A: 0.0640).
    dec : float, optional
        STDP depression step for a post spike without a pre spike (A: 0.0692).
    thresholds : sequence of float, optional
        Firing threshold beta_l of each weight layer's output units (A: 36.19, 23.36, 36.38).
    alpha_scale : float, optional
        Common multiplier of the data-based current factors (A: 2.19).
    steps : int, optional
        Sleep length: one training image per step in dataset order, cycling if there are
        fewer images (A: 27,105; B: 3,365).
    threshold_scale : float, default=1.0
        Multiplies every threshold (one knob for a parameter search; 1 is the coded set).
    dt : float, default=0.001
        Time step in seconds (input spike probability 2 dt f_max x).
    decay : float, default=0.999
        Membrane potential decay per step.
    seed : int, default=0
        Seeds the input spike draws.
    x : torch.Tensor, optional
        Training images (N, C, H, W) in [0, 1], instead of ``data``.
    progress : callable, optional
        Called with ``{"stage": "sleep", "step", "steps"}`` every 1,000 steps.

    Returns
    -------
    nn.Module
        The slept copy, with ``sleep_report`` (:class:`SleepReport`) attached.

    Examples
    --------
    >>> from neurorobust.models import create_model
    >>> net = create_model("sleep_mlp", widths=(20,))
    >>> slept = sleep(net, x=torch.rand(50, 1, 28, 28), preset="A", steps=100)
    >>> slept.sleep_report.steps
    100
    """
    validate_params(
        "sleep",
        _CONSTRAINTS,
        {k: v for k, v in locals().items() if k in _CONSTRAINTS and v is not None},
    )
    p = {**PRESETS[preset]}
    for name, value in (
        ("f_max", f_max),
        ("inc", inc),
        ("dec", dec),
        ("thresholds", thresholds),
        ("alpha_scale", alpha_scale),
        ("steps", steps),
    ):
        if value is not None:
            p[name] = value
    layers = linear_layers(model)
    betas = [float(b) * threshold_scale for b in p["thresholds"]]
    p["thresholds"] = tuple(betas)  # the report records the thresholds actually used
    if len(betas) != len(layers):
        raise InvalidParameterError(
            "thresholds", "sleep", f"one threshold per weight layer ({len(layers)} for this model)", betas
        )
    if x is None:
        if data is None or not hasattr(data, "x_train"):
            raise InvalidParameterError("data", "sleep", "a Dataset (or pass x=training images)", data)
        x = data.x_train
    if x.dim() < 2 or len(x) == 0 or not torch.isfinite(x).all():
        raise InvalidParameterError("x", "sleep", "a non-empty finite tensor of training images", "empty or NaN")
    if x.min() < 0 or x.max() > 1:
        raise InvalidParameterError("x", "sleep", "images in [0, 1]", f"values in [{x.min():.3g}, {x.max():.3g}]")
    x_flat = x.flatten(1).float()
    if x_flat.shape[1] != layers[0].in_features:
        raise InvalidParameterError(
            "x", "sleep", f"images with {layers[0].in_features} pixels for this model", tuple(x.shape[1:])
        )

    factors, lambdas = scale_factors(model, x)
    alphas = [f * float(p["alpha_scale"]) for f in factors]
    slept = copy.deepcopy(model)
    weights = [layer.weight.data for layer in linear_layers(slept)]
    before = [w.clone() for w in weights]
    report = _run_chain(weights, x_flat, alphas, betas, p, dt=dt, decay=decay, seed=seed, progress=progress)
    report.lambdas = lambdas
    report.weight_change = [float((w - b).abs().mean()) for w, b in zip(weights, before, strict=True)]
    slept.sleep_report = report  # type: ignore[assignment]
    slept.eval()
    return slept


@torch.no_grad()
def _run_chain(
    weights: list[torch.Tensor],
    x: torch.Tensor,
    alphas: list[float],
    betas: list[float],
    p: dict[str, Any],
    *,
    dt: float,
    decay: float,
    seed: int,
    progress: ProgressFn | None,
    chunk: int = 1000,
) -> SleepReport:
    steps, inc, dec = int(p["steps"]), float(p["inc"]), float(p["dec"])
    gen = torch.Generator().manual_seed(seed)
    mem = [torch.zeros(w.shape[0]) for w in weights]
    spikes = [0] * (len(weights) + 1)
    start = time.perf_counter()
    for c0 in range(0, steps, chunk):
        n = min(chunk, steps - c0)
        images = x[torch.arange(c0, c0 + n) % len(x)]
        inputs = encode_input(images, float(p["f_max"]), dt, gen)  # drawn a chunk at a time, in step order
        for t in range(n):
            pre = inputs[t]
            spikes[0] += int(pre.sum())
            for layer, w in enumerate(weights):
                active = pre.nonzero().squeeze(1)
                if active.numel():
                    mem[layer].mul_(decay).add_(w.index_select(1, active).sum(1), alpha=alphas[layer])
                else:
                    mem[layer].mul_(decay)
                post = mem[layer] >= betas[layer]
                if bool(post.any()):
                    stdp_update(w, pre, post, inc, dec)
                    mem[layer][post] = 0.0
                    spikes[layer + 1] += int(post.sum())
                pre = post
        if progress is not None:
            progress({"stage": "sleep", "step": c0 + n, "steps": steps})
    return SleepReport(
        params={k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()} | {"dt": dt, "decay": decay},
        alphas=alphas,
        lambdas=[],
        spikes=spikes,
        steps=steps,
        seconds=time.perf_counter() - start,
    )
